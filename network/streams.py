"""Length-prefixed frames on libp2p streams, shared by the node's own stream protocols.

Each frame is a 4-byte big-endian length and that many bytes; a frame longer
than the reader allows is a protocol violation (the peer is cut off), a stream
that ends early means the peer went away.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF

from consensus.messages import DecodeError, decode_cbor

log = logging.getLogger(__name__)

RESET_TIMEOUT_SEC = 2.0  # a reset or close that the remote does not take within this is dropped


class ProtocolViolation(Exception):
    """The remote broke the protocol (garbage, oversize, wrong data): cut it off."""


class ProviderUnavailable(Exception):
    """The remote does not have the content, is busy, or went away: try another."""


# What a FrameReader asks its stream for at once: a few chunks' worth, so one read takes
# whatever yamux has buffered (a libp2p read costs the same whatever it returns).
READ_AHEAD_BYTES = 1024 * 1024


async def write_frame(stream: INetStream, data: bytes) -> None:
    await stream.write(len(data).to_bytes(4, "big") + data)


async def write_frames(stream: INetStream, frames: list[bytes]) -> None:
    """Several frames in one stream write. yamux cuts every write into frames of at most 65,507
    bytes and py-libp2p sends each as its own Noise message, so a 256 KiB chunk and its length
    written alone end in a 120-byte yamux frame that costs a whole message at both ends; written
    together, the frames of an answer fill the yamux frames back to back."""
    await stream.write(b"".join(len(data).to_bytes(4, "big") + data for data in frames))


async def _read_exactly(stream: INetStream, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        try:
            part = await stream.read(n - got)
        except StreamEOF:  # the library's way of saying what b"" says
            part = b""
        if not part:
            raise ProviderUnavailable(f"stream closed after {got} of {n} bytes")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


async def read_frame(stream: INetStream, max_bytes: int) -> bytes:
    length = int.from_bytes(await _read_exactly(stream, 4), "big")
    if length > max_bytes:
        raise ProtocolViolation(f"frame of {length} bytes, at most {max_bytes} expected")
    return await _read_exactly(stream, length)


class FrameReader:
    """The frames of one stream, read in large pieces.

    Every read of a py-libp2p stream costs the same few locks, checkpoints and a yamux window
    update whether it returns 4 bytes or a megabyte, and `read_frame` reads a frame as the
    pieces yamux happened to deliver (a length, then the body in up to 64 KiB parts). This
    reader takes whatever is buffered, up to READ_AHEAD_BYTES, and cuts frames out of it, so a
    busy stream costs a read per delivery rather than per piece. It owns the stream's read side:
    once it has read, the stream is read only through it. What it holds is bounded by
    READ_AHEAD_BYTES plus the largest frame a caller allows.
    """

    def __init__(self, stream: INetStream, read_ahead: int = READ_AHEAD_BYTES) -> None:
        self._stream = stream
        self._read_ahead = read_ahead
        self._buffer = bytearray()

    async def read_frame(self, max_bytes: int) -> bytes:
        await self._fill(4)
        length = int.from_bytes(self._buffer[:4], "big")
        if length > max_bytes:
            raise ProtocolViolation(f"frame of {length} bytes, at most {max_bytes} expected")
        await self._fill(4 + length)
        data = bytes(self._buffer[4 : 4 + length])
        del self._buffer[: 4 + length]
        return data

    async def _fill(self, n: int) -> None:
        while len(self._buffer) < n:
            try:
                part = await self._stream.read(max(n - len(self._buffer), self._read_ahead))
            except StreamEOF:
                part = b""
            if not part:
                raise ProviderUnavailable(f"stream closed after {len(self._buffer)} of {n} bytes")
            self._buffer += part


def decode_list(data: bytes, max_bytes: int, what: str) -> list:
    try:
        value = decode_cbor(data, max_bytes)
    except DecodeError as exc:
        raise ProtocolViolation(f"{what}: {exc}") from None
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        raise ProtocolViolation(f"{what}: not a CBOR list starting with a string")
    return value


async def reset(stream: INetStream) -> None:
    """Reset, even from a cancelled task (a lost endgame race): else the remote's end stays open."""
    with trio.CancelScope(shield=True), trio.move_on_after(RESET_TIMEOUT_SEC):
        try:
            await stream.reset()
        except Exception as exc:  # already gone
            log.debug("stream reset: %s", exc)


async def close(stream: INetStream) -> None:
    """Close our side, even from a cancelled task (a session whose peer was just dropped): else the
    remote waits on a stream nobody will write to again. Bounded as `reset` is."""
    with trio.CancelScope(shield=True), trio.move_on_after(RESET_TIMEOUT_SEC):
        try:
            await stream.close()
        except Exception as exc:
            log.debug("stream close: %s", exc)
