"""The download scheduler against peers in memory, on a virtual clock: which messages it sends, when."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest
import trio
import trio.testing
from libp2p.peer.id import ID

from consensus.messages import canonical
from network.media.content import CHUNK_BYTES, ChunkList, decode_have_map, encode_have_map
from network.media.store import MediaStore
from network.media.swarm import (
    DIAL_AFTER_SEC,
    ENDGAME_AFTER_SEC,
    MAX_REPORT_EVENTS,
    Download,
    FetchReport,
    Progress,
)
from network.settings import MediaSettings

pytestmark = pytest.mark.trio


class MemoryStream:
    """One session's stream: each message the download writes goes to `answer`, which may reply."""

    def __init__(self, answer: Callable[[MemoryStream, list], None]) -> None:
        self.answer = answer
        self._send, self._receive = trio.open_memory_channel[bytes](math.inf)
        self._buffer = b""

    def reply(self, *frames: bytes) -> None:
        self._send.send_nowait(b"".join(len(f).to_bytes(4, "big") + f for f in frames))

    async def read(self, n: int) -> bytes:
        if not self._buffer:
            try:
                self._buffer = await self._receive.receive()
            except trio.EndOfChannel:  # closed or reset by this end: the reader sees the end
                return b""
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    async def write(self, data: bytes) -> None:
        while data:
            length = int.from_bytes(data[:4], "big")
            self.answer(self, cbor2.loads(data[4 : 4 + length]))
            data = data[4 + length :]

    async def close(self) -> None:
        self._send.close()

    async def reset(self) -> None:
        self._send.close()


class MemoryPeers:
    """The Requester a Download talks to: a status and an answering function per peer."""

    def __init__(self, settings: MediaSettings) -> None:
        self.settings = settings
        self.peers: dict[ID, tuple[list, Callable[[MemoryStream, list], None]]] = {}
        self.violations: list[Exception] = []

    async def request(self, peer: ID, request: list) -> tuple[MemoryStream, list]:
        status, answer = self.peers[peer]
        return MemoryStream(answer), status

    def violation(self, peer: ID, report: FetchReport, exc: Exception) -> None:
        self.violations.append(exc)


async def _inline(fn: Callable, *args: object, **_: object) -> object:
    return fn(*args)


def _reply_chunks(stream: MemoryStream, data: bytes, indices: list[int], have: bytes) -> None:
    """A peer's answer to ["get", indices]: the header with its have-map, then each chunk of `data`."""
    chunks = [data[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES] for i in indices]
    stream.reply(canonical(["chunks", indices, have]), *chunks)


def _download(
    requester: MemoryPeers,
    chunk_list: ChunkList,
    peers: list[ID],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Download, FetchReport]:
    """A download of `chunk_list` from `peers` (all connected, in that order) into a store in tmp_path."""
    store = MediaStore(tmp_path / "store")

    async def open_progress(chunks: ChunkList) -> Progress:
        return Progress(store.open_partial(chunks))

    # the virtual clock would jump to the test's deadline while a worker thread stores the file
    monkeypatch.setattr(trio.to_thread, "run_sync", _inline)
    report = FetchReport(chunk_list.content_id, tmp_path / "unused")
    candidates = [(p, True) for p in peers]
    return Download(requester, chunk_list.content_id, report, lambda: candidates, open_progress), report


async def test_a_want_leaves_out_chunks_on_their_way_from_another_peer_until_their_request_is_slow(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer with nothing to offer is not asked to report chunks already asked of another: its map
    would cost a message at each end and change nothing. Once that request has waited
    ENDGAME_AFTER_SEC, the want names them, the peer's map answers it, and the endgame fetches
    them from it."""
    data = bytes(range(256)) * (2 * CHUNK_BYTES // 256)
    chunk_list = ChunkList.of_bytes(data)
    full, empty = encode_have_map([True, True]), encode_have_map([False, False])
    stalling, late = ID(b"stalling-peer"), ID(b"late-peer")
    gets: dict[ID, list] = {stalling: [], late: []}
    wants: list[tuple[float, list[bool]]] = []

    def never_answers(stream: MemoryStream, message: list) -> None:
        if message[0] == "get":
            gets[stalling].append((trio.current_time(), message[1]))

    def answers_wants(stream: MemoryStream, message: list) -> None:
        if message[0] == "want":  # it has nothing yet; from now on, everything
            wants.append((trio.current_time(), decode_have_map(message[1], 2)))
            stream.reply(canonical(["have", full]))
        elif message[0] == "get":
            gets[late].append((trio.current_time(), message[1]))
            _reply_chunks(stream, data, message[1], full)

    requester = MemoryPeers(MediaSettings(parallel_providers=2, chunks_per_request=2, request_timeout_sec=30))
    requester.peers[stalling] = (["ok", chunk_list.encode(), full], never_answers)
    requester.peers[late] = (["ok", chunk_list.encode(), empty], answers_wants)
    download, report = _download(requester, chunk_list, [stalling, late], tmp_path, monkeypatch)
    with trio.fail_after(25):  # within the 30 s request timeout: the stalling peer is never dropped
        path = await download.run()

    assert path.read_bytes() == data and not requester.violations
    [(asked_at, asked)] = gets[stalling]
    assert sorted(asked) == [0, 1]
    [(wanted_at, need)] = wants  # one want, sent once the request to the other peer was slow
    assert wanted_at - asked_at >= ENDGAME_AFTER_SEC
    assert need == [True, True]
    assert sorted(i for _, chunks in gets[late] for i in chunks) == [0, 1]  # the endgame's copies
    assert report.bytes_from[late] == len(data)
    story = [what for _, peer, what in report.events if peer == str(late)]  # the report tells it
    assert story[:3] == ["open", "ok, has 0", "want 2"] and story[3] == "have 2"
    assert [what for what in story if what.startswith("endgame")] and story[-2].startswith("chunks")
    assert story[-1] == "session ended"


@pytest.mark.parametrize("idle", ["silent", "repeats_its_empty_map"])
async def test_a_peer_without_news_holds_a_session_place_for_dial_after_sec_only(
    idle: str, tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every session costs both ends about ten messages, so a download with two request slots opens
    two sessions, not one per neighbour: a neighbour with nothing to offer yet counts, as it will
    say when it has something. But only for DIAL_AFTER_SEC after its last news: one that stays
    silent (it never gets anything, or lies), or sends the same empty map again and again, loses
    its place to the next peer, even while the other session keeps delivering."""
    count = 8
    data = bytes(range(256)) * (count * CHUNK_BYTES // 256)
    chunk_list = ChunkList.of_bytes(data)
    full, empty = encode_have_map([True] * count), encode_have_map([False] * count)
    peers = [ID(f"peer-{i}".encode()) for i in range(5)]
    opened: dict[ID, float] = {}

    async def slowly(stream: MemoryStream, indices: list[int]) -> None:
        await trio.sleep(0.3)
        _reply_chunks(stream, data, indices, full)

    async with trio.open_nursery() as nursery:

        def steady(stream: MemoryStream, message: list) -> None:  # a chunk every 0.3 s: news flows
            if message[0] == "get":
                nursery.start_soon(slowly, stream, message[1])

        async def repeat_empty_map(stream: MemoryStream) -> None:
            while True:
                await trio.sleep(0.1)
                stream.reply(canonical(["have", empty]))

        def without_news(stream: MemoryStream, message: list) -> None:
            if message[0] == "want" and idle == "repeats_its_empty_map":
                nursery.start_soon(repeat_empty_map, stream)  # else its want is never answered

        def prompt(stream: MemoryStream, message: list) -> None:
            if message[0] == "get":
                _reply_chunks(stream, data, message[1], full)

        settings = MediaSettings(parallel_providers=2, chunks_per_request=1, request_timeout_sec=30)
        requester = MemoryPeers(settings)
        requester.peers[peers[0]] = (["ok", chunk_list.encode(), full], steady)
        requester.peers[peers[1]] = (["ok", chunk_list.encode(), empty], without_news)
        for peer in peers[2:]:
            requester.peers[peer] = (["ok", chunk_list.encode(), full], prompt)
        request = requester.request

        async def recording_request(peer: ID, message: list) -> tuple[MemoryStream, list]:
            opened[peer] = trio.current_time()
            return await request(peer, message)

        requester.request = recording_request  # type: ignore[method-assign]
        download, report = _download(requester, chunk_list, peers, tmp_path, monkeypatch)
        with trio.fail_after(25):
            path = await download.run()
        nursery.cancel_scope.cancel()

    assert path.read_bytes() == data and not requester.violations
    assert set(opened) == {peers[0], peers[1], peers[2]}  # two at first, and one for the idle one
    assert opened[peers[0]] == opened[peers[1]] == 0
    assert opened[peers[2]] == DIAL_AFTER_SEC  # while the steady peer was still delivering
    assert report.bytes_from[peers[0]] > 0 and report.bytes_from[peers[2]] > 0


async def test_a_session_still_opening_when_the_file_is_whole_does_not_hold_the_download(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is whole while a second session is still opening: it is cancelled, and the download
    returns once the open session has ended. It used to open while the download waited for that end,
    and stay open until CLOSE_TIMEOUT_SEC (in a 20-node spread, the last node finished 1.6 s after
    the others, its file stored all along)."""
    data = bytes(range(256)) * (2 * CHUNK_BYTES // 256)
    chunk_list = ChunkList.of_bytes(data)
    full = encode_have_map([True, True])
    prompt_peer, slow_peer = ID(b"prompt-peer"), ID(b"slow-to-open-peer")
    slow_open_cancelled: list[float] = []

    def prompt(stream: MemoryStream, message: list) -> None:
        if message[0] == "get":
            _reply_chunks(stream, data, message[1], full)

    async with trio.open_nursery() as nursery:

        class EndsLater(MemoryStream):
            """Its end comes 1.5 s after ours, as a busy peer's would."""

            async def close(self) -> None:
                if not getattr(self, "closing", False):
                    self.closing = True
                    nursery.start_soon(self._end_later)

            async def _end_later(self) -> None:
                await trio.sleep(1.5)
                await super().close()

        async def request(peer: ID, message: list) -> tuple[MemoryStream, list]:
            if peer == prompt_peer:
                return EndsLater(prompt), ["ok", chunk_list.encode(), full]
            try:
                await trio.sleep(1.0)  # its answer to "watch" comes after the file is whole
            except trio.Cancelled:
                slow_open_cancelled.append(trio.current_time())
                raise
            return MemoryStream(prompt), ["ok", chunk_list.encode(), full]

        requester = MemoryPeers(MediaSettings(parallel_providers=2, chunks_per_request=2))
        requester.request = request  # type: ignore[method-assign]
        download, report = _download(requester, chunk_list, [prompt_peer, slow_peer], tmp_path, monkeypatch)
        path = await download.run()
        returned_at = trio.current_time()

    assert path.read_bytes() == data and report.bytes_from[prompt_peer] == len(data)
    assert returned_at == 1.5  # the open session's end, not CLOSE_TIMEOUT_SEC
    assert slow_open_cancelled == [0.0]


async def test_a_reports_story_is_bounded(tmp_path: Path) -> None:
    """A download may run long: its report keeps the first MAX_REPORT_EVENTS events and counts the rest."""
    report = FetchReport(b"\x00" * 32, tmp_path / "unused")
    for i in range(MAX_REPORT_EVENTS + 5):
        report.note(i * 0.001, ID(b"peer"), "get [0]")
    assert len(report.events) == MAX_REPORT_EVENTS and report.events_dropped == 5
    assert report.events[1] == (0.001, str(ID(b"peer")), "get [0]")
