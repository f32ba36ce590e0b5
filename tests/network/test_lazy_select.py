"""Multistream-select with the first write: one round trip, and a listener's answer checked before use."""

from __future__ import annotations

import pytest
import trio

from network.lazy_select import MULTISTREAM, LazyStream, NegotiationFailed
from network.streams import read_frame, write_frame
from tests.network.conftest import swarm
from tests.network.test_streams import Pieces

pytestmark = pytest.mark.trio

PROTOCOL = "/icn/test-lazy/1"


def line(text: bytes) -> bytes:
    return bytes([len(text)]) + text


HEADER, ECHO = line(MULTISTREAM + b"\n"), line(PROTOCOL.encode() + b"\n")


async def test_the_offer_rides_on_the_first_write_and_the_data_after_the_echo_is_the_streams() -> None:
    for sizes in ([len(HEADER + ECHO) + 5], [1, 1, 1, 30, 2], [len(HEADER), len(ECHO), 2, 3]):
        inner = Pieces(HEADER + ECHO + b"hello", sizes)
        stream = LazyStream(inner, PROTOCOL)  # type: ignore[arg-type]
        await stream.write(b"request")
        await stream.write(b"more")
        assert inner.written == [HEADER + ECHO + b"request", b"more"]  # one write carries the offer
        got = b""
        while len(got) < 5:
            got += await stream.read(3)
        assert got == b"hello"


async def test_a_read_before_any_write_sends_the_offer_first() -> None:
    inner = Pieces(HEADER + ECHO + b"greeting", [])
    stream = LazyStream(inner, PROTOCOL)  # type: ignore[arg-type]
    assert await stream.read(100) == b"greeting"
    assert inner.written == [HEADER + ECHO]
    await stream.write(b"x")
    assert inner.written[-1] == b"x"


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (HEADER + line(b"na\n"), "does not speak it"),
        (line(b"/multistream/2.0.0\n") + ECHO, "answered b'/multistream/2.0.0"),
        (HEADER + line(b"/icn/test-lazy/2\n"), "answered b'/icn/test-lazy/2"),
        (b"\xff\xff\xff\xff\x0f" + b"x" * 64, "a line of 128 bytes or more"),  # a huge varint
        (bytes([len(MULTISTREAM) + 2]) + MULTISTREAM + b"\n\n", "a line of 20 bytes"),
        (HEADER + ECHO[:4], "ended during the negotiation"),
        (b"", "ended during the negotiation"),
    ],
)
async def test_any_other_answer_fails_the_negotiation_before_data_is_returned(
    answer: bytes, why: str
) -> None:
    inner = Pieces(answer, [1] * len(answer))  # a byte per read: nothing is taken on trust early
    stream = LazyStream(inner, PROTOCOL)  # type: ignore[arg-type]
    await stream.write(b"request")
    with pytest.raises(NegotiationFailed, match=why):
        await stream.read(10)
    if answer.startswith(b"\xff"):
        assert len(inner.asked) == 1  # refused at its first byte: the rest was never asked for


async def test_between_hosts_a_request_and_its_answer_take_one_round_trip() -> None:
    from libp2p.security.noise.io import BaseNoiseMsgReadWriter

    written: list[tuple[int, int, int]] = []  # (the Noise session, yamux stream id, yamux frame type)
    write_msg = BaseNoiseMsgReadWriter.write_msg

    async def counted(self: BaseNoiseMsgReadWriter, msg: bytes, prefix_encoded: bool = False) -> None:
        written.append((id(self), int.from_bytes(msg[4:8], "big"), msg[1]))
        await write_msg(self, msg, prefix_encoded)

    async def echo(stream) -> None:
        await write_frame(stream, await read_frame(stream, 100))
        await stream.close()

    async with swarm(2, topology=[]) as sw:
        a, b = sw.hosts
        await a.connect(b.addrs()[0], keep=False)
        b.set_stream_handler(PROTOCOL, echo)
        BaseNoiseMsgReadWriter.write_msg = counted  # type: ignore[method-assign]
        try:
            stream = await a.new_stream(b.peer_id, PROTOCOL)
            await write_frame(stream, b"ping")
            with trio.fail_after(5):
                assert await read_frame(stream, 100) == b"ping"
        finally:
            BaseNoiseMsgReadWriter.write_msg = write_msg  # type: ignore[method-assign]
        sid = stream.muxed_stream.stream_id
        frames = [(session, kind) for session, stream_id, kind in written if stream_id == sid]
        opener = frames[0][0]  # whoever wrote the stream's first frame, its SYN
        # the SYN, then the offer with the request; the library's negotiation wrote the header
        # and the protocol each as a message first, and waited for the listener after each
        assert [kind for session, kind in frames if session == opener] == [1, 0], frames
        assert len({session for session, _ in frames}) == 2  # and the listener answered on it

        unknown = await a.new_stream(b.peer_id, "/icn/nobody-speaks-this/1")
        await write_frame(unknown, b"hello?")
        with pytest.raises(NegotiationFailed, match="does not speak it"), trio.fail_after(5):
            await read_frame(unknown, 100)
        assert a.is_connected(b.peer_id)  # a "na" ends the stream, not the connection
