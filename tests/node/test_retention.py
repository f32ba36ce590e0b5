"""Retention: old and excess media deleted, the live window never, old journal rows dropped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from consensus.certificate import Certificate
from consensus.ledger import Ledger
from consensus.messages import Value
from network.media.store import MediaStore
from node.metrics import NodeMetrics
from node.retention import GB, Retention, choose
from node.settings import StorageSection
from node.storage import Storage
from tests.node.test_components import GENESIS, certify

HOUR = 3600.0


def test_old_files_go_then_the_oldest_past_the_cap_and_protected_ones_never() -> None:
    now = 100 * HOUR
    files = [
        (b"old", 10, now - 50 * HOUR),
        (b"old-but-playing", 10, now - 60 * HOUR),
        (b"a", 40, now - 3 * HOUR),
        (b"b", 40, now - 2 * HOUR),
        (b"c", 40, now - 1 * HOUR),
    ]
    pruned = choose(files, {b"old-but-playing"}, now, keep_sec=48 * HOUR, max_bytes=100)
    # "old" is too old; then 130 bytes remain against 100: the oldest unprotected ("a") goes
    assert pruned.removed == [b"old", b"a"] and pruned.removed_bytes == 50 and pruned.kept_bytes == 90
    # a cap the protected files alone exceed: everything else goes, they stay
    pruned = choose(files, {b"b", b"c"}, now, keep_sec=1000 * HOUR, max_bytes=10)
    assert set(pruned.removed) == {b"old", b"old-but-playing", b"a"} and pruned.kept_bytes == 80


@pytest.mark.trio
async def test_the_node_prunes_its_store_and_database_but_not_the_live_window(tmp_path: Path) -> None:
    ledger = Ledger(GENESIS)
    storage = Storage(tmp_path / "node.sqlite", GENESIS.chain_id)
    store = MediaStore(tmp_path / "media")
    now = 1_000 * HOUR
    cids = {}
    for slot in range(10):
        cid = store.add_bytes(b"slot %d " % slot + b"x" * 1000)
        os.utime(store.path(cid), (now - (10 - slot) * HOUR, now - (10 - slot) * HOUR))  # slot 0: 10 h old
        storage.put_media(cid, slot, 1007, "produced")
        ledger.apply(certify(ledger, slot, Value(cid)))
        storage.record(slot, 0, "prevote", cid)
        cids[slot] = cid
    (store.partial_dir / "abandoned").write_bytes(b"y" * 500)
    os.utime(store.partial_dir / "abandoned", (now - 2 * HOUR, now - 2 * HOUR))
    metrics = NodeMetrics()
    settings = StorageSection(media_keep_hours=4.5, media_max_gb=3000 / GB, journal_keep_slots=100)
    retention = Retention(
        settings, store, storage, ledger, metrics, lambda: 105, lambda: now, protected_slots=2
    )  # fmt: skip
    # slots 0-5 are over 4.5 h old; of 6-9, the cap of 3,000 bytes keeps the newest two
    pruned = await retention.prune_once()
    assert sorted(pruned.removed) == sorted(cids[s] for s in range(8))
    assert [s for s in range(10) if store.has(cids[s])] == [8, 9]
    assert storage.media_ids() == {cids[8], cids[9]} and not (store.partial_dir / "abandoned").exists()
    assert storage.votes(4) == []  # slot 105 - 100 = 5: slots before it lose their journal
    assert storage.votes(7) != []
    sample = metrics.registry.get_sample_value
    assert sample("icn_media_pruned_files_total") == 8
    assert sample("icn_media_pruned_bytes_total") == 8 * 1007 + 500
    assert sample("icn_media_bytes") == 2 * 1007 and (sample("icn_db_bytes") or 0) > 0
    assert (sample("icn_db_rows_pruned_total") or 0) >= 5

    # the live window: at slot 9 with two slots protected, 7-9 stay however old and large they are
    retention = Retention(
        StorageSection(media_keep_hours=0.001, media_max_gb=1 / GB), store, storage, ledger, metrics,
        lambda: 9, lambda: now, protected_slots=2,
    )  # fmt: skip
    assert (await retention.prune_once()).removed == []
    assert store.has(cids[8]) and store.has(cids[9])


@pytest.mark.trio
async def test_old_certificates_go_but_not_evidence_nor_what_a_restart_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """certificates_keep_slots: a restart afterwards still elects what a replay from genesis elects."""
    from node.chain import apply_stored
    from tests.node.test_long_chain import EVIDENCE_AT, GENESIS, KEEP, keeper, run_chain

    chain = keeper(tmp_path / "node.sqlite")
    await run_chain(chain, 0, 1200)  # a checkpoint at 1152 (every 128 slots)
    storage = chain._storage  # noqa: SLF001
    replayed = Ledger(GENESIS, keep_slots=KEEP)
    replayed_certs = list(storage.certificates(0))
    for cert in replayed_certs:
        replayed.apply(cert)
    settings = StorageSection(certificates_keep_slots=1024)
    retention = Retention(
        settings, MediaStore(tmp_path / "media"), storage, chain.ledger, NodeMetrics(), lambda: 1400,
        lambda: 0.0, protected_slots=2,
    )  # fmt: skip
    await retention.prune_once()
    held = {cert.slot for cert in storage.certificates(0)}
    # older than 1400 - 1024 = 376 goes, but for the certificates that carry evidence
    assert held == set(EVIDENCE_AT) | set(range(376, 1200))
    # the next pass decodes none of the kept evidence-carrying rows again (constant work a pass) ...
    decoded: list[int] = []
    decode = Certificate.decode
    monkeypatch.setattr(Certificate, "decode", lambda data: decoded.append(1) or decode(data))
    assert storage.prune_certificates(376) == 0 and decoded == []
    # ... but a certificate stored late below what was read (an old gap filled) is read, and goes
    late = next(c for c in replayed_certs if c.slot not in EVIDENCE_AT and c.slot < 376)
    storage.put_certificate(late, received_at=0.0)
    assert storage.prune_certificates(376) == 1
    assert len(decoded) == 3  # slot 0, then the kept evidence at 100 and 101 once more
    monkeypatch.undo()
    restarted = Ledger(GENESIS, keep_slots=KEEP)
    apply_stored(restarted, storage)
    assert [restarted.directors(s) for s in range(1500)] == [replayed.directors(s) for s in range(1500)]

    # a short horizon is held back by the checkpoint's window: a restart must find it
    retention = Retention(
        settings, MediaStore(tmp_path / "media"), storage, chain.ledger, NodeMetrics(), lambda: 9000,
        lambda: 0.0, protected_slots=2,
    )  # fmt: skip
    await retention.prune_once()
    assert {cert.slot for cert in storage.certificates(0)} == set(EVIDENCE_AT) | set(
        range(1152 - KEEP + 1, 1200)
    )
    restarted = Ledger(GENESIS, keep_slots=KEEP)
    apply_stored(restarted, storage)
    assert restarted.head == 1199 and restarted.barred(2000) == replayed.barred(2000)
