"""Commit certificates: a decided value with a quorum of precommit signatures.

Anyone can check a certificate with the slot's directors' public keys alone:
each signature must be a valid precommit for (slot, round, hash(value)) by a
distinct director, and there must be a quorum of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from consensus.membership import quorum
from consensus.messages import (
    MAX_MESSAGE_BYTES,
    MAX_ROUND,
    VERSION,
    DecodeError,
    Precommit,
    Value,
    canonical,
    decode_cbor,
    sha256,
)
from consensus.wire import check_bytes, check_int, check_list

MAX_CERTIFICATE_BYTES = 4 * MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class Certificate:
    slot: int
    round: int
    value: Value
    signatures: tuple[tuple[bytes, bytes], ...]  # (signer public key, precommit signature), sorted by signer

    def encode(self) -> bytes:
        sigs = [[s, sig] for s, sig in sorted(self.signatures)]
        return canonical([VERSION, "certificate", self.slot, self.round, self.value.to_cbor(), sigs])

    @property
    def hash(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        items = check_list(decode_cbor(data, MAX_CERTIFICATE_BYTES), "certificate", length=6)
        if items[0] != VERSION or type(items[0]) is not int:
            raise DecodeError("bad_version", f"version {items[0]!r}")
        if items[1] != "certificate":
            raise DecodeError("unknown_kind", repr(items[1])[:40])
        sigs = []
        for pair in check_list(items[5], "signatures", max_length=1000):
            signer, sig = check_list(pair, "signature", length=2)
            sigs.append(
                (
                    check_bytes(signer, "signer", PUBLIC_KEY_BYTES),
                    check_bytes(sig, "signature", SIGNATURE_BYTES),
                )
            )
        cert = cls(
            check_int(items[2], "slot", 0, 2**62),
            check_int(items[3], "round", 0, MAX_ROUND),
            Value.from_cbor(items[4]),
            tuple(sorted(sigs)),
        )
        if cert.encode() != data:
            raise DecodeError("non_canonical", "not the canonical encoding of the certificate")
        return cert

    def verify(self, directors: Sequence[bytes], chain_id: bytes) -> str | None:
        """None if valid; otherwise why not."""
        members = set(directors)
        value_hash = self.value.hash
        seen: set[bytes] = set()
        for signer, sig in self.signatures:
            if signer not in members:
                return "signer is not a director of the slot"
            if signer in seen:
                return "duplicate signer"
            vote = Precommit(self.slot, self.round, value_hash, signer=signer, signature=sig)
            if not vote.verify(chain_id):
                return "bad precommit signature"
            seen.add(signer)
        if len(seen) < quorum(len(members)):
            return f"{len(seen)} precommits, quorum is {quorum(len(members))}"
        return None
