"""Multistream-select sent with a stream's first write, as go-multistream's lazy client does.

py-libp2p's `new_stream` negotiates before it returns: the opener writes the
multistream header and waits for the listener's, writes the protocol and
waits for its echo, and only then may send its request. That is two round
trips, and two Noise messages at each end, before the first useful byte; a
media download opens a session with a few peers for every file, and on a
loaded two-core machine each round trip is tens of milliseconds.

`LazyStream` writes the header, the protocol and the first write's bytes
together, and checks the listener's header and echo before its first read
returns anything: one round trip in all. The listener reads the same bytes in
the same order, so it cannot tell the difference. The cost is go's too: an
opener learns that the listener does not speak the protocol only when it
reads (`NegotiationFailed`), after its first request was sent for nothing.

What the listener sends before the stream's own data is bounded by the two
exact lines expected: any other length or text fails the negotiation before
more is read.
"""

from __future__ import annotations

from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.utils import encode_delim

MULTISTREAM = b"/multistream/1.0.0"
NOT_AVAILABLE = b"na\n"
READ_BYTES = 64 * 1024  # what a negotiation read asks for: the listener's first data may come with it


class NegotiationFailed(Exception):
    """The listener does not speak the protocol, or answered the negotiation with something else."""


class LazyStream:
    """A stream whose protocol negotiation rides on its first write (or precedes its first read).

    One reader and one writer at a time, as for any libp2p stream; everything not overridden
    here (close, reset, the protocol, the connection) is the wrapped stream's.
    """

    def __init__(self, stream: INetStream, protocol: str) -> None:
        proto = protocol.encode()
        if len(proto) + 1 >= 0x80:  # a line under 128 bytes has a one-byte length, as `_negotiated` reads
            raise ValueError(f"protocol id of {len(proto)} bytes: the ones here are short")
        self._stream = stream
        self._offer: bytes | None = encode_delim(MULTISTREAM) + encode_delim(proto)  # each line ends in \n
        self._expected = [MULTISTREAM + b"\n", proto + b"\n"]
        self._protocol = protocol
        self._pending = bytearray()  # read beyond the negotiation: the stream's first data

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    async def write(self, data: bytes) -> None:
        offer, self._offer = self._offer, None
        await self._stream.write(data if offer is None else offer + data)

    async def read(self, n: int | None = None) -> bytes:
        if self._offer is not None:  # a read before any write: the listener must hear the offer first
            await self.write(b"")
        if self._expected:
            await self._negotiated()
        if self._pending:
            size = len(self._pending) if n is None else min(n, len(self._pending))
            data = bytes(self._pending[:size])
            del self._pending[:size]
            return data
        return await self._stream.read(n)

    async def _negotiated(self) -> None:
        """Read and check the listener's header and protocol echo; keep what follows them."""
        while self._expected:
            expected = self._expected[0]
            if self._pending:
                length = self._pending[0]  # a varint: 128 or more would take a second byte
                if length not in (len(expected), len(NOT_AVAILABLE)):
                    size = f"{length} bytes" if length < 0x80 else "128 bytes or more"
                    raise NegotiationFailed(f"{self._protocol}: the listener answered a line of {size}")
                if len(self._pending) >= 1 + length:
                    line = bytes(self._pending[1 : 1 + length])
                    del self._pending[: 1 + length]
                    if line == NOT_AVAILABLE:
                        raise NegotiationFailed(f"{self._protocol}: the listener does not speak it")
                    if line != expected:
                        raise NegotiationFailed(f"{self._protocol}: the listener answered {line[:40]!r}")
                    self._expected.pop(0)
                    continue
            try:
                part = await self._stream.read(READ_BYTES)
            except StreamEOF:
                part = b""
            if not part:
                raise NegotiationFailed(f"{self._protocol}: the stream ended during the negotiation")
            self._pending += part


__all__ = ["LazyStream", "NegotiationFailed"]
