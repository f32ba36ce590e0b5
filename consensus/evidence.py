"""Equivocation: two different signed messages from one signer for the same slot, round and step.

Evidence is the pair itself, so anyone can check it without trusting the
reporter. It is kept, gossiped, and once a certificate carries it, the ledger
bars the signer from later elections.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.messages import (
    VERSION,
    DecodeError,
    Signed,
    _bytes,
    _list,
    canonical,
    decode_cbor,
    decode_signed,
    sha256,
)

MAX_EVIDENCE_BYTES = 2 * 64 * 1024 + 64


@dataclass(frozen=True)
class Evidence:
    first: Signed
    second: Signed

    @classmethod
    def of(cls, a: Signed, b: Signed) -> Evidence:
        first, second = sorted((a, b), key=lambda m: m.encode())
        return cls(first, second)

    @property
    def signer(self) -> bytes:
        return self.first.signer

    @property
    def slot(self) -> int:
        return self.first.slot

    def encode(self) -> bytes:
        return canonical([VERSION, "evidence", self.first.encode(), self.second.encode()])

    @property
    def hash(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Evidence:
        items = _list(decode_cbor(data, MAX_EVIDENCE_BYTES), "evidence", length=4)
        if items[0] != VERSION or items[1] != "evidence":
            raise DecodeError("bad_field", "not version-1 evidence")
        a = decode_signed(_bytes(items[2], "first"))
        b = decode_signed(_bytes(items[3], "second"))
        ev = cls.of(a, b)
        if ev.encode() != data:
            raise DecodeError("non_canonical", "not the canonical encoding of the evidence")
        return ev

    def check(self, chain_id: bytes) -> str | None:
        """None if this is a genuine equivocation; otherwise why not."""
        if self.first.conflict_key() != self.second.conflict_key():
            return "messages are not for the same signer, kind, slot and round"
        if self.first.body() == self.second.body():
            return "messages do not differ"
        if not (self.first.verify(chain_id) and self.second.verify(chain_id)):
            return "bad signature"
        return None


class EquivocationDetector:
    """Remembers the first message per (kind, signer, slot, round) and reports a different second one."""

    def __init__(self) -> None:
        self._first: dict[tuple, Signed] = {}
        self._reported: set[tuple] = set()

    def observe(self, msg: Signed) -> Evidence | None:
        """New evidence, or None (also for a conflict already reported)."""
        key = msg.conflict_key()
        first = self._first.setdefault(key, msg)
        if first.body() == msg.body() or key in self._reported:
            return None
        self._reported.add(key)
        return Evidence.of(first, msg)
