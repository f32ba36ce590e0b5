"""The consensus wire format: CBOR, versioned, canonical, ed25519-signed.

Every message is a CBOR array ``[version, kind, body, signer, signature]``. The
signature covers the canonical CBOR encoding of
``[DOMAIN, chain_id, version, kind, header, signer]``, so a message cannot be
replayed on another network (chain id) or as another kind. The *header* is the
body with its large fields replaced by their SHA-256 (a proposal's value, an
announcement's embeddings; a vote's header is its body): it commits to the whole
message, yet evidence of equivocation needs only the two headers and signatures,
a few hundred bytes whatever the messages' sizes, so evidence always fits in a
proposal (as Tendermint's duplicate-vote evidence carries votes on block ids,
never blocks). Decoding accepts only
the canonical encoding of a well-typed message: one message has one byte string,
which is what gossip message ids and equivocation checks compare.

Embeddings travel as little-endian float32 bytes; hashes are 32-byte SHA-256.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import cbor2

from consensus.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Signer, verify

VERSION = 1
DOMAIN = b"icn-consensus/2"  # /2: signatures cover the header, not the body
HASH_BYTES = 32
MAX_MESSAGE_BYTES = 64 * 1024
MAX_EMBEDDING_DIM = 2048
MAX_RECIPE_BYTES = 16 * 1024
MAX_EVIDENCE_PER_VALUE = 8
MAX_EVIDENCE_BYTES = 1024  # two signed headers (consensus.evidence): about 500 bytes at most
MAX_ROUND = 1000
# A proposal's fixed fields (slot, rounds, candidate, signer, signature, CBOR framing) take under 256
# bytes, so a value at its limits always fits in one message: proposing can never build one too large.
_PROPOSAL_OVERHEAD = 256
assert (
    _PROPOSAL_OVERHEAD + MAX_RECIPE_BYTES + MAX_EVIDENCE_PER_VALUE * (MAX_EVIDENCE_BYTES + 3)
    < MAX_MESSAGE_BYTES
)


class DecodeError(ValueError):
    """Input that is not a valid message; `reason` is a short, countable label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def canonical(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


# -- field checks ------------------------------------------------------------------------------------
def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise DecodeError("bad_field", f"{name} must be an integer in [{lo}, {hi}]")
    return v


def _bytes(v: Any, name: str, size: int | None = None, max_size: int | None = None) -> bytes:
    if type(v) is not bytes:
        raise DecodeError("bad_field", f"{name} must be bytes")
    if size is not None and len(v) != size:
        raise DecodeError("bad_field", f"{name} must be {size} bytes")
    if max_size is not None and len(v) > max_size:
        raise DecodeError("bad_field", f"{name} longer than {max_size} bytes")
    return v


def _opt_hash(v: Any, name: str) -> bytes | None:
    return None if v is None else _bytes(v, name, HASH_BYTES)


def _list(v: Any, name: str, length: int | None = None, max_length: int | None = None) -> list:
    if type(v) is not list:
        raise DecodeError("bad_field", f"{name} must be an array")
    if length is not None and len(v) != length:
        raise DecodeError("bad_field", f"{name} must have {length} items")
    if max_length is not None and len(v) > max_length:
        raise DecodeError("bad_field", f"{name} has more than {max_length} items")
    return v


def _embedding(v: Any, name: str) -> bytes:
    b = _bytes(v, name, max_size=4 * MAX_EMBEDDING_DIM)
    if not b or len(b) % 4:
        raise DecodeError("bad_field", f"{name} must be a non-empty float32 vector")
    values = struct.unpack(f"<{len(b) // 4}f", b)
    if any(x != x or x in (float("inf"), float("-inf")) for x in values):
        raise DecodeError("bad_field", f"{name} holds NaN or Inf")
    return b


def embedding_to_bytes(values: Any) -> bytes:
    """Pack a vector (list, numpy array or torch tensor) as little-endian float32."""
    seq = values.tolist() if hasattr(values, "tolist") else list(values)
    return struct.pack(f"<{len(seq)}f", *seq)


def embedding_from_bytes(data: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{len(data) // 4}f", data)


def cosine(a: bytes, b: bytes) -> float:
    """Cosine similarity of two packed float32 vectors; -1.0 (disagree) if their sizes differ or one is zero."""
    if len(a) != len(b):
        return -1.0
    va, vb = embedding_from_bytes(a), embedding_from_bytes(b)
    dot = sum(x * y for x, y in zip(va, vb, strict=True))
    na = sum(x * x for x in va) ** 0.5
    nb = sum(y * y for y in vb) ** 0.5
    if na == 0 or nb == 0:
        return -1.0
    return dot / (na * nb)


# -- values --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Value:
    """What a slot's agreement decides: the canonical output, the next slot's recipe, and evidence.

    `candidate` is the content hash of one director's encoded media; `next_recipe`
    the canonical JSON of the next slot's recipe (None: the fallback programme);
    `evidence` encoded equivocation evidence to apply to the ledger.
    """

    candidate: bytes
    next_recipe: bytes | None = None
    evidence: tuple[bytes, ...] = ()

    def to_cbor(self) -> list:
        return [self.candidate, self.next_recipe, list(self.evidence)]

    @classmethod
    def from_cbor(cls, v: Any) -> Value:
        items = _list(v, "value", length=3)
        candidate = _bytes(items[0], "value.candidate", HASH_BYTES)
        recipe = (
            None if items[1] is None else _bytes(items[1], "value.next_recipe", max_size=MAX_RECIPE_BYTES)
        )
        evidence = tuple(
            _bytes(e, "value.evidence[]", max_size=MAX_EVIDENCE_BYTES)
            for e in _list(items[2], "value.evidence", max_length=MAX_EVIDENCE_PER_VALUE)
        )
        return cls(candidate, recipe, evidence)

    @property
    def hash(self) -> bytes:
        return sha256(canonical(self.to_cbor()))


def _check_rounds(round_: Any, pol_round: Any) -> tuple[int, int]:
    r = _int(round_, "round", 0, MAX_ROUND)
    pol = _int(pol_round, "pol_round", -1, MAX_ROUND)
    if pol >= r:
        raise DecodeError("bad_field", "pol_round must be below round")
    return r, pol


# -- signed messages ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signed:
    """Base of the signed messages. Subclasses define `KIND` and their body."""

    KIND: ClassVar[str] = ""
    slot: int
    signer: bytes = field(default=b"", kw_only=True)
    signature: bytes = field(default=b"", kw_only=True, compare=False)

    # subclasses
    def body(self) -> list:
        raise NotImplementedError

    def header(self) -> list:
        """What the signature covers: the body, large fields by their hash (see the module's docstring)."""
        return self.body()

    @classmethod
    def check_header(cls, header: Any) -> list:
        """A header received inside evidence, type-checked; raises DecodeError."""
        return _list(cls.from_body(header, b"", b"").header(), cls.KIND)

    @classmethod
    def from_body(cls, body: list, signer: bytes, signature: bytes) -> Signed:
        raise NotImplementedError

    @property
    def round(self) -> int:
        return -1

    # shared
    def signing_bytes(self, chain_id: bytes) -> bytes:
        return header_signing_bytes(chain_id, self.KIND, self.header(), self.signer)

    def signed_by(self, signer: Signer, chain_id: bytes) -> Signed:
        """This message signed by `signer`. Never re-decodes: signing our own message cannot raise."""
        unsigned = replace(self, signer=signer.public_key, signature=b"")
        return replace(unsigned, signature=signer.sign(unsigned.signing_bytes(chain_id)))

    def verify(self, chain_id: bytes) -> bool:
        return verify(self.signer, self.signing_bytes(chain_id), self.signature)

    def encode(self) -> bytes:
        return canonical([VERSION, self.KIND, self.body(), self.signer, self.signature])

    @property
    def message_id(self) -> bytes:
        return sha256(self.encode())

    def conflict_key(self) -> tuple:
        """Two messages with this key and different headers are an equivocation."""
        return (self.KIND, self.signer, self.slot, self.round)


def header_signing_bytes(chain_id: bytes, kind: str, header: list, signer: bytes) -> bytes:
    """The bytes a signature covers (shared by messages and by evidence, which holds only headers)."""
    return canonical([DOMAIN, chain_id, VERSION, kind, header, signer])


@dataclass(frozen=True)
class Announce(Signed):
    KIND: ClassVar[str] = "announce"
    recipe_hash: bytes
    embedding_b: bytes
    embedding_l: bytes
    self_check: bool
    content_hash: bytes

    def body(self) -> list:
        return [
            self.slot,
            self.recipe_hash,
            self.embedding_b,
            self.embedding_l,
            self.self_check,
            self.content_hash,
        ]

    def header(self) -> list:
        return [
            self.slot,
            self.recipe_hash,
            sha256(self.embedding_b),
            sha256(self.embedding_l),
            self.self_check,
            self.content_hash,
        ]

    @classmethod
    def check_header(cls, header: Any) -> list:
        h = _list(header, "announce header", length=6)
        if type(h[4]) is not bool:
            raise DecodeError("bad_field", "self_check must be a boolean")
        _int(h[0], "slot", 0, 2**62)
        for i, name in (
            (1, "recipe_hash"),
            (2, "embedding_b hash"),
            (3, "embedding_l hash"),
            (5, "content_hash"),
        ):
            _bytes(h[i], name, HASH_BYTES)
        return h

    @classmethod
    def from_body(cls, body: list, signer: bytes, signature: bytes) -> Announce:
        b = _list(body, "announce", length=6)
        if type(b[4]) is not bool:
            raise DecodeError("bad_field", "self_check must be a boolean")
        return cls(
            _int(b[0], "slot", 0, 2**62),
            _bytes(b[1], "recipe_hash", HASH_BYTES),
            _embedding(b[2], "embedding_b"),
            _embedding(b[3], "embedding_l"),
            b[4],
            _bytes(b[5], "content_hash", HASH_BYTES),
            signer=signer,
            signature=signature,
        )


@dataclass(frozen=True)
class Proposal(Signed):
    KIND: ClassVar[str] = "proposal"
    round_: int
    value: Value
    pol_round: int = -1  # round of the prevote quorum that made the value valid, or -1

    @property
    def round(self) -> int:
        return self.round_

    def body(self) -> list:
        return [self.slot, self.round_, self.value.to_cbor(), self.pol_round]

    def header(self) -> list:
        return [self.slot, self.round_, self.value.hash, self.pol_round]

    @classmethod
    def check_header(cls, header: Any) -> list:
        h = _list(header, "proposal header", length=4)
        _int(h[0], "slot", 0, 2**62)
        _check_rounds(h[1], h[3])
        _bytes(h[2], "value_hash", HASH_BYTES)
        return h

    @classmethod
    def from_body(cls, body: list, signer: bytes, signature: bytes) -> Proposal:
        b = _list(body, "proposal", length=4)
        round_, pol = _check_rounds(b[1], b[3])
        return cls(
            _int(b[0], "slot", 0, 2**62),
            round_,
            Value.from_cbor(b[2]),
            pol,
            signer=signer,
            signature=signature,
        )


@dataclass(frozen=True)
class _Vote(Signed):
    round_: int
    value_hash: bytes | None  # None: nil

    @property
    def round(self) -> int:
        return self.round_

    def body(self) -> list:
        return [self.slot, self.round_, self.value_hash]

    @classmethod
    def from_body(cls, body: list, signer: bytes, signature: bytes) -> _Vote:
        b = _list(body, cls.KIND, length=3)
        return cls(
            _int(b[0], "slot", 0, 2**62),
            _int(b[1], "round", 0, MAX_ROUND),
            _opt_hash(b[2], "value_hash"),
            signer=signer,
            signature=signature,
        )


@dataclass(frozen=True)
class Prevote(_Vote):
    KIND: ClassVar[str] = "prevote"


@dataclass(frozen=True)
class Precommit(_Vote):
    KIND: ClassVar[str] = "precommit"


KINDS: dict[str, type[Signed]] = {cls.KIND: cls for cls in (Announce, Proposal, Prevote, Precommit)}


def decode_signed(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Signed:
    """Decode one signed message, structure only (the signature is checked by `MessageChecker`)."""
    obj = decode_cbor(data, max_bytes)
    items = _list(obj, "message", length=5)
    version, kind, body, signer, signature = items
    if version != VERSION or type(version) is not int:
        raise DecodeError("bad_version", f"version {version!r}, expected {VERSION}")
    if type(kind) is not str or kind not in KINDS:
        raise DecodeError("unknown_kind", repr(kind)[:40])
    msg = KINDS[kind].from_body(
        body, _bytes(signer, "signer", PUBLIC_KEY_BYTES), _bytes(signature, "signature", SIGNATURE_BYTES)
    )
    if msg.encode() != data:
        raise DecodeError("non_canonical", "not the canonical encoding of the message")
    return msg


def decode_cbor(data: bytes, max_bytes: int) -> Any:
    if not isinstance(data, bytes | bytearray):
        raise DecodeError("not_bytes", type(data).__name__)
    if len(data) > max_bytes:
        raise DecodeError("too_large", f"{len(data)} bytes > {max_bytes}")
    try:
        return cbor2.loads(bytes(data))
    except Exception as exc:  # cbor2 raises several types on garbage; all mean the same here
        raise DecodeError("malformed_cbor", str(exc)[:80]) from None
