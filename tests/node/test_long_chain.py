"""A chain months long (issue 20): restarting from a checkpoint, catching up a day, flat memory.

The ledger holds a window of certificates and those that carry evidence; the
node stores a checkpoint every CHECKPOINT_EVERY slots. These tests drive the
node's own `ChainKeeper` and `apply_stored` over a real database.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from libp2p.peer.id import ID

from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.ledger import Ledger
from consensus.membership import Genesis
from consensus.messages import Precommit, Prevote, Value, sha256
from generation.recipe import Recipe
from node.chain import CHECKPOINT_EVERY, ChainKeeper, apply_stored
from node.metrics import NodeMetrics
from node.recipes import FALLBACK_RECIPE, RecipeQueue
from node.storage import Storage
from tests.consensus.conftest import keys, validators

SIGNERS = keys(12, "long")
BY_KEY = {s.public_key: s for s in SIGNERS}
GENESIS = Genesis(validators(SIGNERS), genesis_time=0.0, seed=b"long chain", cooldown_slots=2)
KEEP = 64
DAY = 1920  # 45 s slots


def certify(ledger: Ledger, slot: int, evidence: tuple[bytes, ...] = ()) -> Certificate:
    value = Value(sha256(b"m%d" % slot), b'{"slot": %d}' % slot, evidence)
    sigs = tuple(
        sorted(
            (d, Precommit(slot, 0, value.hash).signed_by(BY_KEY[d], ledger.chain_id).signature)
            for d in ledger.directors(slot)[:4]
        )
    )
    return Certificate(slot, 0, value, sigs)


def equivocation(ledger: Ledger, slot: int, seat: int) -> bytes:
    key = BY_KEY[ledger.directors(slot)[seat]]
    return Evidence.of(
        Prevote(slot, 0, sha256(b"a")).signed_by(key, ledger.chain_id),
        Prevote(slot, 0, None).signed_by(key, ledger.chain_id),
    ).encode()


def keeper(path: Path) -> ChainKeeper:
    ledger = Ledger(GENESIS, keep_slots=KEEP)
    storage = Storage(path, GENESIS.chain_id)
    recipes = RecipeQueue(ledger, Recipe.parse(FALLBACK_RECIPE), limit=4)
    return ChainKeeper(ledger, storage, recipes, NodeMetrics(), lambda: 100.0, catch_up_batch=64)


class StoredPeer:
    """A catch-up source: one peer serving another node's database, as `CertificateSync` does."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.asked: list[int] = []

    def connected_peers(self) -> list[ID]:
        return [ID(b"peer-one")]

    async def fetch(self, peer: ID, start: int, count: int) -> Sequence[bytes]:
        self.asked.append(start)
        return self.storage.certificate_data(start, count)

    def penalize(self, peer: ID, reason: str) -> None:
        raise AssertionError(f"an honest peer was penalized: {reason}")


EVIDENCE_AT = {100: 0, 101: 3, 450: 1}  # certificate slot -> seat of slot - 1 that equivocated


async def run_chain(chain: ChainKeeper, first: int, end: int) -> None:
    """Certify slots [first, end) through the keeper, as agreement would (deterministic signatures:
    two keepers running the same range hold the same certificates)."""
    for slot in range(first, end):
        evidence = ()
        if slot in EVIDENCE_AT:
            evidence = (equivocation(chain.ledger, slot - 1, EVIDENCE_AT[slot]),)
        assert await chain.commit(certify(chain.ledger, slot, evidence), "agreement")


@pytest.mark.trio
async def test_a_restart_from_a_checkpoint_elects_the_directors_a_replay_from_genesis_elects(
    tmp_path: Path,
) -> None:
    chain = keeper(tmp_path / "node.sqlite")
    await run_chain(chain, 0, 700)
    storage = chain._storage  # noqa: SLF001 - the keeper's own database, reopened below as a restart would
    checkpoint = storage.latest_checkpoint()
    assert checkpoint is not None and checkpoint.slot == 640  # every CHECKPOINT_EVERY slots
    assert len(checkpoint.evidence) == len(EVIDENCE_AT)

    restarted = Ledger(GENESIS, keep_slots=KEEP)
    applied = apply_stored(restarted, storage)
    assert applied == KEEP + (699 - 640)  # the window before the checkpoint and the slots after it
    assert applied < CHECKPOINT_EVERY + KEEP  # however long the chain: what a restart reads is bounded

    replayed = Ledger(GENESIS, keep_slots=KEEP)
    for cert in storage.certificates(0):
        replayed.apply(cert)
    assert restarted.head == replayed.head == 699
    assert len(replayed.barred(1000)) == 3
    assert [restarted.directors(s) for s in range(1200)] == [replayed.directors(s) for s in range(1200)]
    assert [restarted.recipe(s) for s in range(640, 701)] == [replayed.recipe(s) for s in range(640, 701)]

    # a checkpoint the node cannot use (damaged on disk) means a replay from genesis, not a refusal
    storage._db.execute("UPDATE checkpoints SET hash = ?", (b"\x00" * 32,))  # noqa: SLF001
    assert storage.latest_checkpoint() is None
    fallback = Ledger(GENESIS, keep_slots=KEEP)
    assert apply_stored(fallback, storage) == 700
    assert [fallback.directors(s) for s in range(1200)] == [replayed.directors(s) for s in range(1200)]


@pytest.mark.trio
async def test_a_node_absent_for_a_day_catches_up_with_a_bounded_ledger(tmp_path: Path) -> None:
    online = keeper(tmp_path / "online.sqlite")
    absent = keeper(tmp_path / "absent.sqlite")
    await run_chain(online, 0, 200)
    await run_chain(absent, 0, 200)  # the absent node saw the first slots, then was down for a day
    await run_chain(online, 200, 200 + DAY)

    # back: the newest certificate arrives by gossip first and moves the head past the gap
    newest = online.ledger.certificate(200 + DAY - 1)
    assert newest is not None and await absent.commit(newest, "gossip")
    peer = StoredPeer(online._storage)  # noqa: SLF001
    assert await absent.catch_up(peer) == DAY  # one call: the whole day (and the newest, held), in batches
    assert len(peer.asked) == DAY // 64 + 1 and peer.asked[:2] == [200, 264]
    assert len(absent.ledger.recent) <= 2 * KEEP  # memory bounded throughout
    assert absent.synced == 200 + DAY - 1
    assert await absent.catch_up(peer) == 0 and peer.asked[-1] == 200 + DAY  # nothing more to ask for
    assert absent.ledger.head == 200 + DAY - 1
    assert absent.ledger.barred(3000) == online.ledger.barred(3000) and len(online.ledger.barred(3000)) == 3
    assert absent.ledger.directors(3000) == online.ledger.directors(3000)
    assert absent._storage.last_certified_slot() == online.ledger.head  # noqa: SLF001
    assert len(absent._decided) < 2 * KEEP  # noqa: SLF001 - no waiter per caught-up slot
