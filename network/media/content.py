"""Content ids for slot media: the hash of a file's chunk list.

A file is cut into `CHUNK_BYTES` chunks; its chunk list is (size, chunk size,
SHA-256 of every chunk), and its content id is the SHA-256 of that list's
canonical CBOR. The certificate carries the content id, so a fetcher that has
the list (from anyone) checks it against the id, then checks every chunk on
arrival against its entry: a bad chunk is caught after one chunk, not after
the whole file, and any provider can serve any chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from consensus.wire import DecodeError, canonical, check_bytes, check_int, check_list, decode_cbor, sha256

CHUNK_BYTES = 256 * 1024
MAX_CHUNKS = 1 << 16
_LIST_OVERHEAD = 64
DOMAIN = "icn-media-v1"


def gossip_message_id(msg: object) -> bytes:
    """Gossip ids are content hashes: the same message from two origins is one message."""
    return sha256(msg.data)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ChunkList:
    size: int
    chunk_size: int
    leaves: tuple[bytes, ...]

    def __post_init__(self) -> None:
        expected = -(-self.size // self.chunk_size) if self.size else 0
        if len(self.leaves) != expected:
            raise ValueError(
                f"{len(self.leaves)} chunk hashes for {self.size} bytes in {self.chunk_size}-byte chunks"
            )

    @property
    def count(self) -> int:
        return len(self.leaves)

    def chunk_length(self, index: int) -> int:
        if not 0 <= index < self.count:
            raise IndexError(f"chunk {index} out of range 0..{self.count - 1}")
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def encode(self) -> bytes:
        return canonical([DOMAIN, self.size, self.chunk_size, list(self.leaves)])

    @property
    def content_id(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> ChunkList:
        """Parse a chunk list received from a peer; `DecodeError` names what is wrong."""
        items = check_list(decode_cbor(data, MAX_CHUNKS * 34 + _LIST_OVERHEAD), "chunk_list", length=4)
        if items[0] != DOMAIN:
            raise DecodeError("bad_field", "chunk list of another format")
        size = check_int(items[1], "size", 0, MAX_CHUNKS * CHUNK_BYTES * 16)
        chunk_size = check_int(items[2], "chunk_size", 1024, 16 * 1024 * 1024)
        leaves = tuple(
            check_bytes(h, "leaf", 32) for h in check_list(items[3], "leaves", max_length=MAX_CHUNKS)
        )
        try:
            chunk_list = cls(size, chunk_size, leaves)
        except ValueError as exc:
            raise DecodeError("bad_field", str(exc)) from None
        if chunk_list.encode() != data:
            raise DecodeError("non_canonical", "not the canonical encoding of the chunk list")
        return chunk_list

    @classmethod
    def of_bytes(cls, data: bytes, chunk_size: int = CHUNK_BYTES) -> ChunkList:
        leaves = tuple(sha256(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size))
        return cls(len(data), chunk_size, leaves)

    @classmethod
    def of_file(cls, path: str | Path, chunk_size: int = CHUNK_BYTES) -> ChunkList:
        leaves, size = [], 0
        for chunk in iter_chunks(path, chunk_size):
            leaves.append(sha256(chunk))
            size += len(chunk)
        return cls(size, chunk_size, tuple(leaves))


def encode_have_map(have: list[bool]) -> bytes:
    """A have-map on the wire: one bit per chunk, chunk 0 in the high bit of byte 0."""
    out = bytearray(-(-len(have) // 8))
    for i, held in enumerate(have):
        if held:
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def decode_have_map(data: object, count: int) -> list[bool]:
    """A peer's have-map for a file of `count` chunks; exact length, padding bits zero."""
    if not isinstance(data, bytes) or len(data) != -(-count // 8):
        raise DecodeError("bad_field", f"have-map must be {-(-count // 8)} bytes for {count} chunks")
    have = [bool(data[i >> 3] & (0x80 >> (i & 7))) for i in range(count)]
    if count % 8 and data[-1] & (0xFF >> (count % 8)):
        raise DecodeError("bad_field", "have-map sets bits past the last chunk")
    return have


def iter_chunks(path: str | Path, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


def content_id_of_file(path: str | Path) -> bytes:
    """The id the certificate carries for a slot's media file."""
    return ChunkList.of_file(path).content_id
