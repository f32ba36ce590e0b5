import dataclasses

import pytest

from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.ledger import Checkpoint, Ledger, LedgerError
from consensus.membership import Genesis, max_faulty, quorum
from consensus.messages import DecodeError, Precommit, Prevote, Value, sha256
from tests.consensus.conftest import keys, validators

SIGNERS = keys(12)
BY_KEY = {s.public_key: s for s in SIGNERS}
# Known answers for genesis() below (12 validators in 4 regions, seed b"g"): changing them breaks
# agreement between nodes of different releases, so a change here must be deliberate. Changed
# deliberately in issue 21 (step 3): the genesis gained `recipe_lag`, so its chain id, which seeds the
# election, changed; the draw itself did not.
KNOWN_SLOT0 = [1, 11, 5, 2, 0]
KNOWN_SLOT1 = [6, 9, 3, 1, 11]


def genesis(**kw) -> Genesis:
    return Genesis(validators(SIGNERS), genesis_time=0.0, seed=b"g", **kw)


def certify(ledger: Ledger, slot: int, value: Value) -> Certificate:
    directors = ledger.directors(slot)
    sigs = tuple(
        sorted(
            (d, Precommit(slot, 0, value.hash).signed_by(BY_KEY[d], ledger.chain_id).signature)
            for d in directors[:4]
        )
    )
    return Certificate(slot, 0, value, sigs)


def test_same_chain_same_directors_and_recipes() -> None:
    a, b = Ledger(genesis()), Ledger(genesis())
    for slot in range(6):  # the certificate of slot s fixes the recipe of slot s + recipe_lag (2)
        cert = certify(a, slot, Value(sha256(b"m%d" % slot), b'{"slot": %d}' % (slot + 2)))
        a.apply(cert)
        b.apply(cert)
    assert [a.directors(s) for s in range(10)] == [b.directors(s) for s in range(10)]
    assert [a.recipe(s) for s in range(2, 8)] == [b'{"slot": %d}' % s for s in range(2, 8)]
    assert a.recipe(0) is None and a.recipe(1) is None and a.recipe(100) is None


@pytest.mark.parametrize("lag", [1, 2, 5])
def test_a_recipe_is_settled_once_the_certificate_that_fixes_it_is_held(lag: int) -> None:
    """Issue 21, step 3: slot s plays what the certificate of s - recipe_lag fixed. A director may make
    slot s as soon as that certificate is here; slots before any certificate can fix them play the
    fallback from genesis on."""
    ledger = Ledger(genesis(recipe_lag=lag))
    assert [ledger.recipe_settled(s) for s in range(lag + 1)] == [True] * lag + [False]
    assert all(ledger.recipe(s) is None for s in range(lag))  # the fallback, known from the start
    ledger.apply(certify(ledger, 0, Value(sha256(b"m0"), b'{"for": "lag"}')))
    assert ledger.recipe_settled(lag) and ledger.recipe(lag) == b'{"for": "lag"}'
    assert ledger.recipe(lag - 1) is None and ledger.recipe(lag + 1) is None
    assert not ledger.recipe_settled(lag + 1)  # slot 1's certificate is not here yet
    # a certificate without a recipe settles its slot on the fallback
    ledger.apply(certify(ledger, 1, Value(sha256(b"m1"), None)))
    assert ledger.recipe_settled(lag + 1) and ledger.recipe(lag + 1) is None


def test_the_recipe_lag_is_part_of_the_chain_id() -> None:
    assert Ledger(genesis(recipe_lag=1)).chain_id != Ledger(genesis(recipe_lag=2)).chain_id


def test_a_partition_of_any_length_leaves_one_director_set_per_slot() -> None:
    """Issue 23, item 6: each side of a long partition certifies slots the other never sees.

    With directors drawn from the newest certificate, the two sides elected
    different directors from then on and could each certify one slot (a fork).
    Elections no longer read certificates (only evidence), so both sides elect
    the same directors for every slot, and one slot's quorums always intersect.
    """
    a, b = Ledger(genesis()), Ledger(genesis())
    for slot in range(3):  # before the partition: both sides hold every certificate
        cert = certify(a, slot, Value(sha256(b"m%d" % slot)))
        a.apply(cert)
        b.apply(cert)
    for slot in (3, 4, 6, 9):  # slots only side a certified
        a.apply(certify(a, slot, Value(sha256(b"a%d" % slot), b'{"side": "a"}')))
    for slot in (5, 7, 8):  # slots only side b certified
        b.apply(certify(b, slot, Value(sha256(b"b%d" % slot), b'{"side": "b"}')))
    assert a.recent.keys() != b.recent.keys()
    assert [a.directors(s) for s in range(60)] == [b.directors(s) for s in range(60)]


def test_views_that_differ_by_barred_directors_keep_intersecting_quorums() -> None:
    """Evidence one side saw and the other did not: the only way two views' directors differ."""
    seen, unseen = Ledger(genesis()), Ledger(genesis())
    culprit = seen.directors(1)[0]
    key = BY_KEY[culprit]
    ev = Evidence.of(
        Prevote(1, 0, sha256(b"a")).signed_by(key, seen.chain_id),
        Prevote(1, 0, None).signed_by(key, seen.chain_id),
    )
    seen.apply(certify(seen, 2, Value(sha256(b"m2"), None, (ev.encode(),))))
    n = seen.genesis.directors_per_slot
    q, f = quorum(n), max_faulty(n)
    differing_slots = 0
    for slot in range(4, 200):
        d_seen, d_unseen = set(seen.directors(slot)), set(unseen.directors(slot))
        k = len(d_seen | d_unseen) - n  # seats filled differently
        assert d_unseen - d_seen <= {culprit}  # only the proven equivocator's seat moves
        # two quorums, one per view, share 2q - n - k seats; at most f - k of them are faulty
        assert 2 * q - n - k > f - k
        differing_slots += k
    assert differing_slots > 0  # the culprit was drawn for some of these slots


def test_rejects_bad_and_conflicting_certificates() -> None:
    ledger = Ledger(genesis())
    good = certify(ledger, 3, Value(sha256(b"x")))
    with pytest.raises(LedgerError, match="3 precommits, quorum is 4"):
        ledger.apply(Certificate(3, 0, good.value, good.signatures[:3]))
    ledger.apply(good)
    ledger.apply(good)  # the same certificate again is fine
    with pytest.raises(LedgerError, match="conflicting certificates for slot 3"):
        ledger.apply(certify(ledger, 3, Value(sha256(b"y"))))


def test_committed_evidence_bars_the_signer_from_later_elections() -> None:
    ledger = Ledger(genesis())
    culprit = ledger.directors(1)[0]
    key = BY_KEY[culprit]
    ev = Evidence.of(
        Prevote(1, 0, sha256(b"a")).signed_by(key, ledger.chain_id),
        Prevote(1, 0, None).signed_by(key, ledger.chain_id),
    )
    ledger.apply(certify(ledger, 1, Value(sha256(b"m1"))))
    ledger.apply(certify(ledger, 2, Value(sha256(b"m2"), None, (ev.encode(),))))
    assert culprit in ledger.barred(4)
    assert culprit not in ledger.barred(3)  # not before the evidence lag has passed
    for slot in range(4, 60):
        assert culprit not in ledger.directors(slot)


def test_evidence_against_a_non_director_is_ignored() -> None:
    ledger = Ledger(genesis())
    outsider = next(s for s in SIGNERS if s.public_key not in ledger.directors(1))
    ev = Evidence.of(
        Prevote(1, 0, sha256(b"a")).signed_by(outsider, ledger.chain_id),
        Prevote(1, 0, None).signed_by(outsider, ledger.chain_id),
    )
    ledger.apply(certify(ledger, 2, Value(sha256(b"m2"), None, (ev.encode(),))))
    assert outsider.public_key not in ledger.barred(10)


def test_cooldown_passes_over_recent_draws() -> None:
    ledger = Ledger(genesis(cooldown_slots=1))
    assert not set(ledger.drawn(1)) & set(ledger.directors(2))


def test_cooldown_is_the_same_whatever_was_certified() -> None:
    bare, full = (
        Ledger(genesis(cooldown_slots=2, evidence_lag=1)),
        Ledger(genesis(cooldown_slots=2, evidence_lag=1)),
    )
    for slot in range(5):
        full.apply(certify(full, slot, Value(sha256(b"m%d" % slot))))
    assert [bare.directors(s) for s in range(12)] == [full.directors(s) for s in range(12)]


def test_known_answer_directors_pin_the_election() -> None:
    """Every node, and every release, must elect the same directors from the same chain."""
    ledger = Ledger(genesis())
    index = {s.public_key: i for i, s in enumerate(SIGNERS)}
    assert [index[d] for d in ledger.directors(0)] == KNOWN_SLOT0
    assert [index[d] for d in ledger.directors(1)] == KNOWN_SLOT1


def test_genesis_settings_reach_the_election() -> None:
    ledger = Ledger(genesis(directors_per_slot=3, max_directors_per_region=1))
    for slot in range(10):
        chosen = ledger.directors(slot)
        assert len(chosen) == 3
        regions = [v.region for v in ledger.genesis.validators if v.public_key in chosen]
        assert len(set(regions)) == 3


def test_new_evidence_refreshes_the_elections_it_changes() -> None:
    ledger = Ledger(genesis())
    culprit = ledger.directors(1)[0]
    later = next(s for s in range(4, 200) if culprit in ledger.directors(s))  # cached with the culprit
    key = BY_KEY[culprit]
    ev = Evidence.of(
        Prevote(1, 0, sha256(b"a")).signed_by(key, ledger.chain_id),
        Prevote(1, 0, None).signed_by(key, ledger.chain_id),
    )
    ledger.apply(certify(ledger, 2, Value(sha256(b"m2"), None, (ev.encode(),))))
    assert culprit not in ledger.directors(later)


def test_barred_reads_every_old_certificate_and_skips_bad_evidence() -> None:
    ledger = Ledger(genesis())
    culprit = ledger.directors(2)[1]
    key = BY_KEY[culprit]
    ev = Evidence.of(
        Prevote(2, 0, sha256(b"a")).signed_by(key, ledger.chain_id),
        Prevote(2, 0, None).signed_by(key, ledger.chain_id),
    )
    ledger.apply(certify(ledger, 9, Value(sha256(b"m9"))))  # applied first, beyond the horizon below
    ledger.apply(certify(ledger, 2, Value(sha256(b"m2"), None, (b"garbage", ev.encode()))))
    assert culprit in ledger.barred(5)


def test_each_evidence_certificate_is_verified_once_until_older_evidence_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """barred() runs at every election: its work must not grow with each call (issue 20), so it decodes
    and verifies an evidence certificate once; evidence applied at or before that certificate's slot
    (catch-up filling an old gap) may change what it bars, and makes it read again."""
    import consensus.ledger as ledger_module

    ledger = Ledger(genesis())
    culprit, evidence = _equivocation(ledger, 30, 0)
    ledger.apply(certify(ledger, 31, Value(sha256(b"m31"), None, (evidence,))))
    reads: list[int] = []
    decode = ledger_module.decode_relevant
    monkeypatch.setattr(
        ledger_module, "decode_relevant", lambda data, *a: reads.append(1) or decode(data, *a)
    )
    assert all(culprit in ledger.barred(s) for s in range(40, 60)) and len(reads) == 1
    other, older = _equivocation(ledger, 10, 1)
    ledger.apply(certify(ledger, 11, Value(sha256(b"m11"), None, (older,))))
    assert {culprit, other} <= ledger.barred(60) and len(reads) == 3  # both read (again)
    assert ledger.barred(61) == ledger.barred(60) and len(reads) == 3


def _equivocation(ledger: Ledger, slot: int, seat: int) -> tuple[bytes, bytes]:
    """A director of `slot` signing two prevotes there: (its key, the evidence)."""
    culprit = ledger.directors(slot)[seat]
    key = BY_KEY[culprit]
    ev = Evidence.of(
        Prevote(slot, 0, sha256(b"a")).signed_by(key, ledger.chain_id),
        Prevote(slot, 0, None).signed_by(key, ledger.chain_id),
    )
    return culprit, ev.encode()


def _long_chain(ledger: Ledger, slots: int, evidence_at: dict[int, int]) -> None:
    """Certify slots 0..slots-1, the ones in `evidence_at` carrying evidence against a director of
    the slot before them (its seat the value)."""
    for slot in range(slots):
        evidence = ()
        if slot in evidence_at:
            evidence = (_equivocation(ledger, slot - 1, evidence_at[slot])[1],)
        ledger.apply(certify(ledger, slot, Value(sha256(b"m%d" % slot), b'{"s": %d}' % slot, evidence)))


def test_memory_holds_a_window_and_the_evidence_whatever_the_chain_length() -> None:
    """Issue 20: a month of slots must not grow the ledger; elections read only evidence certificates."""
    ledger = Ledger(genesis(), keep_slots=16)
    _long_chain(ledger, 200, {30: 0, 120: 1})
    assert ledger.head == 199 and ledger.floor == 184
    assert len(ledger.recent) <= 2 * 16 and min(ledger.recent) >= 184 - 16
    assert ledger.certificate(199) is not None and ledger.certificate(100) is None
    assert ledger.recipe(199) == b'{"s": 197}'  # the window holds what recipe() reads
    assert sorted(ledger._with_evidence) == [30, 120]  # noqa: SLF001 - the test's own module's state
    # an old certificate (catch-up filling a gap below the window) is verified but not held
    gap = Ledger(genesis(), keep_slots=16)
    _long_chain(gap, 40, {})
    old = certify(gap, 60, Value(sha256(b"old")))
    late = Ledger(genesis(), keep_slots=16)
    late.apply(certify(late, 100, Value(sha256(b"new"))))
    late.apply(old)
    assert late.certificate(60) is None and late.head == 100
    with pytest.raises(LedgerError, match="rejected"):
        late.apply(Certificate(61, 0, old.value, old.signatures))


def test_a_checkpoint_restores_the_elections_a_replay_from_genesis_makes() -> None:
    """Issue 20: restart from a checkpoint plus the window after it, and elect the same directors."""
    replayed = Ledger(genesis(), keep_slots=16)
    _long_chain(replayed, 300, {40: 0, 41: 2, 210: 1})
    checkpoint = replayed.checkpoint()
    assert checkpoint is not None and checkpoint.slot == 299
    assert Checkpoint.decode(checkpoint.encode()) == checkpoint
    barred = replayed.barred(400)
    assert len(barred) == 3  # three different directors were proven to equivocate

    restored = Ledger(genesis(), keep_slots=16)
    restored.load(Checkpoint.decode(checkpoint.encode()))
    assert restored.barred(400) == barred
    for slot in range(checkpoint.slot - 15, checkpoint.slot + 1):
        cert = replayed.certificate(slot)
        assert cert is not None
        restored.apply(cert)
    assert restored.certificate(checkpoint.slot).hash == checkpoint.head  # type: ignore[union-attr]
    assert [restored.directors(s) for s in range(0, 600)] == [replayed.directors(s) for s in range(0, 600)]
    assert restored.recipe(300) == replayed.recipe(300)
    assert restored.checkpoint() == checkpoint


def test_a_damaged_or_foreign_checkpoint_is_refused_and_leaves_the_ledger_empty() -> None:
    source = Ledger(genesis(), keep_slots=16)
    _long_chain(source, 60, {20: 0, 50: 1})
    good = source.checkpoint()
    assert good is not None
    first, second = good.evidence
    forged = Certificate.decode(second)
    forged = Certificate(forged.slot, forged.round, forged.value, forged.signatures[:3])
    cases = {
        "out of order or past": dataclasses.replace(good, evidence=(second, first)),
        "past its slot": dataclasses.replace(good, slot=30),
        "quorum": dataclasses.replace(good, evidence=(first, forged.encode())),
        "checkpoint evidence certificate": dataclasses.replace(good, evidence=(b"\xff" * 40,)),
        "another chain": dataclasses.replace(good, chain_id=sha256(b"other")),
        "carries no evidence": dataclasses.replace(good, evidence=(first, source.recent[59].encode())),
    }
    for reason, bad in cases.items():
        ledger = Ledger(genesis(), keep_slots=16)
        with pytest.raises(LedgerError, match=reason):
            ledger.load(bad)
        assert ledger.barred(1000) == set() and ledger.head is None  # nothing half-loaded
    for junk in (
        b"",
        b"\x80",
        b"\xa0",
        good.encode()[:-1],
        good.encode().replace(b"icn-checkpoint", b"icn-checkpoinT"),
    ):
        with pytest.raises(DecodeError):
            Checkpoint.decode(junk)
