"""Slot media between real hosts: chunk lists, verification, many providers, failures."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import trio

from consensus.messages import canonical
from network.faults import FaultPlan
from network.media.content import CHUNK_BYTES, ChunkList
from network.media.store import MediaStore
from network.media.transfer import PROTOCOL, FetchError, MediaService, read_frame, write_frame
from network.settings import MediaSettings
from tests.network.conftest import settings, swarm, wait_for

pytestmark = pytest.mark.trio


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def services(sw, tmp_path: Path) -> list[MediaService]:
    return [MediaService(h, MediaStore(tmp_path / f"store{i}")) for i, h in enumerate(sw.hosts)]


async def test_a_5_mb_file_spreads_to_9_peers_verified_and_served_by_those_that_have_it(tmp_path) -> None:
    data = payload(5 * 1024 * 1024)
    async with swarm(10) as sw:
        media = services(sw, tmp_path)
        cid = media[0].store.add_bytes(data)
        have = [sw.hosts[0].peer_id]

        async def fetch(i: int) -> None:
            for peer in have:  # as the media-have gossip would tell it
                media[i].add_provider(cid, peer)
            report = await media[i].fetch(cid)
            assert report.path.read_bytes() == data
            have.append(sw.hosts[i].peer_id)  # it serves now: later fetchers may use it

        # three waves, each fetching from everyone that had the file before it
        for wave in ([1, 2, 3], [4, 5, 6], [7, 8, 9]):
            async with trio.open_nursery() as nursery:
                for i in wave:
                    nursery.start_soon(fetch, i)
        for i in range(1, 10):
            assert media[i].store.has(cid)
            assert (
                hashlib.sha256(media[i].store.path(cid).read_bytes()).digest()
                == hashlib.sha256(data).digest()
            )
        served = [s.server.stats.bytes_served for s in media]
        assert sum(served) == 9 * len(data)
        assert sum(1 for b in served[1:] if b > 0) >= 3  # the load spread beyond the first provider


async def test_a_provider_killed_mid_transfer_and_the_transfer_completes_from_another(tmp_path) -> None:
    data = payload(6 * CHUNK_BYTES + 12345)  # 7 chunks, the last one short
    plan = FaultPlan()
    slow = MediaSettings(parallel_providers=1, chunks_per_request=1, request_timeout_sec=5)
    async with swarm(3, faults=plan, net_settings=lambda i: settings(media=slow)) as sw:
        media = services(sw, tmp_path)
        cid = media[0].store.add_bytes(data)
        media[1].store.add_bytes(data)
        plan.set_link(sw.hosts[0].peer_id, sw.hosts[2].peer_id, delay_sec=0.3)  # host 0 serves slowly
        result = {}

        async def fetch() -> None:
            result["report"] = await media[2].fetch(cid, [sw.hosts[0].peer_id, sw.hosts[1].peer_id])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            # one chunk per request, one request at a time: a second chunk served means the first arrived
            await wait_for(lambda: media[0].server.stats.bytes_served >= 2 * CHUNK_BYTES)
            sw.kill(0)
        report = result["report"]
        assert report.path.read_bytes() == data
        assert report.bytes_from[sw.hosts[0].peer_id] >= CHUNK_BYTES  # it did serve part of it
        assert report.bytes_from[sw.hosts[1].peer_id] > 0  # and the rest came from host 1
        assert sw.hosts[0].peer_id in report.failures


async def _evil_provider(sw, index: int, data: bytes, behaviour: str) -> None:
    """Host `index` answers the media protocol with the right chunk list and wrong chunks."""
    chunk_list = ChunkList.of_bytes(data)

    async def handle(stream) -> None:
        request = __import__("cbor2").loads(await read_frame(stream, 4096))
        if request[0] == "list":
            await write_frame(stream, canonical(["ok", chunk_list.encode()]))
        else:
            await write_frame(stream, canonical(["ok"]))
            for i in request[2]:
                n = chunk_list.chunk_length(i)
                if behaviour == "garbage":
                    await write_frame(stream, b"\x00" * n)
                else:  # more than announced
                    await write_frame(stream, b"\x00" * (n + 1))
        await stream.close()

    sw.hosts[index].set_stream_handler(PROTOCOL, handle)


@pytest.mark.parametrize("behaviour", ["garbage", "oversize"])
async def test_a_provider_sending_bad_chunks_is_cut_off_penalised_and_replaced(tmp_path, behaviour) -> None:
    data = payload(3 * CHUNK_BYTES + 100, seed=1)
    one_each = MediaSettings(chunks_per_request=1)  # both providers get work from the start
    async with swarm(3, net_settings=lambda i: settings(media=one_each)) as sw:
        media = services(sw, tmp_path)
        await _evil_provider(sw, 0, data, behaviour)
        cid = media[1].store.add_bytes(data)
        report = await media[2].fetch(cid, [sw.hosts[0].peer_id, sw.hosts[1].peer_id])
        assert report.path.read_bytes() == data
        assert report.failures[sw.hosts[0].peer_id].startswith("cut off")
        assert sw.hosts[2].reputation.score(sw.hosts[0].peer_id) < settings().gossip.graylist_score
        assert sw.hosts[2].router.scorer.is_graylisted(sw.hosts[0].peer_id, ["any"])


async def test_no_good_provider_gives_a_clear_error_and_nothing_is_stored(tmp_path) -> None:
    data = payload(2 * CHUNK_BYTES, seed=2)
    async with swarm(2) as sw:
        media = services(sw, tmp_path)
        await _evil_provider(sw, 0, data, "garbage")
        cid = ChunkList.of_bytes(data).content_id
        with pytest.raises(FetchError, match="undelivered"):
            await media[1].fetch(cid, [sw.hosts[0].peer_id])
        assert not media[1].store.has(cid)
        with pytest.raises(FetchError, match="no provider known"):
            await media[1].fetch(b"\x05" * 32)
        with pytest.raises(FetchError, match="no provider gave a valid chunk list"):
            await media[1].fetch(b"\x05" * 32, [sw.hosts[0].peer_id])


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
