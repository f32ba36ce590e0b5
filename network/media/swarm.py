"""One file's download from a swarm: have-maps, rarest-first requests, busy providers, endgame.

Why a swarm and not "ask whoever has the whole file": at a slot's end every node
wants the same file at the same moment, and the few nodes that hold it whole (its
directors) would upload every copy. Here every node serves the chunks it has
verified while its own download is still running, so a chunk one node received
a moment ago is already available to its neighbours:

- **sessions and have-maps**: a download opens one stream, a session, to a few of
  the peers it knows (providers first, then its neighbours; more when those bring
  nothing for a while, see `Download._recruit`); the peer answers with the chunk
  list and its have-map, and a new map with each chunk answer. When a peer has
  nothing the download would ask it for, the download sends it a *want* (the
  chunks it lacks) and the peer answers with its map once its
  own download has verified one of them (BitTorrent's HAVE messages, sent only
  where they are of use). One stream per peer and file, not one per request:
  py-libp2p spends milliseconds of CPU on every stream it opens (multistream
  negotiation), which on a loaded machine cost more than the chunks;
- **rarest first**: chunks are asked for from the peers that have them, the ones
  fewest watched peers hold first (ties at random), so what the swarm holds
  diversifies instead of every fetcher taking chunk 0 from the same peer;
- **busy**: a provider serves at most `max_uploads` chunk requests at once and
  answers the rest "busy"; the fetcher asks another peer and comes back after a
  short random pause, so the first holder's upload is shared with those that got
  chunks from it;
- **endgame**: when every chunk still missing is already asked for, a free
  request slot asks a second peer for one of them; whichever answers first wins,
  and a session whose answer is no longer needed when the file is whole is reset,
  so one slow peer does not hold the file.

Every chunk is checked against the chunk list (itself checked against the
content id the certificate carries) before it is written or served; a peer that
sends a wrong chunk, a wrong list or a malformed have-map is cut off and
penalised. This module owns one download's state; it speaks through a small
`Requester` so it knows nothing of hosts or the store's layout.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from consensus.wire import DecodeError, canonical
from network.media.content import ChunkList, decode_have_map, encode_have_map
from network.media.store import PartialFile, StoreError
from network.settings import MediaSettings
from network.streams import (
    FrameReader,
    ProtocolViolation,
    ProviderUnavailable,
    close,
    decode_list,
    reset,
    write_frame,
)

log = logging.getLogger(__name__)

BUSY_PAUSE_SEC = (0.05, 0.2)  # a busy provider is asked again after a random pause in this range
ENDGAME_COPIES = 2  # peers one missing chunk may be asked for at once, in endgame
ENDGAME_AFTER_SEC = 0.5  # and only once its first request has waited this long
OPEN_TIMEOUT_FACTOR = 4  # opening a session may take this many request timeouts
DIAL_AFTER_SEC = 0.5  # peers not connected are dialled when the connected ones bring no news this long
MAX_MESSAGE_BYTES = 64 * 1024  # a session message other than chunk data: have-map or answer header
CLOSE_TIMEOUT_SEC = 2.0  # sessions closed gracefully at the end of a download, then reset
MAX_REPORT_EVENTS = 512  # a download's story kept in its report; later events are only counted
OUTBOX_MESSAGES = 4  # requests queued for one session's writer: at most one get, and wants


class FetchError(Exception):
    """No provider could deliver the content; the message says what each one did."""


@dataclass
class FetchReport:
    cid: bytes
    path: Path
    bytes_from: Counter = field(default_factory=Counter)  # peer -> bytes of chunks it delivered first
    duplicate_bytes: int = 0  # endgame: chunks that arrived after another peer's copy
    failures: dict = field(default_factory=dict)  # peer -> reason
    resumed_chunks: int = 0
    # (seconds since the download began, peer, what happened): why a download was late, read
    # afterwards (a tail in the loopback benchmark); bounded, as a download may run long
    events: list[tuple[float, str, str]] = field(default_factory=list)
    events_dropped: int = 0

    def note(self, at: float, peer: ID, what: str) -> None:
        if len(self.events) < MAX_REPORT_EVENTS:
            self.events.append((round(at, 4), str(peer), what))
        else:
            self.events_dropped += 1


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def describe(failures: dict) -> str:
    return "; ".join(f"{peer}: {why}" for peer, why in failures.items()) or "none tried"


class Requester(Protocol):
    """What a download needs from the media service: requests to peers, and penalties."""

    settings: MediaSettings

    async def request(self, peer: ID, request: list) -> tuple[INetStream, list]:
        """Open a stream, send `request`, return the stream and the "ok" status (raises otherwise)."""
        ...

    def violation(self, peer: ID, report: FetchReport, exc: Exception) -> None:
        """`peer` broke the protocol: record it in `report` and penalise it."""
        ...


class Progress:
    """A download in progress as this node's server sees it: the chunks verified so far.

    Shared by the download (which adds chunks) and the server (which serves them and
    pushes have-maps to watchers), both in the node's one trio thread.
    """

    def __init__(self, partial: PartialFile) -> None:
        self.partial = partial
        self.held = sum(partial.have)
        self.ended = False
        self._changed = trio.Event()

    def verified(self) -> None:
        self.held += 1
        self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    async def changed(self) -> None:
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@dataclass
class _Peer:
    """One peer as this download sees it, and the session with it (owned by `Download`)."""

    id: ID
    rank: int  # the caller's preference: lower is asked first
    near: bool = False  # connected already: no dial needed
    have: list[bool] | None = None  # None until its first have-map
    state: str = "idle"  # idle | opening | open | closing | later | dropped
    retry_at: float = 0.0  # when a "later" session is opened again
    busy_until: float = 0.0
    asked: list[int] | None = None  # the chunk request it has not answered yet
    wanted: frozenset[int] | None = None  # the chunks of a want sent, not yet answered by a have-map
    asked_at: float = 0.0
    news_at: float = 0.0  # when it last sent a chunk, or a have-map that showed more
    stream: INetStream | None = None
    outbox: trio.MemorySendChannel | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class Download:
    """Fetch one content id into a partial file from every peer that has some of it."""

    def __init__(
        self,
        requester: Requester,
        cid: bytes,
        report: FetchReport,
        candidates: Callable[[], Iterable[tuple[ID, bool]]],
        open_progress: Callable[[ChunkList], Awaitable[Progress]],
    ) -> None:
        self.requester = requester
        self.settings = requester.settings
        self.cid = cid
        self.report = report
        self._candidates = candidates
        self._open_progress = open_progress
        self.peers: dict[ID, _Peer] = {}
        self.chunk_list: ChunkList | None = None
        self._list_bytes = b""  # its canonical encoding, as the first session sent it
        self.progress: Progress | None = None
        self.need: set[int] = set()
        self.asked: dict[int, set[ID]] = {}  # chunk -> peers it is being asked from
        self._changed = trio.Event()
        self._news = trio.current_time()  # when a chunk, or a have-map that showed more, last arrived
        self._began = self._news
        self._nursery: trio.Nursery | None = None

    # -- the scheduler ------------------------------------------------------------------------------
    async def run(self) -> Path:
        """The file's path in the store once whole and checked; `FetchError` says why not."""
        finished: Path | None = None
        failed: StoreError | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._schedule()
            if self.progress is not None and not self.need:
                # stored before the sessions are closed: a peer slow to close must not hold the file
                try:
                    finished = await trio.to_thread.run_sync(self.progress.partial.finish)
                except StoreError as exc:  # raised below, not wrapped in the nursery's group
                    failed = exc
            await self._close_sessions()
            nursery.cancel_scope.cancel()
        if failed is not None:  # the disk did not keep what was verified: the caller may fetch again
            raise FetchError(f"{self.cid.hex()}: {failed}")
        if self.chunk_list is None:
            raise FetchError(
                f"{self.cid.hex()}: no provider gave a valid chunk list ({describe(self.report.failures)})"
            )
        if self.progress is None:  # too large: refused before download
            raise FetchError(
                f"{self.cid.hex()}: {self.chunk_list.size} bytes exceeds media.max_file_bytes "
                f"({self.settings.max_file_bytes})"
            )
        if self.need or finished is None:
            raise FetchError(
                f"{self.cid.hex()}: {len(self.need)} chunks undelivered ({describe(self.report.failures)})"
            )
        return finished

    async def _schedule(self) -> None:
        """Until the file is whole or nothing can bring more of it; `run` says which."""
        while self.chunk_list is None:
            self._recruit(first_round=True)
            if not any(p.state == "opening" for p in self.peers.values()):
                return
            await self._wait(math.inf)
        if self.chunk_list.size > self.settings.max_file_bytes:
            return
        self.progress = await self._open_progress(self.chunk_list)
        self.need = set(self.progress.partial.missing())
        self.report.resumed_chunks = self.chunk_list.count - len(self.need)
        while self.need:
            self._expire()
            self._recruit(first_round=False)
            self._assign()
            if not self._hopeful():
                return
            await self._wait(self._next_timer())

    async def _close_sessions(self) -> None:
        """End each session: gracefully where nothing is owed to us, by reset where an answer is or
        the session is still opening (bounded: whatever has not ended by then is cancelled with the
        download's nursery). A session left opening used to open after this loop had passed it, and
        nobody closed it: the download returned CLOSE_TIMEOUT_SEC after the file was whole."""
        with trio.move_on_after(CLOSE_TIMEOUT_SEC):
            for peer in self.peers.values():  # no await in this pass: no session opens meanwhile
                if peer.state == "opening" or peer.asked is not None:
                    peer.scope.cancel()
            for peer in list(self.peers.values()):  # an opening session has no stream yet
                if peer.stream is not None and peer.asked is None:
                    await close(peer.stream)  # the peer sees the end, ends its side, and our reader stops
            while any(p.stream is not None for p in self.peers.values()):
                await self._changed.wait()

    async def _wait(self, until: float) -> None:
        with trio.move_on_at(until):
            await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _note(self, peer: _Peer, what: str) -> None:
        self.report.note(trio.current_time() - self._began, peer.id, what)

    def _recruit(self, *, first_round: bool) -> None:
        """Track peers learnt since, and open sessions to those not yet asked or due again."""
        for peer_id, connected in self._candidates():
            peer = self.peers.get(peer_id)
            if peer is None:
                peer = self.peers[peer_id] = _Peer(peer_id, rank=len(self.peers))
            peer.near = connected
        now = trio.current_time()
        live = [p for p in self.peers.values() if p.state in ("opening", "open")]
        stale = now - self._news >= DIAL_AFTER_SEC  # >=: the timer set for this moment finds it stale
        # Sessions are opened as they are needed, not to every peer at once: each costs both ends
        # about ten messages (stream negotiation, list, want, close), milliseconds of CPU. Enough
        # that `parallel_providers` of them are opening, offer a chunk still needed, or sent a
        # chunk or a map that showed more within DIAL_AFTER_SEC: a neighbour that has nothing for
        # us yet says when it has (a want), and is given that long to; one that stays silent, or
        # repeats a map, stops counting, so a peer that never gets anything, or lies, does not
        # hold a place. (Counting offers only,
        # a download held a session with every neighbour: over a quarter of a spread's messages
        # were sessions' own.)
        useful = sum(
            1 for p in live if p.state == "opening" or self._offers(p) or now - p.news_at < DIAL_AFTER_SEC
        )
        # Peers already connected first: dialling costs both ends a handshake, and a provider every
        # fetcher dials (the directors) would spend its CPU on handshakes. Others are dialled when
        # no connected peer has a session, or none has brought news for a while.
        for peer in sorted(self.peers.values(), key=lambda p: (not p.near, p.rank)):
            if len(live) >= self.settings.watched_peers or useful >= self.settings.parallel_providers:
                break
            if not peer.near and not stale and any(p.near for p in live):
                break
            if peer.state == "idle" or (peer.state == "later" and not first_round and peer.retry_at <= now):
                peer.state = "opening"
                peer.scope = trio.CancelScope()
                self._note(peer, "open" if peer.near else "open (dial)")
                live.append(peer)
                useful += 1
                assert self._nursery is not None
                self._nursery.start_soon(self._session, peer)

    def _offers(self, peer: _Peer) -> bool:
        return peer.have is not None and any(peer.have[i] for i in self.need)

    def _expire(self) -> None:
        """A peer that has not answered a chunk request within the request timeout loses its session."""
        late = trio.current_time() - self.settings.request_timeout_sec
        for peer in self.peers.values():
            if peer.asked is not None and peer.asked_at < late and peer.state == "open":
                self._slow(peer, "chunks: no answer within media.request_timeout_sec")

    def _hopeful(self) -> bool:
        """Whether anything can still bring a missing chunk: a session open or opening, an offer,
        or (for `request_timeout_sec` after the last news) a peer that had none and is asked again."""
        recent = trio.current_time() - self._news < self.settings.request_timeout_sec
        return any(
            p.state in ("opening", "open", "closing")
            or (p.state == "later" and recent)
            or (p.state != "dropped" and self._offers(p))
            for p in self.peers.values()
        )

    def _next_timer(self) -> float:
        """The next moment something is due: a busy peer, a session to reopen, an answer overdue."""
        live = [p for p in self.peers.values() if p.state != "dropped"]
        times = [p.busy_until for p in live]
        times += [p.retry_at for p in live if p.state == "later"]
        times += [p.asked_at + self.settings.request_timeout_sec for p in live if p.asked is not None]
        times += [p.asked_at + ENDGAME_AFTER_SEC for p in live if p.asked is not None]
        times.append(self._news + DIAL_AFTER_SEC)
        times += [p.news_at + DIAL_AFTER_SEC for p in live if p.state == "open"]  # when one stops counting
        now = trio.current_time()
        future = [t for t in times if t > now]
        return min(future) if future else math.inf

    def _assign(self) -> None:
        """Fill free request slots: rarest chunks first from the most preferred free peer that has them."""
        now = trio.current_time()
        free = [
            p
            for p in sorted(self.peers.values(), key=lambda p: p.rank)
            if p.state == "open" and p.have is not None and p.asked is None and p.busy_until <= now
        ]
        in_flight = sum(1 for p in self.peers.values() if p.asked is not None)
        rarity = Counter(
            i for p in self.peers.values() if p.state == "open" and p.have for i in self.need if p.have[i]
        )
        # chunks whose request has waited long enough that a second copy may be asked for (endgame)
        slow = {
            i
            for p in self.peers.values()
            if p.asked and now - p.asked_at >= ENDGAME_AFTER_SEC
            for i in p.asked
        }
        unasked = [i for i in self.need if not self.asked.get(i)]
        for peer in free:
            assert peer.have is not None and peer.outbox is not None
            offer = [i for i in unasked if peer.have[i]]
            if not offer:
                self._want(peer, slow)
            if in_flight >= self.settings.parallel_providers:
                continue
            if offer:
                offer.sort(key=lambda i: (rarity[i], random.random()))
                chunks = offer[: self.settings.chunks_per_request]
            elif all(self.asked.get(i) for i in self.need):
                # endgame: everything missing is asked for; ask this peer too for one chunk whose
                # request has waited a while (a copy of every chunk in flight would double the bytes)
                spare = [
                    i
                    for i in self.need & slow
                    if peer.have[i] and peer.id not in self.asked[i] and len(self.asked[i]) < ENDGAME_COPIES
                ]
                if not spare:
                    continue
                chunks = [random.choice(spare)]
                self._note(peer, f"endgame copy of {chunks[0]}")
            else:
                continue
            peer.asked, peer.asked_at = chunks, now
            for i in chunks:
                self.asked.setdefault(i, set()).add(peer.id)
            peer.outbox.send_nowait(["get", chunks])
            self._note(peer, f"get {chunks}")
            in_flight += 1
            unasked = [i for i in unasked if i not in chunks]

    def _want(self, peer: _Peer, slow: set[int]) -> None:
        """Ask a peer that has nothing we would ask it for to say when it has: one message, answered
        by a have-map, rather than one per chunk it verifies. The want names the chunks we would
        ask it for: those nobody is asked for, and those whose request is slow enough for a second
        copy (the endgame). A chunk already on its way from another peer is left out: a map that
        only says the peer has it too would cost a message at each end, and another want."""
        assert peer.have is not None and peer.outbox is not None
        wanted = frozenset(
            i
            for i in self.need
            if not peer.have[i]
            and (not self.asked.get(i) or (i in slow and len(self.asked[i]) < ENDGAME_COPIES))
        )
        if not wanted or (peer.wanted is not None and wanted <= peer.wanted):
            return  # nothing to want, or the pending want covers it
        # the last place in the outbox is the get's; with no other, the want goes on a later pass
        if peer.outbox.statistics().current_buffer_used < OUTBOX_MESSAGES - 1:
            peer.outbox.send_nowait(["want", encode_have_map([i in wanted for i in range(len(peer.have))])])
            peer.wanted = wanted
            self._note(peer, f"want {len(wanted)}")

    def _answered(self, peer: _Peer) -> None:
        for i in peer.asked or ():
            self.asked[i].discard(peer.id)
        peer.asked = None
        self._wake()

    # -- one session per peer -----------------------------------------------------------------------
    async def _session(self, peer: _Peer) -> None:
        timeout = self.settings.request_timeout_sec
        try:
            with peer.scope:
                # opening waits longer than an answer: on a loaded machine the stream negotiation
                # alone can take a second, and a peer slow to open is not a stalled transfer
                with trio.fail_after(timeout * OPEN_TIMEOUT_FACTOR):
                    stream, status = await self.requester.request(peer.id, ["watch", self.cid])
                peer.stream = stream
                try:
                    if len(status) != 3 or not isinstance(status[1], bytes):
                        raise ProtocolViolation("watch reply without a chunk list and have-map")
                    chunk_list = self._check_list(status[1])
                    self._update_have(peer, status[2], chunk_list)
                    self._note(peer, f"ok, has {sum(peer.have or ())}")
                    # one get at a time (the next once it is answered), and wants that leave it a place
                    outbox, inbox = trio.open_memory_channel[list](OUTBOX_MESSAGES)
                    peer.outbox, peer.state = outbox, "open"
                    self._wake()
                    failed: Exception | None = None
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._send, peer, stream, inbox)
                        try:
                            await self._receive(peer, FrameReader(stream), chunk_list)
                        except Exception as exc:  # raised below, not wrapped in the nursery's group
                            failed = exc
                        nursery.cancel_scope.cancel()
                    if failed is not None:
                        raise failed
                except BaseException:
                    await reset(stream)
                    raise
                await close(stream)
            if peer.state != "dropped":  # the session ended (done, idle, or the peer left): reopen if needed
                self._later(peer)
        except ProtocolViolation as exc:
            self._drop(peer)
            self.requester.violation(peer.id, self.report, exc)
        except ProviderUnavailable as exc:  # it has none yet, is busy, or the session ended
            self._later(peer)
            self.report.failures.setdefault(peer.id, f"session: {exc}")
        except trio.TooSlowError:  # slow, not bad: its chunks go to others, and it is asked again later
            self._later(peer)
            self.report.failures[peer.id] = "session: too slow"
        except Exception as exc:  # unreachable, or the connection failed
            self._drop(peer, f"session: {_why(exc)}")
        finally:
            peer.stream = peer.outbox = None
            if peer.state in ("opening", "open", "closing"):
                self._later(peer)
            self._answered(peer)

    async def _send(self, peer: _Peer, stream: INetStream, inbox: trio.MemoryReceiveChannel) -> None:
        try:
            async for message in inbox:
                with trio.fail_after(self.settings.request_timeout_sec):
                    await write_frame(stream, canonical(message))
        except Exception as exc:  # the session cannot carry requests any more
            self._drop(peer, f"session: {_why(exc)}")

    async def _receive(self, peer: _Peer, frames: FrameReader, chunk_list: ChunkList) -> None:
        """Have-maps and answers from the peer, until it ends the session."""
        while True:
            try:
                raw = await frames.read_frame(MAX_MESSAGE_BYTES)
            except ProviderUnavailable:
                if peer.asked is not None:
                    raise  # it left with a request unanswered
                return  # it ended the session
            message = decode_list(raw, MAX_MESSAGE_BYTES, "session message")
            kind = message[0]
            if kind == "have" and len(message) == 2:
                self._update_have(peer, message[1], chunk_list)
                self._note(peer, f"have {sum(peer.have or ())}")
                continue
            if kind not in ("chunks", "busy", "missing") or peer.asked is None:
                raise ProtocolViolation(f"unexpected {kind!r} message")
            if kind == "busy":
                peer.busy_until = trio.current_time() + random.uniform(*BUSY_PAUSE_SEC)
                self._note(peer, "busy")
            elif kind == "missing":  # it advertised chunks it does not serve
                self._drop(peer, "chunks: missing though advertised")
                return
            elif len(message) != 3 or message[1] != peer.asked:
                raise ProtocolViolation("answer for chunks that were not asked for")
            else:
                self._update_have(peer, message[2], chunk_list)
                await self._receive_chunks(peer, frames, chunk_list)
                self._note(peer, f"chunks {peer.asked}")
            self._answered(peer)

    async def _receive_chunks(self, peer: _Peer, frames: FrameReader, chunk_list: ChunkList) -> None:
        assert self.progress is not None and peer.asked is not None
        partial = self.progress.partial
        for index in peer.asked:
            with trio.fail_after(self.settings.request_timeout_sec):
                data = await frames.read_frame(chunk_list.chunk_length(index))
            if index not in self.need:  # endgame: another peer's copy came first
                self.report.duplicate_bytes += len(data)
                continue
            try:
                partial.write_chunk(index, data)  # checked against the chunk list first
            except StoreError:
                raise ProtocolViolation(f"chunk {index} does not match the chunk list") from None
            self.need.discard(index)
            self.report.bytes_from[peer.id] += len(data)
            self.progress.verified()
            peer.news_at = self._news = trio.current_time()
            self._wake()

    def _check_list(self, encoded: bytes) -> ChunkList:
        if self.chunk_list is not None:  # known: every other session must send the same bytes
            if encoded != self._list_bytes:
                raise ProtocolViolation("chunk list does not hash to the content id")
            return self.chunk_list
        try:
            chunk_list = ChunkList.decode(encoded)
        except DecodeError as exc:
            raise ProtocolViolation(f"chunk list: {exc}") from None
        if chunk_list.content_id != self.cid:
            raise ProtocolViolation("chunk list does not hash to the content id")
        self.chunk_list, self._list_bytes = chunk_list, encoded
        return chunk_list

    def _update_have(self, peer: _Peer, data: object, chunk_list: ChunkList) -> None:
        try:
            have = decode_have_map(data, chunk_list.count)
        except DecodeError as exc:
            raise ProtocolViolation(f"have-map: {exc}") from None
        if peer.have is not None:  # verified chunks stay verified: a map only grows
            have = [a or b for a, b in zip(have, peer.have, strict=True)]
        if have != peer.have:  # news: a map that shows nothing new does not keep a session's place
            peer.news_at = self._news = trio.current_time()
        peer.have = have
        peer.wanted = None  # any map the peer sends answers a want
        self.report.failures.pop(peer.id, None)
        self._wake()

    def _later(self, peer: _Peer) -> None:
        if peer.state != "later":
            self._note(peer, "session ended")
        peer.state = "later"
        peer.retry_at = trio.current_time() + self.settings.rewatch_sec

    def _slow(self, peer: _Peer, reason: str) -> None:
        """End the session with a peer too slow to answer; it is asked again once it has ended."""
        peer.state = "closing"
        self.report.failures[peer.id] = reason
        self._note(peer, f"too slow: {reason}")
        log.info("media provider %s too slow: %s", peer.id, reason)
        peer.scope.cancel()

    def _drop(self, peer: _Peer, reason: str | None = None) -> None:
        """No more requests to this peer in this download; `reason` unless a violation recorded one."""
        peer.state = "dropped"
        self._note(peer, f"dropped: {reason or 'violation'}")
        if reason is not None:
            self.report.failures[peer.id] = reason
            log.info("media provider %s dropped: %s", peer.id, reason)
        peer.scope.cancel()
