"""The media transfer protocol: sessions that carry a file's chunk list, have-maps and chunks.

Gossip caps messages at 1 MiB, so slot media moves on its own stream protocol.
A fetcher opens one stream (a session) per peer and file; every frame is
prefixed by its 4-byte big-endian length, every message is CBOR:

    fetcher: ["watch", cid]
    peer:    ["ok", chunk_list, have] | ["missing"] | ["busy"] (and the stream ends)
    then, in any order, until the fetcher closes its side or stays idle `watch_sec`:
    fetcher: ["get", [i, ...]]          one at a time; the next after the answer
    peer:    ["chunks", [i, ...], have] then one raw frame per chunk, in that order
             ["busy"]                   all `max_uploads` upload slots taken: ask later
             ["missing"]                it lacks one of them
    fetcher: ["want", need]             tell me when you have one of these chunks
    peer:    ["have", have]             once it has verified one of them

A have-map is one bit per chunk (`content.encode_have_map`); `need` is one too,
set for the chunks the fetcher lacks. A want is
answered by the peer's next have-map, pushed or carried by a chunks answer: a
peer still downloading tells a fetcher of its progress when the fetcher has a
use for it, not each time it verifies a chunk (every message costs py-libp2p
CPU at both ends; unasked-for pushes were four times the chunk requests).
Every node serves the chunks it has verified, of complete files and of
downloads in progress alike. Fetching is `swarm.Download`: sessions with
providers and neighbours, rarest chunks first, every list and chunk checked
against the content id; a peer that sends a wrong list, chunk or have-map, an
answer to nothing, or a frame longer than announced is cut off (stream reset)
and penalised.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from consensus.messages import canonical
from consensus.wire import DecodeError
from network.host import NetworkHost
from network.media.content import MAX_CHUNKS, ChunkList, decode_have_map, encode_have_map
from network.media.store import MediaStore
from network.media.swarm import Download, FetchError, FetchReport, Progress
from network.settings import MediaSettings
from network.streams import (
    ProtocolViolation,
    ProviderUnavailable,
    close,
    decode_list,
    read_frame,
    reset,
    write_frame,
    write_frames,
)
from network.topics import MAX_HAVE_ADDRS, encode_have

log = logging.getLogger(__name__)

PROTOCOL = "/icn/media/1.2.0"
PROVIDER_ADDR_TTL_SEC = 600
P_P2P = 0x01A5  # multiaddr code of /p2p/
MAX_REQUEST_BYTES = 2048
MAX_PROVIDED_CIDS = 1024  # content ids whose providers are remembered (about 12 hours of slots)
MAX_PROVIDERS_PER_CID = 64  # peers remembered per content id: more than any fetch asks
MAX_CHUNKS_PER_REQUEST = 256
MAX_RANKS = 4096  # (content id, peer) places remembered for ordering candidates
MAX_SESSIONS_PER_PEER = 8  # a fetcher needs one per file it fetches; a few files may overlap
MAX_STATUS_BYTES = MAX_CHUNKS * 34 + MAX_CHUNKS // 8 + 256  # a watch reply: chunk list and have-map

__all__ = ["PROTOCOL", "FetchError", "FetchReport", "MediaServer", "MediaService"]


# -- serving --------------------------------------------------------------------------------------
@dataclass
class ServerStats:
    bytes_served: int = 0
    requests: Counter = field(default_factory=Counter)
    have_pushes: int = 0  # have-maps pushed to answer a want later (not those sent at once, or with chunks)


class _Want:
    """A session's unanswered want: the chunks its fetcher asked to hear about (the reader sets
    it, the next have-map sent on the session answers it)."""

    def __init__(self) -> None:
        self.need: list[bool] | None = None

    def met_by(self, have: list[bool]) -> bool:
        return self.need is not None and any(h and n for h, n in zip(have, self.need, strict=True))


class MediaServer:
    """Answers sessions from the store and from downloads in progress (`downloads`)."""

    def __init__(
        self, store: MediaStore, settings: MediaSettings, downloads: dict[bytes, Progress] | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.downloads = {} if downloads is None else downloads
        self.stats = ServerStats()
        self._sessions = trio.Semaphore(settings.max_serving_streams)
        self._uploads = trio.Semaphore(settings.max_uploads)
        self._download_started = trio.Event()
        self._per_peer: Counter = Counter()  # open sessions by peer

    def download_started(self) -> None:
        """A download began here: sessions waiting for its content can be answered."""
        self._download_started.set()
        self._download_started = trio.Event()

    async def handle(self, stream: INetStream) -> None:
        try:
            await self._serve(stream)
        except (ProtocolViolation, ProviderUnavailable, trio.TooSlowError) as exc:
            self.stats.requests["bad_request"] += 1
            log.debug("media session failed: %s", exc)
            await reset(stream)
        except Exception as exc:  # a dying connection raises the library's own stream errors
            self.stats.requests["stream_error"] += 1
            log.debug("media stream error: %s", exc)
            await reset(stream)
        else:
            await close(stream)

    async def _serve(self, stream: INetStream) -> None:
        with trio.fail_after(self.settings.request_timeout_sec):
            raw = await read_frame(stream, MAX_REQUEST_BYTES)
        request = decode_list(raw, MAX_REQUEST_BYTES, "request")
        if request[0] != "watch" or len(request) != 2:
            raise ProtocolViolation(f"unknown request {request[0]!r} of {len(request)} items")
        cid = request[1]
        if not isinstance(cid, bytes) or len(cid) != 32:
            raise ProtocolViolation("content id must be 32 bytes")
        peer = getattr(getattr(stream, "muxed_conn", None), "peer_id", None)
        # one peer cannot take every slot; checked first, so a refusal takes no slot
        if self._per_peer[peer] >= MAX_SESSIONS_PER_PEER or not _take(self._sessions):
            self.stats.requests["busy"] += 1
            await self._send(stream, ["busy"])
            return
        self._per_peer[peer] += 1
        try:
            chunk_list, progress = await self._source(cid)
            if chunk_list is None:  # a fetch of its own may be about to start: its neighbours ask first
                with trio.move_on_after(self.settings.missing_wait_sec):
                    while (progress := self.downloads.get(cid)) is None:
                        await self._download_started.wait()
                if progress is None:
                    self.stats.requests["missing"] += 1
                    await self._send(stream, ["missing"])
                    return
                chunk_list = progress.partial.chunk_list
            self.stats.requests["session"] += 1
            await self._send(
                stream, ["ok", chunk_list.encode(), encode_have_map(_have(progress, chunk_list))]
            )
            writing = trio.Lock()  # a chunks answer and its frames go out whole, never split by a have
            want = _Want()
            failed: list[Exception] = []  # the first failure of either task ends the session
            async with trio.open_nursery() as nursery:
                # a failure is raised below, not wrapped in the nursery's group, so that `handle`
                # counts it as what it is (a have push to a fetcher that reads nothing: a slow peer)
                async def pushing() -> None:
                    assert progress is not None
                    try:
                        await self._push_have(stream, progress, want, writing)
                    except Exception as exc:
                        failed.append(exc)
                        nursery.cancel_scope.cancel()

                if progress is not None:
                    nursery.start_soon(pushing)
                try:
                    await self._answer(stream, cid, chunk_list, progress, want, writing)
                except Exception as exc:
                    failed.append(exc)
                nursery.cancel_scope.cancel()
            if failed:
                raise failed[0]
        finally:
            self._sessions.release()
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]

    async def _source(self, cid: bytes) -> tuple[ChunkList | None, Progress | None]:
        chunk_list = await trio.to_thread.run_sync(self.store.chunk_list, cid)
        if chunk_list is not None:
            return chunk_list, None
        progress = self.downloads.get(cid)
        return (progress.partial.chunk_list, progress) if progress is not None else (None, None)

    async def _send(self, stream: INetStream, message: list) -> None:
        with trio.fail_after(self.settings.request_timeout_sec):
            await write_frame(stream, canonical(message))

    async def _push_have(
        self, stream: INetStream, progress: Progress, want: _Want, writing: trio.Lock
    ) -> None:
        """Answer the session's want once this node's download has verified a chunk in it."""
        partial, pushed = progress.partial, -math.inf
        while not progress.ended:
            # `changed` wakes only for a change made while waiting: one made before this task first
            # ran, or while it slept or sent, is caught by looking before waiting
            if not want.met_by(partial.have):
                await progress.changed()
            if want.met_by(partial.have):
                # at most one push per have_interval_sec: chunks that verify meanwhile go in it
                await trio.sleep_until(pushed + self.settings.have_interval_sec)
                if want.met_by(partial.have):  # not answered meanwhile by a chunks answer
                    await self._send_have(stream, partial.have, want, writing)
                    self.stats.have_pushes += 1
                    pushed = trio.current_time()

    async def _send_have(self, stream: INetStream, have: list[bool], want: _Want, writing: trio.Lock) -> None:
        need = want.need
        async with writing:
            await self._send(stream, ["have", encode_have_map(have)])
        if want.need is need:  # answered; a want that came in meanwhile waits for the next map
            want.need = None

    async def _answer(
        self,
        stream: INetStream,
        cid: bytes,
        chunk_list: ChunkList,
        progress: Progress | None,
        want: _Want,
        writing: trio.Lock,
    ) -> None:
        """Chunk requests and wants, one at a time, until the fetcher ends the session or stays idle."""
        while True:
            raw = None
            with trio.move_on_after(self.settings.watch_sec):
                try:
                    raw = await read_frame(stream, MAX_REQUEST_BYTES)
                except ProviderUnavailable:
                    return  # the fetcher closed its side: the session is over
            if raw is None:
                return  # idle for watch_sec: the slot goes to another session
            request = decode_list(raw, MAX_REQUEST_BYTES, "request")
            if request[0] == "want" and len(request) == 2:
                try:
                    want.need = decode_have_map(request[1], chunk_list.count)
                except DecodeError as exc:
                    raise ProtocolViolation(f"want: {exc}") from None
                have = _have(progress, chunk_list)
                if want.met_by(have):  # already here: answered at once
                    await self._send_have(stream, have, want, writing)
                continue
            indices = request[1] if len(request) == 2 else None
            if (
                request[0] != "get"
                or not isinstance(indices, list)
                or not 0 < len(indices) <= MAX_CHUNKS_PER_REQUEST
                or not all(type(i) is int and 0 <= i < chunk_list.count for i in indices)
            ):
                raise ProtocolViolation(
                    'a session request must be ["get", [chunk index, ...]] or ["want", need]'
                )
            if progress is not None and not all(progress.partial.have[i] for i in indices):
                self.stats.requests["missing"] += 1
                async with writing:
                    await self._send(stream, ["missing"])
                continue
            if not _take(self._uploads):
                self.stats.requests["busy"] += 1
                async with writing:
                    await self._send(stream, ["busy"])
                continue
            try:
                self.stats.requests["chunks"] += 1
                async with writing:
                    with trio.fail_after(self.settings.request_timeout_sec * 4):
                        have = _have(progress, chunk_list)
                        chunks = [self._read(cid, index, chunk_list, progress) for index in indices]
                        await write_frames(
                            stream, [canonical(["chunks", indices, encode_have_map(have)]), *chunks]
                        )
                        want.need = None  # the map answers a want as a push would
                        self.stats.bytes_served += sum(map(len, chunks))
            finally:
                self._uploads.release()

    def _read(self, cid: bytes, index: int, chunk_list: ChunkList, progress: Progress | None) -> bytes:
        if progress is not None:
            try:
                return progress.partial.read_chunk(index)
            except FileNotFoundError:  # the download finished meanwhile: the file moved into the store
                pass
        return self.store.read_chunk(cid, index, chunk_list)


def _have(progress: Progress | None, chunk_list: ChunkList) -> list[bool]:
    """This node's have-map of a file: every chunk of a stored file, the verified ones of a download."""
    return progress.partial.have if progress is not None else [True] * chunk_list.count


def _take(slots: trio.Semaphore) -> bool:
    """A slot if one is free now; a server answers "busy" rather than queue a stranger."""
    try:
        slots.acquire_nowait()
    except trio.WouldBlock:
        return False
    return True


# -- fetching -------------------------------------------------------------------------------------
class MediaService:
    """Serving and fetching media for one host, with the providers it has heard of."""

    def __init__(self, net: NetworkHost, store: MediaStore, settings: MediaSettings | None = None) -> None:
        self.net = net
        self.store = store
        self.settings = settings or net.settings.media
        self.downloads: dict[bytes, Progress] = {}  # served while in progress
        self.server = MediaServer(store, self.settings, self.downloads)
        # newest last; bounded, because any peer can gossip "have" for content ids it makes up
        self.providers: OrderedDict[bytes, set[ID]] = OrderedDict()
        self._fetching: dict[bytes, trio.Event] = {}
        self._ranks: dict[tuple[bytes, ID], bytes] = {}
        net.set_stream_handler(PROTOCOL, self.server.handle)

    def add_provider(self, cid: bytes, peer: ID, addrs: Iterable[str] = ()) -> None:
        """Remember a provider, and where to dial it when it is not a direct neighbour."""
        if peer == self.net.peer_id:
            return
        known = self.providers.get(cid)
        if known is None:
            known = self.providers[cid] = set()
            while len(self.providers) > MAX_PROVIDED_CIDS:
                self.providers.popitem(last=False)
        if len(known) < MAX_PROVIDERS_PER_CID:
            known.add(peer)
        parsed = []
        for addr in addrs:
            try:
                parsed.append(multiaddr.Multiaddr(addr).decapsulate_code(P_P2P))
            except Exception as exc:  # a hint that does not parse is ignored
                log.debug("provider address %r ignored: %s", addr, exc)
        if parsed:
            self.net.host.get_peerstore().add_addrs(peer, parsed, PROVIDER_ADDR_TTL_SEC)

    def worth_announcing(self, cid: bytes, also_known: Iterable[ID] = ()) -> bool:
        """Whether to gossip that this node holds `cid`: only while fewer than
        `announce_below_holders` other holders are known (from media-have gossip, and
        `also_known`, e.g. the directors that announced making it), so that a slot
        costs the network a few announcements, not one per node."""
        known = self.providers.get(cid, set()) | set(also_known)
        known.discard(self.net.peer_id)
        return len(known) < self.settings.announce_below_holders

    def have_message(self, cid: bytes) -> bytes:
        """The media-have gossip this node publishes once it holds `cid`."""
        return encode_have(cid, [str(a) for a in self.net.addrs()][:MAX_HAVE_ADDRS])

    async def fetch(self, cid: bytes, providers: Iterable[ID] = ()) -> FetchReport:
        """Download `cid` into the store (no-op when present) from every peer that has some of it.

        `providers` are preferred in the order given (e.g. the directors that made the
        file), then the providers learnt from gossip, then the connected neighbours
        (which may be downloading it too), each group in an order of this node's own so
        that fetchers spread over them. A second fetch of a content id already being
        fetched waits for the first.
        """
        while (running := self._fetching.get(cid)) is not None:
            await running.wait()
        if self.store.has(cid):
            return FetchReport(cid, self.store.path(cid))
        given = [p for p in dict.fromkeys(providers) if p != self.net.peer_id]
        if not given and not self.providers.get(cid) and not self.net.connected_peers():
            raise FetchError(f"{cid.hex()}: no provider known")
        report = FetchReport(cid, self.store.path(cid))
        done = self._fetching[cid] = trio.Event()
        try:
            download = Download(self, cid, report, lambda: self._candidates(cid, given), self._open_progress)
            report.path = await download.run()
            return report
        finally:
            progress = self.downloads.pop(cid, None)
            if progress is not None:
                progress.end()
            del self._fetching[cid]
            done.set()

    # -- what a Download asks of the service ----------------------------------------------------------
    async def request(self, peer: ID, request: list) -> tuple[INetStream, list]:
        stream = await self.net.new_stream(peer, PROTOCOL, receive_window=self.settings.session_window_bytes)
        try:
            await write_frame(stream, canonical(request))
            status = decode_list(await read_frame(stream, MAX_STATUS_BYTES), MAX_STATUS_BYTES, "status")
        except BaseException:
            await reset(stream)
            raise
        if status[0] in ("missing", "busy"):
            await close(stream)
            raise ProviderUnavailable(status[0])
        if status[0] != "ok":
            await reset(stream)
            raise ProtocolViolation(f"unknown status {status[0]!r}")
        return stream, status

    def violation(self, peer: ID, report: FetchReport, exc: Exception) -> None:
        report.failures[peer] = f"cut off: {exc}"
        self.net.reputation.penalize(peer, "media_violation")
        log.warning("media provider %s cut off: %s", peer, exc)

    # -- internals ------------------------------------------------------------------------------
    def _candidates(self, cid: bytes, given: list[ID]) -> list[tuple[ID, bool]]:
        """Every peer to ask, in preference order, each with whether it is connected already."""
        connected = set(self.net.connected_peers())
        providers = self.providers.get(cid, set()) - set(given)
        neighbours = connected - providers - set(given)
        ordered = given + self._order(cid, providers) + self._order(cid, neighbours)
        return [(peer, peer in connected) for peer in ordered]

    def _order(self, cid: bytes, peers: set[ID]) -> list[ID]:
        """Peers in an order of this node's own (rendezvous hashing), so fetchers spread out."""
        return sorted((p for p in peers if p != self.net.peer_id), key=lambda p: self._rank(cid, p))

    def _rank(self, cid: bytes, peer: ID) -> bytes:
        """A peer's place for one content id; remembered, as a download asks on every chunk it gets."""
        key = (cid, peer)
        rank = self._ranks.get(key)
        if rank is None:
            if len(self._ranks) >= MAX_RANKS:
                self._ranks.clear()
            rank = self._ranks[key] = hashlib.sha256(
                self.net.peer_id.to_bytes() + cid + peer.to_bytes()
            ).digest()
        return rank

    async def _open_progress(self, chunk_list: ChunkList) -> Progress:
        partial = await trio.to_thread.run_sync(self.store.open_partial, chunk_list)
        progress = self.downloads[chunk_list.content_id] = Progress(partial)
        self.server.download_started()
        return progress
