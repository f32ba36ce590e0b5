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


def _cert_items(**changes):
    good = cert([0, 1, 2, 3])
    items = [
        1,
        "certificate",
        good.slot,
        good.round,
        good.value.to_cbor(),
        [[s, sig] for s, sig in good.signatures],
    ]
    for index, value in changes.items():
        items[int(index[1:])] = value
    return items


@pytest.mark.parametrize(
    ("items", "reason", "text"),
    [
        (_cert_items(i0=2), "bad_version", "version 2"),
        (_cert_items(i0=True), "bad_version", "version True"),
        (_cert_items(i1="vote"), "unknown_kind", "'vote'"),
        (_cert_items(i2=-1), "bad_field", "slot must be"),
        (_cert_items(i2=2**62 + 1), "bad_field", "slot must be"),
        (_cert_items(i3=-1), "bad_field", "round must be"),
        (_cert_items(i3=1001), "bad_field", "round must be"),
        (_cert_items(i5="sigs"), "bad_field", "signatures must be an array"),
        (_cert_items(i5=[[b"\x01" * 32, b"\x02" * 64]] * 1001), "bad_field", "signatures has more than 1000"),
        (_cert_items(i5=[[b"\x01" * 32]]), "bad_field", "signature must have 2 items"),
        (_cert_items(i5=[[b"\x01" * 31, b"\x02" * 64]]), "bad_field", "signer must be 32 bytes"),
        (_cert_items(i5=[[b"\x01" * 32, b"\x02" * 63]]), "bad_field", "signature must be 64 bytes"),
        (_cert_items()[:5], "bad_field", "certificate must have 6 items"),
    ],
)
def test_certificate_decode_rejections(items, reason: str, text: str) -> None:
    from consensus.messages import canonical

    with pytest.raises(DecodeError, match=text) as info:
        Certificate.decode(canonical(items))
    assert info.value.reason == reason


def test_certificate_edge_values_decode() -> None:
    from consensus.messages import canonical

    items = _cert_items(i2=0, i3=0)
    assert Certificate.decode(canonical(items)).slot == 0
    edge = _cert_items(i2=2**62, i3=1000)
    assert Certificate.decode(canonical(edge)).round == 1000


def test_non_canonical_certificate() -> None:
    import cbor2

    good = cert([0, 1, 2, 3])
    loose = cbor2.dumps(_cert_items()[:2] + [9] + _cert_items()[3:]).replace(b"\x09", b"\x18\x09", 1)
    with pytest.raises(DecodeError, match="not the canonical encoding") as info:
        Certificate.decode(loose)
    assert info.value.reason == "non_canonical"
    assert Certificate.decode(good.encode()) == good


def test_decode_error_message() -> None:
    assert str(DecodeError("bad_field", "x is wrong")) == "bad_field: x is wrong"
    assert str(DecodeError("too_large")) == "too_large"


def _evidence_items(**changes):
    a = Prevote(9, 1, sha256(b"a")).signed_by(K[2], CHAIN)
    b = Prevote(9, 1, None).signed_by(K[2], CHAIN)
    ev = Evidence.of(a, b)
    items = [1, "evidence", ev.first.encode(), ev.second.encode()]
    for index, value in changes.items():
        items[int(index[1:])] = value
    return items


@pytest.mark.parametrize(
    ("items", "reason", "text"),
    [
        (_evidence_items(i0=2), "bad_field", "not version-1 evidence"),
        (_evidence_items(i1="proof"), "bad_field", "not version-1 evidence"),
        (_evidence_items(i2="text"), "bad_field", "first must be bytes"),
        (_evidence_items(i3=7), "bad_field", "second must be bytes"),
        (_evidence_items(i2=b"\xff"), "malformed_cbor", "malformed_cbor"),
        (_evidence_items()[:3], "bad_field", "evidence must have 4 items"),
    ],
)
def test_evidence_decode_rejections(items, reason: str, text: str) -> None:
    from consensus.messages import canonical

    with pytest.raises(DecodeError, match=text) as info:
        Evidence.decode(canonical(items))
    assert info.value.reason == reason


def test_evidence_must_be_canonically_ordered() -> None:
    from consensus.messages import canonical

    items = _evidence_items()
    swapped = [items[0], items[1], items[3], items[2]]
    with pytest.raises(DecodeError, match="not the canonical encoding of the evidence") as info:
        Evidence.decode(canonical(swapped))
    assert info.value.reason == "non_canonical"
    assert Evidence.decode(canonical(items)).signer == D[2]
