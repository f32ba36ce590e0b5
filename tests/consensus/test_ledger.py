import pytest

from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.ledger import Ledger, LedgerError, beacon_of
from consensus.membership import Genesis
from consensus.messages import Precommit, Prevote, Value, sha256
from tests.consensus.conftest import keys, validators

SIGNERS = keys(12)
BY_KEY = {s.public_key: s for s in SIGNERS}
# Known answers for genesis() below (12 validators in 4 regions, seed b"g"): changing them breaks
# agreement between nodes of different releases, so a change here must be deliberate.
KNOWN_SLOT0 = [8, 10, 11, 0, 1]
KNOWN_SLOT1 = [6, 9, 10, 0, 7]
KNOWN_BEACON = "b74f92af41578e73"


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


def test_same_chain_same_directors_and_beacons() -> None:
    a, b = Ledger(genesis()), Ledger(genesis())
    for slot in range(6):
        cert = certify(a, slot, Value(sha256(b"m%d" % slot), b'{"slot": %d}' % (slot + 1)))
        a.apply(cert)
        b.apply(cert)
    assert [a.directors(s) for s in range(10)] == [b.directors(s) for s in range(10)]
    assert a.beacon(7) == beacon_of(a.certificates[5])  # lag 2: slot 7 draws from slot 5's certificate
    assert a.beacon(1) == a.beacon(0)  # before any certificate counts: the genesis beacon
    assert a.recipe(4) == b'{"slot": 4}' and a.recipe(100) is None


def test_two_quorums_for_one_decision_give_the_same_beacon_and_directors() -> None:
    a, b = Ledger(genesis()), Ledger(genesis())
    value = Value(sha256(b"m"))
    directors = a.directors(3)
    sig = {d: Precommit(3, 0, value.hash).signed_by(BY_KEY[d], a.chain_id).signature for d in directors}
    first = Certificate(3, 0, value, tuple(sorted((d, sig[d]) for d in directors[:4])))
    other = Certificate(3, 0, value, tuple(sorted((d, sig[d]) for d in directors[1:5])))
    assert first.hash != other.hash  # different precommit quorums: different certificates
    a.apply(first)
    b.apply(other)
    assert a.beacon(5) == b.beacon(5) and a.directors(5) == b.directors(5)


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
    assert culprit not in ledger.barred(3)  # not before the beacon lag has passed
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


def test_cooldown_passes_over_recent_directors() -> None:
    ledger = Ledger(genesis(cooldown_slots=1))
    ledger.apply(certify(ledger, 0, Value(sha256(b"m0"))))
    recent = set(ledger.directors(0))
    assert not recent & set(ledger.directors(2))


def test_known_answer_directors_pin_the_election() -> None:
    """Every node, and every release, must elect the same directors from the same chain."""
    ledger = Ledger(genesis())
    index = {s.public_key: i for i, s in enumerate(SIGNERS)}
    assert [index[d] for d in ledger.directors(0)] == KNOWN_SLOT0
    assert [index[d] for d in ledger.directors(1)] == KNOWN_SLOT1
    assert ledger.beacon(0).hex()[:16] == KNOWN_BEACON


def test_genesis_settings_reach_the_election() -> None:
    ledger = Ledger(genesis(directors_per_slot=3, max_directors_per_region=1))
    for slot in range(10):
        chosen = ledger.directors(slot)
        assert len(chosen) == 3
        regions = [v.region for v in ledger.genesis.validators if v.public_key in chosen]
        assert len(set(regions)) == 3


def test_cooldown_takes_the_newest_certified_slots() -> None:
    ledger = Ledger(genesis(cooldown_slots=1, beacon_lag=1))
    ledger.apply(certify(ledger, 0, Value(sha256(b"m0"))))
    ledger.apply(certify(ledger, 1, Value(sha256(b"m1"))))
    assert not set(ledger.directors(1)) & set(ledger.directors(2))


def test_a_new_certificate_refreshes_elections_it_changes() -> None:
    ledger = Ledger(genesis())
    before = ledger.directors(5)  # cached with the genesis beacon
    ledger.apply(certify(ledger, 3, Value(sha256(b"m3"))))
    assert ledger.beacon(5) == beacon_of(ledger.certificates[3])
    fresh = Ledger(genesis())
    fresh.apply(certify(fresh, 3, Value(sha256(b"m3"))))
    assert ledger.directors(5) == fresh.directors(5)
    assert before != ledger.directors(5) or before == fresh.directors(5)


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
