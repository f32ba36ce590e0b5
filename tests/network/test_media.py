"""Slot media between real hosts: chunk lists, verification, many providers, failures."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import random
from pathlib import Path

import cbor2
import pytest
import trio
from libp2p.network.stream.exceptions import StreamReset

from consensus.messages import canonical
from network.faults import FaultPlan
from network.media.content import CHUNK_BYTES, ChunkList, decode_have_map, encode_have_map
from network.media.store import MediaStore
from network.media.transfer import PROTOCOL, FetchError, MediaService, read_frame, write_frame
from network.settings import MediaSettings
from network.streams import ProviderUnavailable
from tests.network.conftest import settings, swarm, wait_for

pytestmark = pytest.mark.trio


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def services(sw, tmp_path: Path) -> list[MediaService]:
    return [MediaService(h, MediaStore(tmp_path / f"store{i}")) for i, h in enumerate(sw.hosts)]


async def test_a_5_mb_file_fetched_by_9_peers_at_once_is_shared_among_them(tmp_path) -> None:
    """Every fetcher knows only the first holder; they swarm: chunks come from each other too."""
    data = payload(5 * 1024 * 1024)
    one_upload = MediaSettings(max_uploads=1)  # the first holder serves one request at a time
    async with swarm(10, net_settings=lambda i: settings(media=one_upload)) as sw:
        media = services(sw, tmp_path)
        cid = media[0].store.add_bytes(data)
        reports = {}

        async def fetch(i: int) -> None:
            media[i].add_provider(cid, sw.hosts[0].peer_id)  # as the media-have gossip would tell it
            reports[i] = await media[i].fetch(cid)

        async with trio.open_nursery() as nursery:
            for i in range(1, 10):
                nursery.start_soon(fetch, i)
        for i in range(1, 10):
            assert reports[i].path.read_bytes() == data
            assert (
                hashlib.sha256(media[i].store.path(cid).read_bytes()).digest()
                == hashlib.sha256(data).digest()
            )
            assert sum(reports[i].bytes_from.values()) == len(
                data
            )  # each chunk counted once, from its first copy
        served = [s.server.stats.bytes_served for s in media]
        assert sum(served) >= 9 * len(data)
        assert served[0] < 9 * len(data)  # the first holder did not upload every copy
        assert sum(1 for b in served[1:] if b > 0) >= 3  # fetchers served each other mid-download
        assert (
            media[0].server.stats.requests["busy"] + sum(s.server.stats.requests["busy"] for s in media) > 0
        )


async def _get(stream, chunks: list[int]) -> list:
    """Ask a session for chunks; the answer header without the have-map a chunks answer carries."""
    await write_frame(stream, canonical(["get", chunks]))
    return cbor2.loads(await read_frame(stream, 64 * 1024))[:2]


async def _want(stream, need: list[bool]) -> None:
    await write_frame(stream, canonical(["want", encode_have_map(need)]))


async def _next_map(stream, count: int) -> list[bool]:
    with trio.fail_after(5):
        message = cbor2.loads(await read_frame(stream, 1024))
    assert message[0] == "have"
    return decode_have_map(message[1], count)


async def test_a_download_in_progress_serves_its_verified_chunks_and_says_when_it_has_a_wanted_one(
    tmp_path,
) -> None:
    from network.media.swarm import Progress

    data = payload(6 * CHUNK_BYTES, seed=7)
    chunk_list = ChunkList.of_bytes(data)
    cid = chunk_list.content_id
    T, F = True, False
    async with swarm(2) as sw:
        media = services(sw, tmp_path)
        partial = media[0].store.open_partial(chunk_list)
        progress = media[0].downloads[cid] = Progress(partial)

        def verify(i: int) -> None:
            partial.write_chunk(i, data[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES])
            progress.verified()

        for i in (0, 2):
            verify(i)
        peer = sw.hosts[0].peer_id
        server = media[0].server

        stream, status = await media[1].request(peer, ["watch", cid])
        assert status[1] == chunk_list.encode()
        assert decode_have_map(status[2], 6) == [T, F, T, F, F, F]
        verify(5)  # nobody asked: no push; the next chunks answer carries the news
        await write_frame(stream, canonical(["get", [2, 0]]))
        answer = cbor2.loads(await read_frame(stream, 64 * 1024))
        assert answer[:2] == ["chunks", [2, 0]]
        assert decode_have_map(answer[2], 6) == [T, F, T, F, F, T]
        assert await read_frame(stream, CHUNK_BYTES) == data[2 * CHUNK_BYTES : 3 * CHUNK_BYTES]
        assert await read_frame(stream, CHUNK_BYTES) == data[:CHUNK_BYTES]
        assert await _get(stream, [0, 1]) == ["missing"]  # chunk 1 is not verified there yet
        assert server.stats.have_pushes == 0

        await _want(stream, [F, T, F, T, F, F])  # tell me when you have 1 or 3
        assert await _get(stream, [1]) == ["missing"]  # answered in order: the want is registered
        verify(4)  # not wanted: still nothing
        verify(3)
        assert await _next_map(stream, 6) == [T, F, T, T, T, T]
        await wait_for(lambda: server.stats.have_pushes == 1)
        await _want(stream, [F, F, F, F, T, F])  # one it has already: answered at once
        assert await _next_map(stream, 6) == [T, F, T, T, T, T]

        await _want(stream, [F, T, F, F, F, F])  # the download completes: its last chunk was wanted
        assert await _get(stream, [1]) == ["missing"]
        verify(1)
        assert await _next_map(stream, 6) == [T] * 6
        assert await _get(stream, [1]) == ["chunks", [1]]
        assert await read_frame(stream, CHUNK_BYTES) == data[CHUNK_BYTES : 2 * CHUNK_BYTES]
        await stream.close()  # the fetcher ends the session; so does the server
        with pytest.raises(ProviderUnavailable, match="stream closed"):
            await read_frame(stream, 1)
        await wait_for(lambda: server.stats.requests["session"] == 1)
        assert server.stats.requests["bad_request"] == 0
        await wait_for(lambda: server.stats.have_pushes == 2)  # the answer given at once was no push

        for bad in (encode_have_map([T] * 6) + b"\x00", b"\x03", 5, [1]):  # wrong length, bits past 6
            stream, _ = await media[1].request(peer, ["watch", cid])
            await write_frame(stream, canonical(["want", bad]))
            with pytest.raises((ProviderUnavailable, StreamReset)):  # the server resets the session
                await _get(stream, [0])
        await wait_for(lambda: server.stats.requests["bad_request"] == 4)


async def test_a_provider_at_its_upload_limit_answers_busy(tmp_path) -> None:
    data = payload(40 * CHUNK_BYTES, seed=8)
    one_upload = MediaSettings(max_uploads=1)
    async with swarm(2, net_settings=lambda i: settings(media=one_upload)) as sw:
        media = services(sw, tmp_path)
        cid = media[0].store.add_bytes(data)
        peer = sw.hosts[0].peer_id
        # a reader that does not read holds the one upload slot (flow control stops the writer)
        held, _ = await media[1].request(peer, ["watch", cid])
        await write_frame(held, canonical(["get", list(range(40))]))
        other, _ = await media[1].request(peer, ["watch", cid])
        assert await _get(other, [0]) == ["busy"]
        assert media[0].server.stats.requests["busy"] == 1
        await held.reset()
        await wait_for(lambda: media[0].server.stats.requests["stream_error"] == 1)
        assert await _get(other, [1]) == ["chunks", [1]]  # the slot is free again
        assert await read_frame(other, CHUNK_BYTES) == data[CHUNK_BYTES : 2 * CHUNK_BYTES]


async def test_a_malformed_request_inside_a_session_is_counted_and_costs_only_that_session(tmp_path) -> None:
    data = payload(CHUNK_BYTES, seed=11)
    async with swarm(2) as sw:
        media = services(sw, tmp_path)
        cid = media[0].store.add_bytes(data)
        peer = sw.hosts[0].peer_id
        for bad in (["get", [1]], ["get", [2**70]], ["get", [float("nan")]], ["give", [0]], ["get"]):
            stream, _ = await media[1].request(peer, ["watch", cid])
            await write_frame(stream, canonical(bad))
            with pytest.raises((ProviderUnavailable, StreamReset)):  # the server resets the session
                await _get(stream, [0])
        await wait_for(lambda: media[0].server.stats.requests["bad_request"] == 5)
        stream, _ = await media[1].request(peer, ["watch", cid])  # and serves the next one
        assert await _get(stream, [0]) == ["chunks", [0]]


async def test_one_peer_cannot_hold_every_session_slot(tmp_path) -> None:
    from network.media.transfer import MAX_SESSIONS_PER_PEER

    data = payload(CHUNK_BYTES, seed=10)
    async with swarm(3) as sw:
        media = services(sw, tmp_path)
        cid = media[0].store.add_bytes(data)
        peer = sw.hosts[0].peer_id
        held = [(await media[1].request(peer, ["watch", cid]))[0] for _ in range(MAX_SESSIONS_PER_PEER)]
        with pytest.raises(ProviderUnavailable, match="busy"):
            await media[1].request(peer, ["watch", cid])
        stream, _ = await media[2].request(peer, ["watch", cid])  # another peer still gets one
        assert await _get(stream, [0]) == ["chunks", [0]]
        await held[0].close()  # a session ended frees its place
        with trio.fail_after(10):
            while True:
                with contextlib.suppress(ProviderUnavailable):
                    await media[1].request(peer, ["watch", cid])
                    break
                await trio.sleep(0.05)


async def _serve_session(stream, chunk_list: ChunkList, answer) -> None:
    """A hand-written provider: the right list and a full have-map, then `answer(indices)` per get."""
    request = cbor2.loads(await read_frame(stream, 4096))
    assert request[0] == "watch"
    await write_frame(
        stream, canonical(["ok", chunk_list.encode(), encode_have_map([True] * chunk_list.count)])
    )
    while True:
        request = cbor2.loads(await read_frame(stream, 4096))
        if request[0] == "get":  # a want needs no answer: the map says it has every chunk
            await answer(request[1])


async def test_endgame_asks_a_second_peer_and_the_stall_is_no_failure(tmp_path) -> None:
    """The last chunk asked of a provider that stalls comes from another peer; the stall costs nothing."""
    data = payload(2 * CHUNK_BYTES, seed=9)
    chunk_list = ChunkList.of_bytes(data)
    stalled = trio.Event()

    async def stall(indices) -> None:
        stalled.set()
        await trio.sleep_forever()  # until the fetcher resets the session

    async def stalling(stream) -> None:
        with contextlib.suppress(Exception):
            await _serve_session(stream, chunk_list, stall)

    two = MediaSettings(parallel_providers=2, chunks_per_request=1, request_timeout_sec=30)
    async with swarm(3, net_settings=lambda i: settings(media=two)) as sw:
        media = services(sw, tmp_path)
        sw.hosts[0].set_stream_handler(PROTOCOL, stalling)
        cid = media[1].store.add_bytes(data)
        with trio.fail_after(20):  # far below the 30 s request timeout that would drop host 0
            report = await media[2].fetch(cid, [sw.hosts[0].peer_id, sw.hosts[1].peer_id])
        assert stalled.is_set()  # host 0 was asked for a chunk
        assert report.path.read_bytes() == data
        assert report.bytes_from[sw.hosts[1].peer_id] == len(data)
        assert sw.hosts[0].peer_id not in report.failures


async def test_a_provider_killed_mid_transfer_and_the_transfer_completes_from_another(tmp_path) -> None:
    data = payload(6 * CHUNK_BYTES + 12345)  # 7 chunks, the last one short
    plan = FaultPlan()
    slow = MediaSettings(parallel_providers=1, chunks_per_request=1, request_timeout_sec=5)
    async with swarm(3, faults=plan, net_settings=lambda i: settings(media=slow)) as sw:
        media = services(sw, tmp_path)
        cid = media[0].store.add_bytes(data)
        plan.set_link(sw.hosts[0].peer_id, sw.hosts[2].peer_id, delay_sec=0.3)  # host 0 serves slowly
        result = {}

        async def fetch() -> None:
            result["report"] = await media[2].fetch(cid, [sw.hosts[0].peer_id])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            # one chunk per request, one request at a time: a second chunk served means the first arrived
            await wait_for(lambda: media[0].server.stats.bytes_served >= 2 * CHUNK_BYTES)
            media[1].store.add_bytes(data)  # a neighbour that said "missing" has it now
            sw.kill(0)
        report = result["report"]
        assert report.path.read_bytes() == data
        assert report.bytes_from[sw.hosts[0].peer_id] >= CHUNK_BYTES  # it did serve part of it
        assert report.bytes_from[sw.hosts[1].peer_id] > 0  # and the rest came from host 1
        assert sw.hosts[0].peer_id in report.failures


async def _evil_provider(sw, index: int, data: bytes, behaviour: str) -> None:
    """Host `index` opens sessions with the right chunk list, then misbehaves as `behaviour` says."""
    chunk_list = ChunkList.of_bytes(data)

    async def answer_wrongly(stream, indices) -> None:
        await write_frame(stream, canonical(["chunks", indices, encode_have_map([True] * chunk_list.count)]))
        for i in indices:
            n = chunk_list.chunk_length(i)
            await write_frame(stream, b"\x00" * (n if behaviour == "garbage" else n + 1))

    async def handle(stream) -> None:
        with contextlib.suppress(Exception):  # the fetcher resets the session once it sees the lie
            if behaviour == "bad-have":
                await read_frame(stream, 4096)
                have = encode_have_map([True] * chunk_list.count) + b"\x00"  # one byte too many
                await write_frame(stream, canonical(["ok", chunk_list.encode(), have]))
            elif behaviour == "unasked":
                await read_frame(stream, 4096)
                have = encode_have_map([True] * chunk_list.count)
                await write_frame(stream, canonical(["ok", chunk_list.encode(), have]))
                await write_frame(stream, canonical(["chunks", [99], have]))  # an answer to nothing
            else:
                await _serve_session(stream, chunk_list, functools.partial(answer_wrongly, stream))
            await trio.sleep(5)

    sw.hosts[index].set_stream_handler(PROTOCOL, handle)


@pytest.mark.parametrize("behaviour", ["garbage", "oversize", "bad-have", "unasked"])
async def test_a_provider_sending_bad_chunks_is_cut_off_penalised_and_replaced(tmp_path, behaviour) -> None:
    """The liar is the only holder until it is caught; then a neighbour gets the file and the download
    finishes from it (a neighbour that said "missing" is asked again)."""
    data = payload(3 * CHUNK_BYTES + 100, seed=1)
    async with swarm(3) as sw:
        media = services(sw, tmp_path)
        await _evil_provider(sw, 0, data, behaviour)
        cid = ChunkList.of_bytes(data).content_id
        liar = sw.hosts[0].peer_id
        result = {}

        async def fetch() -> None:
            result["report"] = await media[2].fetch(cid, [liar])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            await wait_for(lambda: sw.hosts[2].reputation.score(liar) < 0)
            media[1].store.add_bytes(data)
        report = result["report"]
        assert report.path.read_bytes() == data
        assert report.bytes_from[sw.hosts[1].peer_id] == len(data)
        assert report.failures[liar].startswith("cut off")
        assert sw.hosts[2].reputation.score(liar) < settings().gossip.graylist_score
        assert sw.hosts[2].router.scorer.is_graylisted(liar, ["any"])


async def test_no_good_provider_gives_a_clear_error_and_nothing_is_stored(tmp_path) -> None:
    data = payload(2 * CHUNK_BYTES, seed=2)
    async with swarm(3, topology=[(0, 1)]) as sw:  # host 2 knows no one
        media = services(sw, tmp_path)
        await _evil_provider(sw, 0, data, "garbage")
        cid = ChunkList.of_bytes(data).content_id
        with pytest.raises(FetchError, match="undelivered"):
            await media[1].fetch(cid, [sw.hosts[0].peer_id])
        assert not media[1].store.has(cid)
        with pytest.raises(FetchError, match="no provider known"):
            await media[2].fetch(b"\x05" * 32)
        with pytest.raises(FetchError, match="no provider gave a valid chunk list"):
            await media[1].fetch(b"\x05" * 32)  # its neighbour's list is not that content's


async def test_files_over_the_size_limit_are_refused_before_download(tmp_path) -> None:
    data = payload(3 * CHUNK_BYTES, seed=3)
    small = MediaSettings(max_file_bytes=CHUNK_BYTES)
    async with swarm(2, net_settings=lambda i: settings(media=small)) as sw:
        media = services(sw, tmp_path)
        cid = media[0].store.add_bytes(data)
        with pytest.raises(FetchError, match="exceeds media.max_file_bytes"):
            await media[1].fetch(cid, [sw.hosts[0].peer_id])


async def test_an_interrupted_download_resumes_asking_only_for_missing_chunks(tmp_path) -> None:
    data = payload(6 * CHUNK_BYTES, seed=4)
    async with swarm(2) as sw:
        media = services(sw, tmp_path)
        cid = media[0].store.add_bytes(data)
        partial = media[1].store.open_partial(ChunkList.of_bytes(data))
        for i in (0, 2, 3):  # what a crashed earlier run left on disk
            partial.write_chunk(i, data[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES])
        report = await media[1].fetch(cid, [sw.hosts[0].peer_id])
        assert report.resumed_chunks == 3
        assert report.bytes_from[sw.hosts[0].peer_id] == 3 * CHUNK_BYTES
        assert report.path.read_bytes() == data


async def test_a_provider_heard_of_through_gossip_is_dialled_at_the_address_it_announced(tmp_path) -> None:
    from network.topics import Topic

    data = payload(CHUNK_BYTES + 7, seed=6)
    async with swarm(3, topology=[(0, 1), (1, 2)]) as sw:  # host 2 has never met host 0
        media = services(sw, tmp_path)
        cid = media[0].store.add_bytes(data)
        await wait_for(
            lambda: all(
                len(h.router.mesh.get(Topic.MEDIA_HAVE.name_for(sw.context.chain_id), ())) for h in sw.hosts
            )
        )
        await sw.gossips[0].publish(Topic.MEDIA_HAVE, media[0].have_message(cid))
        with trio.fail_after(10):
            have = await sw.gossips[2].inbox(Topic.MEDIA_HAVE).receive()
        assert have.origin == sw.hosts[0].peer_id and have.message.cid == cid
        media[2].add_provider(have.message.cid, have.origin, have.message.addrs)
        report = await media[2].fetch(cid)
        assert report.path.read_bytes() == data and report.bytes_from[sw.hosts[0].peer_id] == len(data)
        assert sw.hosts[2].is_connected(sw.hosts[0].peer_id)


async def test_providers_heard_of_are_bounded_whatever_peers_gossip(tmp_path: Path) -> None:
    """Any peer can gossip "have" for content ids it makes up: what the node remembers stays bounded."""
    from types import SimpleNamespace

    from libp2p.peer.id import ID

    from network.media.transfer import MAX_PROVIDED_CIDS, MAX_PROVIDERS_PER_CID

    me = ID(b"me")
    net = SimpleNamespace(peer_id=me, settings=settings(), set_stream_handler=lambda *a: None)
    service = MediaService(net, MediaStore(tmp_path / "store"))  # type: ignore[arg-type]
    for i in range(3 * MAX_PROVIDED_CIDS):
        service.add_provider(hashlib.sha256(b"%d" % i).digest(), ID(b"peer-%d" % (i % 7)))
    assert len(service.providers) == MAX_PROVIDED_CIDS
    newest = hashlib.sha256(b"%d" % (3 * MAX_PROVIDED_CIDS - 1)).digest()
    assert newest in service.providers and hashlib.sha256(b"0").digest() not in service.providers
    for j in range(3 * MAX_PROVIDERS_PER_CID):
        service.add_provider(newest, ID(b"crowd-%d" % j))
    service.add_provider(newest, me)  # never its own provider
    assert len(service.providers[newest]) == MAX_PROVIDERS_PER_CID and me not in service.providers[newest]


async def test_a_holder_announces_only_while_few_other_holders_are_known(tmp_path: Path) -> None:
    """media-have costs every node a gossip delivery: once `announce_below_holders` others are known
    (from gossip, or the directors that announced making it), one more announcement tells nobody
    anything they need."""
    from types import SimpleNamespace

    from libp2p.peer.id import ID

    me = ID(b"me")
    net = SimpleNamespace(peer_id=me, settings=settings(media=MediaSettings(announce_below_holders=3)))
    net.set_stream_handler = lambda *a: None
    service = MediaService(net, MediaStore(tmp_path / "store"))  # type: ignore[arg-type]
    cid, other = hashlib.sha256(b"slot").digest(), hashlib.sha256(b"other").digest()
    service.add_provider(cid, ID(b"gossiped-1"))
    service.add_provider(other, ID(b"gossiped-2"))  # another file's holders do not count
    assert service.worth_announcing(cid, [ID(b"director-1"), me])  # two others known (itself not counted)
    assert service.worth_announcing(cid, [ID(b"gossiped-1")])  # one holder named twice counts once
    assert not service.worth_announcing(cid, [ID(b"director-1"), ID(b"director-2")])
    service.add_provider(cid, ID(b"gossiped-3"))
    service.add_provider(cid, ID(b"gossiped-4"))
    assert not service.worth_announcing(cid) and service.worth_announcing(other)


async def test_a_chunk_verified_before_the_have_pusher_first_waits_is_still_pushed(tmp_path) -> None:
    """The pusher waits for the download's next change; a chunk the session wants that verified
    before the pusher first ran (or while it was sending) was a change nobody waited for, and the
    want went unanswered until another chunk verified."""
    from network.media.swarm import Progress
    from network.media.transfer import MediaServer

    data = payload(3 * CHUNK_BYTES, seed=12)
    chunk_list = ChunkList.of_bytes(data)
    cid = chunk_list.content_id
    store = MediaStore(tmp_path / "store")
    partial = store.open_partial(chunk_list)
    progress = Progress(partial)
    server = MediaServer(store, MediaSettings(), {cid: progress})
    pushed = trio.Event()

    class Fetcher:
        """Watches and wants chunk 1; chunk 1 verifies the moment the want has been read, while the
        server has not yielded since it started the pusher (this stream's reads never checkpoint)."""

        def __init__(self) -> None:
            frames = [canonical(["watch", cid]), canonical(["want", encode_have_map([False, True, False])])]
            self.incoming = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
            self.sent: list[bytes] = []

        async def read(self, n: int) -> bytes:
            if not self.incoming:
                if not partial.have[1]:
                    partial.write_chunk(1, data[CHUNK_BYTES : 2 * CHUNK_BYTES])
                    progress.verified()
                await trio.sleep_forever()
            part, self.incoming = self.incoming[:n], self.incoming[n:]
            return part

        async def write(self, data: bytes) -> None:
            self.sent.append(data)
            if cbor2.loads(data[4:])[0] == "have":
                pushed.set()

        async def reset(self) -> None:
            pass

    stream = Fetcher()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, stream)
        with trio.fail_after(5):
            await pushed.wait()
        nursery.cancel_scope.cancel()
    assert server.stats.have_pushes == 1
    assert cbor2.loads(stream.sent[-1][4:]) == ["have", encode_have_map([False, True, False])]


async def test_a_have_push_to_a_fetcher_that_reads_nothing_is_counted_as_a_slow_peer(tmp_path) -> None:
    """The have pusher's failure ends the session as the answerer's does: a push the fetcher never
    reads times out (a slow or hostile peer: `bad_request`), not a library stream error."""
    from network.media.swarm import Progress
    from network.media.transfer import MediaServer

    data = payload(3 * CHUNK_BYTES, seed=11)
    chunk_list = ChunkList.of_bytes(data)
    cid = chunk_list.content_id
    store = MediaStore(tmp_path / "store")
    partial = store.open_partial(chunk_list)
    progress = Progress(partial)
    server = MediaServer(store, MediaSettings(request_timeout_sec=0.2), {cid: progress})

    class Stalled:
        """A fetcher that watches, wants chunk 1, and then reads nothing (its window stays full)."""

        def __init__(self) -> None:
            frames = [canonical(["watch", cid]), canonical(["want", encode_have_map([False, True, False])])]
            self.incoming = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
            self.sent: list[bytes] = []
            self.reset_called = False
            self.all_read = trio.Event()  # the server read the want and waits for the next request

        async def read(self, n: int) -> bytes:
            if not self.incoming:
                self.all_read.set()
                await trio.sleep_forever()
            part, self.incoming = self.incoming[:n], self.incoming[n:]
            return part

        async def write(self, data: bytes) -> None:
            if self.sent:  # the "ok" went out; nothing more is read
                await trio.sleep_forever()
            self.sent.append(data)

        async def reset(self) -> None:
            self.reset_called = True

    stream = Stalled()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, stream)
        await stream.all_read.wait()  # the session is open and its want registered
        partial.write_chunk(1, data[CHUNK_BYTES : 2 * CHUNK_BYTES])
        progress.verified()  # the push is due, and stalls
    assert server.stats.requests["bad_request"] == 1 and not server.stats.requests["stream_error"]
    assert stream.reset_called and cbor2.loads(stream.sent[0][4:])[0] == "ok"
