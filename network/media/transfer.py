"""The media transfer protocol: chunk lists and chunks by content id, from any provider.

Gossip caps messages at 1 MiB, so slot media moves on its own stream protocol.
One request per stream, each frame prefixed by its 4-byte big-endian length:

    request   CBOR ["list", cid]              -> ["ok", chunk_list] | ["missing"] | ["busy"]
    request   CBOR ["chunks", cid, [i, ...]]  -> ["ok"] then one frame per chunk, in order
                                                 | ["missing"] | ["busy"]

A fetcher checks the chunk list against the content id and every chunk against
its hash as it arrives; a provider that sends a wrong list, a wrong chunk or a
frame longer than announced is cut off (stream reset) and penalised. Chunks are
shared out among several providers in small requests; when one fails, its
unfinished chunks go back to the queue for the others, so a transfer survives
a provider leaving, and a resumed download (after a crash) asks only for what
is missing. Every node serves what it has verified, so load spreads as the
file spreads.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from consensus.messages import DecodeError, canonical
from network.host import NetworkHost
from network.media.content import ChunkList
from network.media.store import MediaStore, PartialFile, StoreError
from network.settings import MediaSettings
from network.streams import (  # noqa: F401 - ProtocolViolation, read_frame, write_frame: part of this protocol's API
    ProtocolViolation,
    ProviderUnavailable,
    close,
    decode_list,
    read_frame,
    reset,
    write_frame,
)
from network.topics import MAX_HAVE_ADDRS, encode_have

log = logging.getLogger(__name__)

PROTOCOL = "/icn/media/1.0.0"
PROVIDER_ADDR_TTL_SEC = 600
P_P2P = 0x01A5  # multiaddr code of /p2p/
MAX_REQUEST_BYTES = 2048
MAX_PROVIDED_CIDS = 1024  # content ids whose providers are remembered (about 12 hours of slots)
MAX_PROVIDERS_PER_CID = 64  # peers remembered per content id: more than any fetch asks
MAX_CHUNKS_PER_REQUEST = 256
MAX_STATUS_BYTES = 64 * 34 * 1024 + 64  # a status frame may carry a chunk list


class FetchError(Exception):
    """No provider could deliver the content; the message says what each one did."""


# -- serving --------------------------------------------------------------------------------------
@dataclass
class ServerStats:
    bytes_served: int = 0
    requests: Counter = field(default_factory=Counter)


class MediaServer:
    """Answers media requests from the store; registered on the host by `MediaService`."""

    def __init__(self, store: MediaStore, settings: MediaSettings) -> None:
        self.store = store
        self.settings = settings
        self.stats = ServerStats()
        self._slots = trio.Semaphore(settings.max_serving_streams)

    async def handle(self, stream: INetStream) -> None:
        try:
            with trio.fail_after(self.settings.request_timeout_sec * 4):
                await self._serve(stream)
        except (ProtocolViolation, ProviderUnavailable, trio.TooSlowError) as exc:
            self.stats.requests["bad_request"] += 1
            log.debug("media request failed: %s", exc)
            await reset(stream)
        except Exception as exc:  # a dying connection raises the library's own stream errors
            self.stats.requests["stream_error"] += 1
            log.debug("media stream error: %s", exc)
            await reset(stream)
        else:
            await close(stream)

    async def _serve(self, stream: INetStream) -> None:
        request = decode_list(await read_frame(stream, MAX_REQUEST_BYTES), MAX_REQUEST_BYTES, "request")
        op = request[0]
        if op not in ("list", "chunks") or len(request) != (2 if op == "list" else 3):
            raise ProtocolViolation(f"unknown request {op!r} of {len(request)} items")
        cid = request[1]
        if not isinstance(cid, bytes) or len(cid) != 32:
            raise ProtocolViolation("content id must be 32 bytes")
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            self.stats.requests["busy"] += 1
            await write_frame(stream, canonical(["busy"]))
            return
        try:
            chunk_list = await trio.to_thread.run_sync(self.store.chunk_list, cid)
            if chunk_list is None:
                self.stats.requests["missing"] += 1
                await write_frame(stream, canonical(["missing"]))
                return
            if op == "list":
                self.stats.requests["list"] += 1
                await write_frame(stream, canonical(["ok", chunk_list.encode()]))
                return
            indices = request[2]
            if (
                not isinstance(indices, list)
                or not 0 < len(indices) <= MAX_CHUNKS_PER_REQUEST
                or not all(type(i) is int and 0 <= i < chunk_list.count for i in indices)
            ):
                raise ProtocolViolation("chunk indices out of range")
            self.stats.requests["chunks"] += 1
            await write_frame(stream, canonical(["ok"]))
            for index in indices:
                data = self.store.read_chunk(cid, index, chunk_list)
                await write_frame(stream, data)
                self.stats.bytes_served += len(data)
        finally:
            self._slots.release()


# -- fetching -------------------------------------------------------------------------------------
@dataclass
class FetchReport:
    cid: bytes
    path: Path
    bytes_from: Counter = field(default_factory=Counter)  # peer -> bytes received
    failures: dict = field(default_factory=dict)  # peer -> reason
    resumed_chunks: int = 0


class MediaService:
    """Serving and fetching media for one host, with the providers it has heard of."""

    def __init__(self, net: NetworkHost, store: MediaStore, settings: MediaSettings | None = None) -> None:
        self.net = net
        self.store = store
        self.settings = settings or net.settings.media
        self.server = MediaServer(store, self.settings)
        # newest last; bounded, because any peer can gossip "have" for content ids it makes up
        self.providers: OrderedDict[bytes, set[ID]] = OrderedDict()
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

    def have_message(self, cid: bytes) -> bytes:
        """The media-have gossip this node publishes once it holds `cid`."""
        return encode_have(cid, [str(a) for a in self.net.addrs()][:MAX_HAVE_ADDRS])

    async def fetch(self, cid: bytes, providers: Iterable[ID] = ()) -> FetchReport:
        """Download `cid` into the store (no-op when present).

        `providers` are tried in the order given (the caller's preference, e.g. the
        director that made the file), then the providers learnt from gossip, in an
        order of this node's own so that fetchers spread over them.
        """
        if self.store.has(cid):
            return FetchReport(cid, self.store.path(cid))
        given = [p for p in dict.fromkeys(providers) if p != self.net.peer_id]
        candidates = given + self._order(cid, self.providers.get(cid, set()) - set(given))
        report = FetchReport(cid, self.store.path(cid))
        if not candidates:
            raise FetchError(f"{cid.hex()}: no provider known")
        chunk_list = await self._fetch_list(cid, candidates, report)
        partial = await trio.to_thread.run_sync(self.store.open_partial, chunk_list)
        report.resumed_chunks = chunk_list.count - len(partial.missing())
        await _Download(self, partial, [p for p in candidates if p not in report.failures], report).run()
        report.path = await trio.to_thread.run_sync(partial.finish)
        return report

    # -- internals ------------------------------------------------------------------------------
    def _order(self, cid: bytes, providers: set[ID]) -> list[ID]:
        """Providers in an order of this node's own (rendezvous hashing), so fetchers spread out."""
        me = self.net.peer_id.to_bytes()
        return sorted(
            (p for p in providers if p != self.net.peer_id),
            key=lambda p: hashlib.sha256(me + cid + p.to_bytes()).digest(),
        )

    async def _request(self, peer: ID, request: list) -> tuple[INetStream, list]:
        stream = await self.net.new_stream(peer, PROTOCOL)
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

    async def _fetch_list(self, cid: bytes, candidates: list[ID], report: FetchReport) -> ChunkList:
        """Ask up to `parallel_providers` providers at once; the first valid chunk list wins.

        Racing matters on a loaded network: one provider that accepts the stream and then
        answers slowly would otherwise hold the whole fetch for a full request timeout.
        """
        width = self.settings.parallel_providers
        for first in range(0, len(candidates), width):
            found: list[ChunkList] = []
            async with trio.open_nursery() as nursery:
                for peer in candidates[first : first + width]:
                    nursery.start_soon(self._ask_list, peer, cid, report, found, nursery.cancel_scope)
            if found:
                chunk_list = found[0]
                if chunk_list.size > self.settings.max_file_bytes:
                    raise FetchError(
                        f"{cid.hex()}: {chunk_list.size} bytes exceeds media.max_file_bytes "
                        f"({self.settings.max_file_bytes})"
                    )
                return chunk_list
        raise FetchError(f"{cid.hex()}: no provider gave a valid chunk list ({_describe(report.failures)})")

    async def _ask_list(
        self, peer: ID, cid: bytes, report: FetchReport, found: list[ChunkList], done: trio.CancelScope
    ) -> None:
        try:
            with trio.fail_after(self.settings.request_timeout_sec):
                stream, status = await self._request(peer, ["list", cid])
                await close(stream)
            if len(status) != 2 or not isinstance(status[1], bytes):
                raise ProtocolViolation("list reply without a chunk list")
            try:
                chunk_list = ChunkList.decode(status[1])
            except DecodeError as exc:
                raise ProtocolViolation(f"chunk list: {exc}") from None
            if chunk_list.content_id != cid:
                raise ProtocolViolation("chunk list does not hash to the content id")
        except ProtocolViolation as exc:
            self._violation(peer, report, exc)
            return
        except (ProviderUnavailable, trio.TooSlowError, Exception) as exc:  # that provider cannot help now
            report.failures[peer] = f"list: {exc or type(exc).__name__}"
            return
        found.append(chunk_list)
        done.cancel()

    def _violation(self, peer: ID, report: FetchReport, exc: Exception) -> None:
        report.failures[peer] = f"cut off: {exc}"
        self.net.reputation.penalize(peer, "media_violation")
        log.warning("media provider %s cut off: %s", peer, exc)


def _describe(failures: dict) -> str:
    return "; ".join(f"{peer}: {why}" for peer, why in failures.items()) or "none tried"


class _Download:
    """Shares a file's missing chunks among providers; a failed provider's chunks go back."""

    def __init__(self, service: MediaService, partial: PartialFile, providers: list[ID], report: FetchReport):
        self.service = service
        self.partial = partial
        self.report = report
        self.queue: deque[int] = deque(partial.missing())
        self.in_flight = 0
        self.spare = deque(providers)
        self.used: set[ID] = set()
        self.workers = 0
        self.changed = trio.Event()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._recruit(nursery)
        if self.queue:
            raise FetchError(
                f"{self.partial.cid.hex()}: {len(self.queue)} chunks undelivered "
                f"({_describe(self.report.failures)})"
            )

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def _recruit(self, nursery: trio.Nursery) -> None:
        """Fill free worker places from the spares, then from providers learnt since the start."""
        learnt = self.service.providers.get(self.partial.cid, set()) - self.used - set(self.spare)
        self.spare.extend(self.service._order(self.partial.cid, learnt))
        while self.spare and self.workers < self.service.settings.parallel_providers and self.queue:
            peer = self.spare.popleft()
            if peer in self.used or peer in self.report.failures:
                continue
            self.used.add(peer)
            self.workers += 1
            nursery.start_soon(self._worker, peer, nursery)

    async def _worker(self, peer: ID, nursery: trio.Nursery) -> None:
        try:
            await self._work(peer, nursery)
        finally:
            self.workers -= 1
        self._recruit(nursery)
        self._wake()

    async def _work(self, peer: ID, nursery: trio.Nursery) -> None:
        batch: list[int] = []
        try:
            while True:
                if not self.queue:
                    if self.in_flight == 0:
                        return
                    await self.changed.wait()
                    continue
                n = self.service.settings.chunks_per_request
                batch = [self.queue.popleft() for _ in range(min(n, len(self.queue)))]
                self.in_flight += len(batch)
                await self._fetch_batch(peer, batch)
                self.in_flight -= len(batch)
                batch = []
                self._recruit(nursery)
                self._wake()
        except ProtocolViolation as exc:
            self.service._violation(peer, self.report, exc)
        except (ProviderUnavailable, trio.TooSlowError, StoreError, Exception) as exc:
            self.report.failures[peer] = f"chunks: {exc or type(exc).__name__}"
            log.info("media provider %s dropped: %s", peer, exc)
        # this provider is done with: its unfinished chunks go back for the others
        unfinished = [i for i in batch if not self.partial.have[i]]
        self.in_flight -= len(batch)
        self.queue.extendleft(reversed(unfinished))

    async def _fetch_batch(self, peer: ID, batch: list[int]) -> None:
        settings = self.service.settings
        chunk_list = self.partial.chunk_list
        with trio.fail_after(settings.request_timeout_sec):
            stream, _ = await self.service._request(peer, ["chunks", self.partial.cid, batch])
        try:
            for index in batch:
                expected = chunk_list.chunk_length(index)
                with trio.fail_after(settings.request_timeout_sec):
                    data = await read_frame(stream, expected)
                if len(data) != expected or not self.partial.check_chunk(index, data):
                    raise ProtocolViolation(f"chunk {index} does not match the chunk list")
                self.partial.write_chunk(index, data)
                self.report.bytes_from[peer] += len(data)
        except BaseException:
            await reset(stream)
            raise
        await close(stream)
