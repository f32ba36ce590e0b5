"""Equivocation: two different signed headers from one signer for the same kind, slot and round.

Evidence is the pair of signed headers itself (`Signed.header`: the body with
large fields by their hash), so anyone can check it without trusting the
reporter, and it is small (under `MAX_EVIDENCE_BYTES`) whatever the size of the
messages it condemns: a proposer can always carry it. It is kept, gossiped, and
once a certificate carries it, the ledger bars the signer from later elections.

Evidence is *relevant* to a slot s only if it names a slot in
[s - MAX_EVIDENCE_AGE, s] and its signer directed that slot: older evidence has
had its chance to be committed, newer evidence cannot exist honestly yet, and a
signer who was no director cannot have equivocated as one. Every check that
decides whether evidence counts (a director judging a proposal, the ledger
applying a certificate, the evidence topic) applies this same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consensus.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, verify
from consensus.messages import (
    KINDS,
    MAX_EVIDENCE_BYTES,
    VERSION,
    DecodeError,
    Signed,
    canonical,
    decode_cbor,
    header_signing_bytes,
    sha256,
)
from consensus.wire import check_bytes, check_list

MAX_EVIDENCE_AGE = 16  # slots: how long after an equivocation its evidence can still be committed


@dataclass(frozen=True)
class SignedHeader:
    header: list[Any]
    signature: bytes

    def to_cbor(self) -> list[Any]:
        return [self.header, self.signature]


@dataclass(frozen=True)
class Evidence:
    kind: str
    signer: bytes
    first: SignedHeader
    second: SignedHeader

    @classmethod
    def of(cls, a: Signed, b: Signed) -> Evidence:
        """Evidence from two messages with one conflict key (ValueError for two that cannot conflict)."""
        if a.conflict_key() != b.conflict_key():
            raise ValueError("messages of different signers, kinds, slots or rounds do not conflict")
        ha, hb = SignedHeader(a.header(), a.signature), SignedHeader(b.header(), b.signature)
        first, second = sorted((ha, hb), key=lambda h: canonical(h.to_cbor()))
        return cls(a.KIND, a.signer, first, second)

    @property
    def slot(self) -> int:
        return int(self.first.header[0])

    @property
    def round(self) -> int:
        return -1 if self.kind == "announce" else int(self.first.header[1])

    def conflict_key(self) -> tuple[Any, ...]:
        return (self.kind, self.signer, self.slot, self.round)

    def encode(self) -> bytes:
        return canonical(
            [VERSION, "evidence", self.kind, self.signer, self.first.to_cbor(), self.second.to_cbor()]
        )

    @property
    def hash(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Evidence:
        items = check_list(decode_cbor(data, MAX_EVIDENCE_BYTES), "evidence", length=6)
        if items[0] != VERSION or type(items[0]) is not int or items[1] != "evidence":
            raise DecodeError("bad_field", "not version-1 evidence")
        kind = items[2]
        if type(kind) is not str or kind not in KINDS:
            raise DecodeError("unknown_kind", repr(kind)[:40])
        signer = check_bytes(items[3], "signer", PUBLIC_KEY_BYTES)
        halves = []
        for item, name in ((items[4], "first"), (items[5], "second")):
            header, signature = check_list(item, name, length=2)
            halves.append(
                SignedHeader(
                    KINDS[kind].check_header(header), check_bytes(signature, "signature", SIGNATURE_BYTES)
                )
            )
        first, second = sorted(halves, key=lambda h: canonical(h.to_cbor()))
        ev = cls(kind, signer, first, second)
        if ev.encode() != data:
            raise DecodeError("non_canonical", "not the canonical encoding of the evidence")
        return ev

    def check(self, chain_id: bytes) -> str | None:
        """None if this is a genuine equivocation; otherwise why not."""
        a, b = self.first.header, self.second.header
        if a[0] != b[0] or (self.kind != "announce" and a[1] != b[1]):
            return "headers are not for the same slot and round"
        if canonical(a) == canonical(b):
            return "headers do not differ"
        for half in (self.first, self.second):
            if not verify(
                self.signer,
                header_signing_bytes(chain_id, self.kind, half.header, self.signer),
                half.signature,
            ):
                return "bad signature"
        return None

    def relevant_to(self, slot: int, directors_of: Callable[[int], Sequence[bytes] | None]) -> str | None:
        """None if this evidence may count in slot `slot` (see the module docstring); otherwise why not."""
        if not slot - MAX_EVIDENCE_AGE <= self.slot <= slot:
            return f"names slot {self.slot}, outside [{slot - MAX_EVIDENCE_AGE}, {slot}]"
        directors = directors_of(self.slot)
        if not directors or self.signer not in directors:
            return "signer did not direct that slot"
        return None


def decode_relevant(
    data: Any, chain_id: bytes, slot: int, directors_of: Callable[[int], Sequence[bytes] | None]
) -> Evidence | None:
    """The evidence if `data` is genuine evidence relevant to `slot`, else None. Never raises on input."""
    try:
        ev = Evidence.decode(data)
    except DecodeError:
        return None
    if ev.check(chain_id) is not None or ev.relevant_to(slot, directors_of) is not None:
        return None
    return ev


class EquivocationDetector:
    """Remembers the first message per (kind, signer, slot, round) and reports a different second one."""

    def __init__(self) -> None:
        self._first: dict[tuple[Any, ...], Signed] = {}
        self._reported: set[tuple[Any, ...]] = set()

    def observe(self, msg: Signed) -> Evidence | None:
        """New evidence, or None (also for a conflict already reported)."""
        key = msg.conflict_key()
        first = self._first.setdefault(key, msg)
        if key in self._reported or first.header() == msg.header():
            return None
        self._reported.add(key)
        return Evidence.of(first, msg)
