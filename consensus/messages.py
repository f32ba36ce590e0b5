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

import struct
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from consensus.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Signer, verify
from consensus.wire import (  # DecodeError, canonical, decode_cbor, sha256: re-exported, part of this API
    HASH_BYTES,
    check_bytes,
    check_int,
    check_list,
    check_opt_hash,
)
from consensus.wire import DecodeError as DecodeError
from consensus.wire import canonical as canonical
from consensus.wire import decode_cbor as decode_cbor
from consensus.wire import sha256 as sha256

VERSION = 1
DOMAIN = b"icn-consensus/2"  # /2: signatures cover the header, not the body
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


def _embedding(v: Any, name: str) -> bytes:
    b = check_bytes(v, name, max_size=4 * MAX_EMBEDDING_DIM)
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
    return float(dot / (na * nb))


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

    def to_cbor(self) -> list[Any]:
        return [self.candidate, self.next_recipe, list(self.evidence)]

    @classmethod
    def from_cbor(cls, v: Any) -> Value:
        items = check_list(v, "value", length=3)
        candidate = check_bytes(items[0], "value.candidate", HASH_BYTES)
        recipe = (
            None
            if items[1] is None
            else check_bytes(items[1], "value.next_recipe", max_size=MAX_RECIPE_BYTES)
        )
        evidence = tuple(
            check_bytes(e, "value.evidence[]", max_size=MAX_EVIDENCE_BYTES)
            for e in check_list(items[2], "value.evidence", max_length=MAX_EVIDENCE_PER_VALUE)
        )
        return cls(candidate, recipe, evidence)

    @property
    def hash(self) -> bytes:
        return sha256(canonical(self.to_cbor()))


def _check_rounds(round_: Any, pol_round: Any) -> tuple[int, int]:
    r = check_int(round_, "round", 0, MAX_ROUND)
    pol = check_int(pol_round, "pol_round", -1, MAX_ROUND)
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
    def body(self) -> list[Any]:
        raise NotImplementedError

    def header(self) -> list[Any]:
        """What the signature covers: the body, large fields by their hash (see the module's docstring)."""
        return self.body()

    @classmethod
    def check_header(cls, header: Any) -> list[Any]:
        """A header received inside evidence, type-checked; raises DecodeError."""
        return check_list(cls.from_body(header, b"", b"").header(), cls.KIND)

    @classmethod
    def from_body(cls, body: list[Any], signer: bytes, signature: bytes) -> Signed:
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

    def conflict_key(self) -> tuple[Any, ...]:
        """Two messages with this key and different headers are an equivocation."""
        return (self.KIND, self.signer, self.slot, self.round)


def header_signing_bytes(chain_id: bytes, kind: str, header: list[Any], signer: bytes) -> bytes:
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

    def body(self) -> list[Any]:
        return [
            self.slot,
            self.recipe_hash,
            self.embedding_b,
            self.embedding_l,
            self.self_check,
            self.content_hash,
        ]

    def header(self) -> list[Any]:
        return [
            self.slot,
            self.recipe_hash,
            sha256(self.embedding_b),
            sha256(self.embedding_l),
            self.self_check,
            self.content_hash,
        ]

    @classmethod
    def check_header(cls, header: Any) -> list[Any]:
        h = check_list(header, "announce header", length=6)
        if type(h[4]) is not bool:
            raise DecodeError("bad_field", "self_check must be a boolean")
        check_int(h[0], "slot", 0, 2**62)
        for i, name in (
            (1, "recipe_hash"),
            (2, "embedding_b hash"),
            (3, "embedding_l hash"),
            (5, "content_hash"),
        ):
            check_bytes(h[i], name, HASH_BYTES)
        return h

    @classmethod
    def from_body(cls, body: list[Any], signer: bytes, signature: bytes) -> Announce:
        b = check_list(body, "announce", length=6)
        if type(b[4]) is not bool:
            raise DecodeError("bad_field", "self_check must be a boolean")
        return cls(
            check_int(b[0], "slot", 0, 2**62),
            check_bytes(b[1], "recipe_hash", HASH_BYTES),
            _embedding(b[2], "embedding_b"),
            _embedding(b[3], "embedding_l"),
            b[4],
            check_bytes(b[5], "content_hash", HASH_BYTES),
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

    def body(self) -> list[Any]:
        return [self.slot, self.round_, self.value.to_cbor(), self.pol_round]

    def header(self) -> list[Any]:
        return [self.slot, self.round_, self.value.hash, self.pol_round]

    @classmethod
    def check_header(cls, header: Any) -> list[Any]:
        h = check_list(header, "proposal header", length=4)
        check_int(h[0], "slot", 0, 2**62)
        _check_rounds(h[1], h[3])
        check_bytes(h[2], "value_hash", HASH_BYTES)
        return h

    @classmethod
    def from_body(cls, body: list[Any], signer: bytes, signature: bytes) -> Proposal:
        b = check_list(body, "proposal", length=4)
        round_, pol = _check_rounds(b[1], b[3])
        return cls(
            check_int(b[0], "slot", 0, 2**62),
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

    def body(self) -> list[Any]:
        return [self.slot, self.round_, self.value_hash]

    @classmethod
    def from_body(cls, body: list[Any], signer: bytes, signature: bytes) -> _Vote:
        b = check_list(body, cls.KIND, length=3)
        return cls(
            check_int(b[0], "slot", 0, 2**62),
            check_int(b[1], "round", 0, MAX_ROUND),
            check_opt_hash(b[2], "value_hash"),
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
    items = check_list(obj, "message", length=5)
    version, kind, body, signer, signature = items
    if version != VERSION or type(version) is not int:
        raise DecodeError("bad_version", f"version {version!r}, expected {VERSION}")
    if type(kind) is not str or kind not in KINDS:
        raise DecodeError("unknown_kind", repr(kind)[:40])
    msg = KINDS[kind].from_body(
        body,
        check_bytes(signer, "signer", PUBLIC_KEY_BYTES),
        check_bytes(signature, "signature", SIGNATURE_BYTES),
    )
    if msg.encode() != data:
        raise DecodeError("non_canonical", "not the canonical encoding of the message")
    return msg
