import pytest

from consensus.certificate import Certificate
from consensus.evidence import MAX_EVIDENCE_AGE, EquivocationDetector, Evidence, SignedHeader, decode_relevant
from consensus.messages import (
    MAX_EMBEDDING_DIM,
    MAX_EVIDENCE_BYTES,
    MAX_RECIPE_BYTES,
    Announce,
    DecodeError,
    Precommit,
    Prevote,
    Proposal,
    Value,
    embedding_to_bytes,
    sha256,
)
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
    same = Evidence(
        "prevote", D[2], SignedHeader(a.header(), a.signature), SignedHeader(a.header(), a.signature)
    )
    assert same.check(CHAIN) == "headers do not differ"
    b = Prevote(9, 2, None).signed_by(K[2], CHAIN)
    other_round = Evidence(
        "prevote", D[2], SignedHeader(a.header(), a.signature), SignedHeader(b.header(), b.signature)
    )
    assert other_round.check(CHAIN) == "headers are not for the same slot and round"
    for not_a_twin in (Prevote(9, 2, None).signed_by(K[2], CHAIN), Prevote(9, 1, None).signed_by(K[3], CHAIN),
                       Precommit(9, 1, None).signed_by(K[2], CHAIN)):  # fmt: skip
        with pytest.raises(ValueError, match="do not conflict"):
            Evidence.of(a, not_a_twin)
        # the same pair assembled by hand under the first message's signer and kind: signatures fail
        forged = Evidence("prevote", D[2], SignedHeader(a.header(), a.signature),
                          SignedHeader([9, 1, None], not_a_twin.signature))  # fmt: skip
        assert forged.check(CHAIN) == "bad signature"
    assert Evidence.of(a, Prevote(9, 1, None).signed_by(K[2], CHAIN)).check(b"other chain") == "bad signature"


def test_evidence_of_large_messages_is_small_and_checkable() -> None:
    """Two proposals of almost 64 KiB each make evidence of a few hundred bytes (issue 23, defect 4)."""
    big = [Value(sha256(b"m"), b"x" * MAX_RECIPE_BYTES, ()), Value(sha256(b"n"), b"y" * MAX_RECIPE_BYTES, ())]
    p1, p2 = (Proposal(9, 3, v, 1).signed_by(K[1], CHAIN) for v in big)
    ev = Evidence.of(p1, p2)
    assert len(ev.encode()) < 400 and ev.check(CHAIN) is None
    assert Evidence.decode(ev.encode()) == ev and (ev.kind, ev.slot, ev.round) == ("proposal", 9, 3)
    wide = embedding_to_bytes([0.5] * MAX_EMBEDDING_DIM)
    a1, a2 = (
        Announce(9, sha256(b"r"), wide, wide, True, sha256(c)).signed_by(K[0], CHAIN) for c in (b"1", b"2")
    )
    ev = Evidence.of(a1, a2)
    assert len(ev.encode()) <= MAX_EVIDENCE_BYTES and ev.check(CHAIN) is None and ev.round == -1


def test_evidence_is_relevant_only_to_its_slot_and_shortly_after_and_only_against_a_director() -> None:
    ev = Evidence.of(
        Prevote(9, 1, sha256(b"a")).signed_by(K[2], CHAIN), Prevote(9, 1, None).signed_by(K[2], CHAIN)
    )
    directors = {9: D[:4]}
    assert ev.relevant_to(9, directors.get) is None
    assert ev.relevant_to(9 + MAX_EVIDENCE_AGE, directors.get) is None
    assert "outside" in ev.relevant_to(8, directors.get)  # evidence from a later slot than the one judged
    assert "outside" in ev.relevant_to(10 + MAX_EVIDENCE_AGE, directors.get)
    assert ev.relevant_to(9, {9: D[3:]}.get) == "signer did not direct that slot"
    assert ev.relevant_to(9, {}.get) == "signer did not direct that slot"
    assert decode_relevant(ev.encode(), CHAIN, 9, directors.get) == ev
    for junk in (b"", b"\x9f" * 5000, b"[" * 5000, ev.encode()[:-1], "text", None, 5):
        assert decode_relevant(junk, CHAIN, 9, directors.get) is None


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
    items = [1, "evidence", "prevote", ev.signer, ev.first.to_cbor(), ev.second.to_cbor()]
    for index, value in changes.items():
        items[int(index[1:])] = value
    return items


@pytest.mark.parametrize(
    ("items", "reason", "text"),
    [
        (_evidence_items(i0=2), "bad_field", "not version-1 evidence"),
        (_evidence_items(i1="proof"), "bad_field", "not version-1 evidence"),
        (_evidence_items(i2="vote"), "unknown_kind", "'vote'"),
        (_evidence_items(i3=b"\x01" * 31), "bad_field", "signer must be 32 bytes"),
        (_evidence_items(i4=7), "bad_field", "first must be an array"),
        (_evidence_items(i5=[[9, 1, None]]), "bad_field", "second must have 2 items"),
        (_evidence_items(i4=[[9, -1, None], b"\x00" * 64]), "bad_field", "round must be"),
        (_evidence_items(i4=[[9, 1, b"short"], b"\x00" * 64]), "bad_field", "value_hash must be 32 bytes"),
        (_evidence_items(i4=[[9, 1, None], b"\x00" * 63]), "bad_field", "signature must be 64 bytes"),
        (_evidence_items()[:5], "bad_field", "evidence must have 6 items"),
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
    swapped = [*items[:4], items[5], items[4]]
    with pytest.raises(DecodeError, match="not the canonical encoding of the evidence") as info:
        Evidence.decode(canonical(swapped))
    assert info.value.reason == "non_canonical"
    assert Evidence.decode(canonical(items)).signer == D[2]
