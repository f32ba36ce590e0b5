import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.crypto import Signer, verify
from consensus.messages import (
    MAX_MESSAGE_BYTES,
    Announce,
    DecodeError,
    Precommit,
    Prevote,
    Proposal,
    Value,
    canonical,
    cosine,
    decode_signed,
    embedding_to_bytes,
    sha256,
)

CHAIN = b"chain-a"
KEY = Signer.from_seed(b"\x01" * 32)
H = sha256(b"x")


def _announce(**kw) -> Announce:
    fields = dict(
        recipe_hash=H,
        embedding_b=embedding_to_bytes([1.0, 0.0]),
        embedding_l=embedding_to_bytes([0.5] * 3),
        self_check=True,
        content_hash=sha256(b"media"),
    )
    fields.update(kw)
    return Announce(7, **fields).signed_by(KEY, CHAIN)


MESSAGES = [
    _announce(),
    Proposal(7, 2, Value(H, b'{"a": 1}', (b"ev",)), 1).signed_by(KEY, CHAIN),
    Proposal(7, 0, Value(H), -1).signed_by(KEY, CHAIN),
    Prevote(7, 0, H).signed_by(KEY, CHAIN),
    Prevote(7, 3, None).signed_by(KEY, CHAIN),
    Precommit(7, 1, H).signed_by(KEY, CHAIN),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: m.KIND)
def test_round_trip_and_signature(msg) -> None:
    data = msg.encode()
    back = decode_signed(data)
    assert back == msg and back.signature == msg.signature
    assert back.verify(CHAIN)
    assert not back.verify(b"chain-b")  # signatures are bound to the chain id
    assert back.encode() == data


def test_signature_covers_kind_and_body() -> None:
    vote = Prevote(7, 0, H).signed_by(KEY, CHAIN)
    as_precommit = Precommit(7, 0, H, signer=vote.signer, signature=vote.signature)
    assert not as_precommit.verify(CHAIN)
    other_round = Prevote(7, 1, H, signer=vote.signer, signature=vote.signature)
    assert not other_round.verify(CHAIN)
    other_signer = Prevote(
        7, 0, H, signer=Signer.from_seed(b"\x02" * 32).public_key, signature=vote.signature
    )
    assert not other_signer.verify(CHAIN)


def _envelope(kind="prevote", body=None, version=1, signer=None, sig=b"\x00" * 64) -> bytes:
    return canonical([version, kind, body if body is not None else [7, 0, H], signer or KEY.public_key, sig])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed_cbor"),
        (b"\xff\xff", "malformed_cbor"),
        (cbor2.dumps({"a": 1}), "bad_field"),
        (cbor2.dumps([1, 2, 3]), "bad_field"),
        (_envelope(version=2), "bad_version"),
        (_envelope(version=True), "bad_version"),
        (_envelope(kind="vote"), "unknown_kind"),
        (_envelope(body=[7, 0]), "bad_field"),
        (_envelope(body=[-1, 0, H]), "bad_field"),
        (_envelope(body=[True, 0, H]), "bad_field"),
        (_envelope(body=[7, 0, b"short"]), "bad_field"),
        (_envelope(body=[7, 1001, H]), "bad_field"),
        (_envelope(signer=b"\x01" * 31), "bad_field"),
        (_envelope(sig=b"\x00" * 63), "bad_field"),
        (_envelope(kind="proposal", body=[7, 1, [H, None, []], 1]), "bad_field"),  # pol_round must be < round
        (_envelope(kind="proposal", body=[7, 1, [H, None, [b"e"] * 9], -1]), "bad_field"),
        (
            _envelope(kind="announce", body=[7, H, b"\x00\x00\xc0\x7f", b"\x00" * 4, True, H]),
            "bad_field",
        ),  # NaN
        (_envelope(kind="announce", body=[7, H, b"", b"\x00" * 4, True, H]), "bad_field"),
        (_envelope(kind="announce", body=[7, H, b"\x00" * 4, b"\x00" * 4, 1, H]), "bad_field"),
        (b"\x00" * (MAX_MESSAGE_BYTES + 1), "too_large"),
        (cbor2.dumps(cbor2.CBORTag(1, 5)), "bad_field"),  # a date is not a message
    ],
)
def test_malformed_input_is_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_signed(data)
    assert info.value.reason == reason


def test_non_canonical_encoding_is_rejected() -> None:
    vote = Prevote(7, 0, H).signed_by(KEY, CHAIN)
    items = [1, "prevote", [7, 0, H], vote.signer, vote.signature]
    loose = cbor2.dumps(items).replace(b"\x07", b"\x18\x07", 1)  # 7 as a one-byte-argument integer
    assert cbor2.loads(loose) == items and loose != vote.encode()
    with pytest.raises(DecodeError, match="non_canonical"):
        decode_signed(loose)


def test_not_bytes() -> None:
    with pytest.raises(DecodeError, match="not_bytes"):
        decode_signed("text")  # type: ignore[arg-type]


def test_cosine() -> None:
    a, b = embedding_to_bytes([1.0, 0.0]), embedding_to_bytes([0.0, 2.0])
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, b) == pytest.approx(0.0)
    assert cosine(a, embedding_to_bytes([1.0, 0.0, 0.0])) == -1.0  # size mismatch never agrees
    assert cosine(a, embedding_to_bytes([0.0, 0.0])) == -1.0
    assert cosine(embedding_to_bytes([2.0, 0.0]), embedding_to_bytes([3.0, 0.0])) == pytest.approx(1.0)
    assert cosine(embedding_to_bytes([1.0, 1.0]), embedding_to_bytes([4.0, 0.0])) == pytest.approx(0.5**0.5)


def test_verify_rejects_malformed_keys_and_signatures() -> None:
    assert not verify(b"\x00" * 31, b"data", b"\x00" * 64)
    assert not verify(KEY.public_key, b"data", b"\x00" * 10)
    assert not verify(b"\xff" * 32, b"data", b"\x00" * 64)
    assert verify(KEY.public_key, b"data", KEY.sign(b"data"))


hashes = st.binary(min_size=32, max_size=32)
floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
values = st.builds(
    Value, hashes, st.none() | st.binary(max_size=64), st.lists(st.binary(max_size=16), max_size=3).map(tuple)
)
unsigned = st.one_of(
    st.builds(
        lambda s, r, b, lv, c, h: Announce(s, r, embedding_to_bytes(b), embedding_to_bytes(lv), c, h),
        st.integers(0, 2**40),
        hashes,
        st.lists(floats, min_size=1, max_size=8),
        st.lists(floats, min_size=1, max_size=8),
        st.booleans(),
        hashes,
    ),
    st.builds(lambda s, r, v: Proposal(s, r, v, -1), st.integers(0, 2**40), st.integers(0, 1000), values),
    st.builds(Prevote, st.integers(0, 2**40), st.integers(0, 1000), st.none() | hashes),
    st.builds(Precommit, st.integers(0, 2**40), st.integers(0, 1000), st.none() | hashes),
)


@settings(max_examples=300, deadline=None)
@given(unsigned)
def test_codec_round_trips(msg) -> None:
    signed = msg.signed_by(KEY, CHAIN)
    back = decode_signed(signed.encode())
    assert back == signed and back.verify(CHAIN)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        decode_signed(data)
    except DecodeError as exc:
        assert exc.reason


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(MESSAGES) - 1), st.data())
def test_bit_flips_are_rejected_or_fail_verification(index: int, data) -> None:
    raw = bytearray(MESSAGES[index].encode())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    try:
        msg = decode_signed(bytes(raw))
    except DecodeError:
        return
    assert not msg.verify(CHAIN)
