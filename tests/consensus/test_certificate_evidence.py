import pytest

from consensus.certificate import Certificate
from consensus.evidence import EquivocationDetector, Evidence
from consensus.messages import Announce, DecodeError, Precommit, Prevote, Value, embedding_to_bytes, sha256
from tests.consensus.conftest import keys

CHAIN = b"chain"
K = keys(5, "c")
D = [k.public_key for k in K]
VALUE = Value(sha256(b"media"), b'{"r": 1}')


def cert(signers, value=VALUE, round_=2, slot=9) -> Certificate:
    sigs = tuple(
        sorted(
            (K[i].public_key, Precommit(slot, round_, value.hash).signed_by(K[i], CHAIN).signature)
            for i in signers
        )
    )
    return Certificate(slot, round_, value, sigs)


def test_valid_certificate_round_trips() -> None:
    c = cert([0, 1, 2, 4])
    assert c.verify(D, CHAIN) is None
    back = Certificate.decode(c.encode())
    assert back == c and back.hash == c.hash


def test_quorum_is_needed() -> None:
    assert cert([0, 1, 2]).verify(D, CHAIN) == "3 precommits, quorum is 4"
    assert cert([0, 1, 2, 3, 4]).verify(D, CHAIN) is None


def test_other_defects() -> None:
    good = cert([0, 1, 2, 3])
    outsider = keys(1, "x")[0]
    forged = Certificate(9, 2, VALUE, good.signatures[:3] + ((outsider.public_key, good.signatures[3][1]),))
    assert forged.verify(D, CHAIN) == "signer is not a director of the slot"
    dup = Certificate(9, 2, VALUE, good.signatures[:3] + (good.signatures[0],))
    assert dup.verify(D, CHAIN) == "duplicate signer"
    wrong_value = Certificate(9, 2, Value(sha256(b"other")), good.signatures)
    assert wrong_value.verify(D, CHAIN) == "bad precommit signature"
    wrong_round = Certificate(9, 3, VALUE, good.signatures)
    assert wrong_round.verify(D, CHAIN) == "bad precommit signature"
    assert good.verify(D, b"other chain") == "bad precommit signature"


def test_certificate_decoding_is_strict() -> None:
    data = cert([0, 1, 2, 3]).encode()
    with pytest.raises(DecodeError):
        Certificate.decode(data[:-1])
    with pytest.raises(DecodeError):
        Certificate.decode(b"\x80")


def test_evidence_detection_and_check() -> None:
    det = EquivocationDetector()
    a = Prevote(9, 1, sha256(b"a")).signed_by(K[2], CHAIN)
    b = Prevote(9, 1, None).signed_by(K[2], CHAIN)
    other_round = Prevote(9, 2, None).signed_by(K[2], CHAIN)
    assert det.observe(a) is None
    assert det.observe(a) is None  # the same message again is not an equivocation
    assert det.observe(other_round) is None
    ev = det.observe(b)
    assert ev is not None and ev.signer == D[2] and ev.slot == 9
    assert ev.check(CHAIN) is None
    assert det.observe(Prevote(9, 1, sha256(b"c")).signed_by(K[2], CHAIN)) is None  # reported once per key
    assert Evidence.decode(ev.encode()) == ev
    assert Evidence.of(b, a) == ev  # order-independent


def test_announce_equivocation() -> None:
    det = EquivocationDetector()
    e = embedding_to_bytes([1.0])
    det.observe(Announce(9, sha256(b"r"), e, e, True, sha256(b"x")).signed_by(K[0], CHAIN))
    assert det.observe(Announce(9, sha256(b"r"), e, e, True, sha256(b"y")).signed_by(K[0], CHAIN)) is not None


def test_fake_evidence_is_refused() -> None:
    a = Prevote(9, 1, sha256(b"a")).signed_by(K[2], CHAIN)
    assert (
        Evidence(a, Prevote(9, 1, sha256(b"a")).signed_by(K[2], CHAIN)).check(CHAIN)
        == "messages do not differ"
    )
    assert (
        Evidence.of(a, Prevote(9, 2, None).signed_by(K[2], CHAIN))
        .check(CHAIN)
        .startswith("messages are not for")
    )
    assert (
        Evidence.of(a, Prevote(9, 1, None).signed_by(K[3], CHAIN))
        .check(CHAIN)
        .startswith("messages are not for")
    )
    forged = Prevote(9, 1, None, signer=D[2], signature=a.signature)
    assert Evidence.of(a, forged).check(CHAIN) == "bad signature"
    assert (
        Evidence.of(a, Precommit(9, 1, None).signed_by(K[2], CHAIN))
        .check(CHAIN)
        .startswith("messages are not for")
    )
