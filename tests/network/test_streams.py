"""Length-prefixed frames: a buffered reader's frames are the writer's, whatever the pieces."""

from __future__ import annotations

import pytest
from libp2p.network.stream.exceptions import StreamEOF

from network.streams import FrameReader, ProtocolViolation, ProviderUnavailable, write_frames

pytestmark = pytest.mark.trio


class Pieces:
    """A stream that returns the given pieces (never more than asked for), then the end."""

    def __init__(self, data: bytes, sizes: list[int], end: Exception | None = None) -> None:
        self.pieces, self.end, self.asked = [], end, []
        for size in sizes:
            self.pieces.append(data[:size])
            data = data[size:]
        if data:
            self.pieces.append(data)
        self.written: list[bytes] = []

    async def read(self, n: int) -> bytes:
        self.asked.append(n)
        if not self.pieces:
            if self.end is not None:
                raise self.end
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > n:
            piece, rest = piece[:n], piece[n:]
            self.pieces.insert(0, rest)
        return piece

    async def write(self, data: bytes) -> None:
        self.written.append(data)


async def test_frames_come_out_whole_and_in_order_however_the_stream_cuts_them() -> None:
    frames = [b"", b"a", bytes(range(256)) * 1000, b"xyz" * 7, bytes(70_000)]
    writer = Pieces(b"", [])
    await write_frames(writer, frames)
    [wire] = writer.written  # one write for all of them
    for sizes in ([1] * 11, [3, 5, 2, 100_000, 7], [len(wire)], [2, 256_001, 1]):
        stream = Pieces(wire, sizes)
        reader = FrameReader(stream, read_ahead=64 * 1024)
        assert [await reader.read_frame(300_000) for _ in frames] == frames
        with pytest.raises(ProviderUnavailable):
            await reader.read_frame(300_000)
        # what it asks for is bounded: the rest of the frame it reads, or its read-ahead
        assert max(stream.asked) <= max(256_000 + 4, 64 * 1024)


async def test_an_oversize_length_is_a_violation_before_its_body_is_read() -> None:
    stream = Pieces((10**9).to_bytes(4, "big") + b"tail", [4])
    with pytest.raises(ProtocolViolation, match="1000000000 bytes"):
        await FrameReader(stream).read_frame(1024)
    assert stream.pieces == [b"tail"]  # nothing of the body was read


@pytest.mark.parametrize("end", [None, StreamEOF()])
async def test_a_stream_that_ends_inside_a_frame_means_the_peer_went_away(end) -> None:
    stream = Pieces((100).to_bytes(4, "big") + bytes(40), [], end=end)
    with pytest.raises(ProviderUnavailable, match="44 of 104"):
        await FrameReader(stream).read_frame(1024)
