"""The wire's building blocks, public for every package that reads CBOR from peers.

Canonical CBOR (RFC 8949 4.2.1, via `cbor2`), bounded decoding, and the strict
field checks every decoder in `consensus` and `network` uses: each raises
`DecodeError` with a short, countable `reason`, never another exception type, so
a caller can count and drop what a peer sent without a catch-all.
"""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2

HASH_BYTES = 32  # SHA-256


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
def check_int(v: Any, name: str, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise DecodeError("bad_field", f"{name} must be an integer in [{lo}, {hi}]")
    return v


def check_bytes(v: Any, name: str, size: int | None = None, max_size: int | None = None) -> bytes:
    if type(v) is not bytes:
        raise DecodeError("bad_field", f"{name} must be bytes")
    if size is not None and len(v) != size:
        raise DecodeError("bad_field", f"{name} must be {size} bytes")
    if max_size is not None and len(v) > max_size:
        raise DecodeError("bad_field", f"{name} longer than {max_size} bytes")
    return v


def check_opt_hash(v: Any, name: str) -> bytes | None:
    return None if v is None else check_bytes(v, name, HASH_BYTES)


def check_list(v: Any, name: str, length: int | None = None, max_length: int | None = None) -> list[Any]:
    if type(v) is not list:
        raise DecodeError("bad_field", f"{name} must be an array")
    if length is not None and len(v) != length:
        raise DecodeError("bad_field", f"{name} must have {length} items")
    if max_length is not None and len(v) > max_length:
        raise DecodeError("bad_field", f"{name} has more than {max_length} items")
    return v


def decode_cbor(data: bytes, max_bytes: int) -> Any:
    if not isinstance(data, bytes | bytearray):
        raise DecodeError("not_bytes", type(data).__name__)
    if len(data) > max_bytes:
        raise DecodeError("too_large", f"{len(data)} bytes > {max_bytes}")
    try:
        return cbor2.loads(bytes(data))
    except Exception as exc:  # cbor2 raises several types on garbage; all mean the same here
        raise DecodeError("malformed_cbor", str(exc)[:80]) from None
