"""Every workaround for a py-libp2p 0.8.1 defect, in one place.

The node talks to py-libp2p only through the builders in this module and
`network.host`, so when the library fixes one of these, one function changes.
Each defect below was met on this project's machines; `tests/network/
test_quirks.py` holds one test per workaround that fails if the workaround
stops holding. `QUIRKS` lists them for the README and for `icn-node status`.

1. Heartbeat: `GossipSub(heartbeat_interval=120)` by default: a mesh that loses
   a peer repairs two minutes later, after several slots. We pass ~1 s.
2. Adaptive gossip (on by default) rewrites the degree bounds and slows gossip
   when it judges the mesh unhealthy, which a small validator mesh always looks
   like. Off: the configured D/D_low/D_high hold.
3. Spam protection (on by default) silently drops, at every forwarder and at
   the publisher itself, the 11th message per second per topic: five directors
   voting twice per round exceed it. Off: flooding is handled by the topic
   validators (invalid messages cost score) and by peer scoring.
4. GRAFT flood check: after *receiving* a PRUNE from a peer, the library treats
   that peer's GRAFT within 10 s as a flood and prunes it back, so two peers
   that prune each other once never mesh again and dense meshes collapse. The
   check is inverted (a flood is a GRAFT from a peer *we* pruned, which the
   library's back-off check already catches), so it is disabled; back-off stays.
5. Dial delay: every successful dial waits 250 ms (the happy-eyeballs head
   start) unless it has reached the per-peer connection limit. With one
   connection per peer the dial returns as soon as it succeeds.
6. Outbound RPC size: an RPC over 1 MiB is dropped by the sender's queue with
   no error. `check_gossip_size` refuses such a message at publish with one
   (`MessageTooLarge`); media travels on its own stream protocol.
7. Subscription queue: 32 messages, then "fail to deliver message to
   subscription" and the message is lost to the local node although it was
   forwarded. `subscribe_with_queue` swaps in a queue of the configured size.
8. Peer scoring never removes a mesh peer whose score went negative (only
   GRAFTs are gated), so a peer sending invalid messages keeps its mesh place.
   `evict_low_scorers` prunes them each heartbeat; the graylist threshold then
   keeps them out and ignores what they send.
9. Eclipse protection counts distinct IP addresses in the mesh; every loopback
   simnet and a validator LAN have one or few, so it is off (the validator set
   is permissioned; scoring handles misbehaviour).
10. Outbound queue: each peer's outbound RPC queue holds 32 RPCs and drops the
   rest without telling the publisher, so a burst of more than 32 messages
   (a node catching up, five directors' votes and announcements at once) loses
   messages at the first hop. The library builds the queue with its default
   size and offers no parameter, so `enlarge_outbound_queues` replaces the
   class the pubsub module instantiates with one of `OUTBOUND_QUEUE_RPCS`
   (process-wide: every pubsub in this process is ours).
11. Negative dial cache: once every address of a peer failed, the swarm refuses
   to dial it again for 60 s. A bootstrap peer restarting, or a partition
   healing, would stay unreachable for a minute. Our redial loop has its own
   back-off, so `forget_dial_failure` clears the entry before each redial.
12. Heartbeat pruning (too many mesh peers) sends PRUNE but, unlike every
   other prune path and the spec, records no back-off for the pruned peer, so
   the next heartbeat may GRAFT it straight back; that peer still holds the
   back-off our PRUNE asked for, refuses, and prunes us in turn: meshes churn
   on dense graphs. `IcnGossipSub.mesh_heartbeat` records the back-off. Back-offs
   are also stored in whole seconds (`int(time.time()) + duration`), so the two
   sides of a PRUNE expire up to a second apart and the pruner may GRAFT before
   the pruned peer allows it. So both sides keep `BACKOFF_SLACK_SEC` more
   back-off for their own GRAFTs than they demand of the other's: we graft
   after back-off + slack, and accept a GRAFT once back-off alone has passed.
13. IHAVE gossip skips peers in back-off. Back-off is about GRAFTs only; a node
   that every peer has pruned (dense graphs: more connections than D_high) gets
   neither mesh traffic nor gossip until the back-offs expire, so messages do
   not reach it at all. `IcnGossipSub.gossip_heartbeat` gossips to every
   non-mesh peer of the topic, as the spec says.
14. A write cancelled part-way breaks the whole connection. Noise encrypts a
   message (advancing its nonce) and then sends it; the send is a checkpoint,
   so a task cancelled there (a race another provider won, a worker torn down,
   a stream open abandoned) leaves the remote one nonce behind: it fails to
   decrypt every later message and drops the connection, with all its streams
   and gossip links. Large yamux frames are several Noise messages, so a cancel
   between them breaks yamux's framing the same way. `shield_noise_writes`
   makes each Noise write whole: shielded from cancellation, bounded by
   NOISE_WRITE_MAX_SEC (a peer that reads nothing for that long has lost the
   connection anyway). Process-wide, like defect 10.
15. A malformed pubsub RPC stops the node. The pubsub stream handler catches
   only stream, varint and short-read errors: bytes that are not a protobuf
   RPC (`google.protobuf.message.DecodeError`) escape it, end the connection's
   task group and with it the swarm service, and the node exits. Any peer can
   send them (the hostile simnet scenario did). `guard_pubsub_streams`
   registers a handler that runs the library's and turns any failure into what
   the library does for the errors it knows (reset the stream, drop the peer
   from pubsub), plus a penalty on the peer's score and a count.
16. The swarm's auto-connector dials on its own: below a low watermark of 100
   connections (a validator mesh always is) it dials every peer in the
   peerstore, on a 30 s tick and after every disconnect, up to "200 new
   dials". A peer the node forgot (`NetworkHost.forget`) was connected again,
   a random failure of `test_a_kept_peer_is_redialled_after_its_connection_drops`,
   and dense graphs got connections the gossip degree never asked for.
   `disable_auto_connector` makes its dial cycle a no-op: the node's own policy
   (bootstrap and kept peers, redialled with back-off) decides what it dials.
17. A host stopped by cancellation leaves sockets open. Its shutdown awaits the
   connections' and listeners' closes, but every await under a cancelled scope
   raises at once, so the swarm's close loop stops at the first one. A
   connection no task reads (the second of a simultaneous dial, which the
   per-peer limit does not stop) then stays open for the life of the process,
   its remote end in CLOSE_WAIT; the TCP listener, which runs in a trio system
   task, keeps accepting on the port, and as it listens with SO_REUSEPORT a host
   restarted on that port shares its inbound dials with the dead one. The
   2,000-slot soak's crash-and-restart faults grew the process by about 8
   descriptors per 100 slots. `close_sockets` closes every connection and
   listener, shielded and bounded by CLOSE_SOCKETS_MAX_SEC, before the host stops.
18. Every `Pubsub` starts a thread for its seen-messages cache (`LastSeenCache`,
   a sweep every 60 s) that nothing stops: `Pubsub.run` ends without calling
   the cache's `stop`. Each restarted node in a process (the soak, the
   in-process simnet, a supervisor's restart) leaves one thread and its cache
   behind: the third 2,000-slot soak ended with 35 of them where 5 nodes ran.
   `stop_seen_cache` stops it when the host closes.
19. The gossip message cache keys messages by sender and sequence number and
   ignores the message-id function the pubsub is given (ours: a content hash).
   IHAVE advertises the cache's keys, so peers never find them in their seen
   cache (which uses the real ids): every IHAVE of a message a peer already has
   makes it send IWANT, and a js-libp2p peer, which computes content ids,
   records a broken promise for each and scores this node down.
   `IcnGossipSub.attach` swaps in a cache keyed by the pubsub's own message ids.
20. Pubsub dials peers. When a peer connects, pubsub opens its stream to it
   through `host.new_stream`, which dials the peer if it is not connected, and
   retries with back-off while it "stays connected", checking that only after
   a failure. A peer that dropped (or that the node dropped) between the connect
   event and a retry is dialled again by the library: the cause of the random
   failures of `test_a_kept_peer_is_redialled_after_its_connection_drops` (about
   1 run in 12 with a busy core), which defect 16 did not end.
   `pubsub_never_dials` makes pubsub's stream opening use existing connections
   only; what the node dials stays the node's policy.
21. Two writers on one pubsub stream. Pubsub writes RPCs to a peer from that
   peer's outbound queue, and also directly, bypassing the queue, when it
   replays recent messages to a peer that subscribed and flushes messages held
   for a peer being identified. Nothing serialises them, and an RPC larger than
   a yamux frame is written in several: two at once interleave, and the peer
   reads garbage (a decode error: the stream is reset, with every message on
   it). `test_6` lost its 1 MiB message this way about 1 run in 10 on a busy
   machine. `serialize_pubsub_writes` makes each stream take one RPC at a time.
22. Yamux returns receive credit on every read. Besides go-yamux's rule (a
   WINDOW_UPDATE once half the window has been consumed), the stream sends one
   for whatever a read took whenever less than that is outstanding, and pubsub
   reads each message's varint length prefix a byte at a time: a 3 KB gossip
   message cost its receiver three WINDOW_UPDATE frames (each a Noise message
   and a send at one end, a read, a decryption and a lock at the other). In the
   loopback benchmark they outnumbered data frames 2.7 to 1.
   `window_updates_at_half` keeps go-yamux's rule only: credit goes back once
   half the window is consumed, with the library's own window auto-tuning.
23. A full yamux data frame does not fit in one Noise message. Yamux caps a
   frame at 64 KiB with its 12-byte header (65,536 bytes); Noise carries at most
   65,519 bytes of plaintext per message (65,535 less the 16-byte tag). So every
   full frame of a bulk transfer went out as two Noise messages, the second of
   17 bytes: two encryptions, two sends, two reads and decryptions at the
   other end for one frame. `yamux_frames_fit_noise` caps yamux frames at
   Noise's plaintext size; a 1 MiB transfer between two hosts costs 11 % less
   CPU (bench/RESULTS.md).
24. No setting for a stream's initial receive window. A yamux stream starts
   with the spec's 256 KiB and py-libp2p offers no way to ask for more (go-yamux
   has `InitialStreamWindowSize`, js-libp2p `initialStreamWindowSize`), so a
   stream that reads megabytes (a media session) hands credit back in a
   WINDOW_UPDATE every 128 KiB until the auto-tuning catches up: 266 of the
   3,576 Noise messages of a 5 MiB spread to 19 nodes. A SYN is itself a window
   update whose length is extra credit (the spec, and the library reads it so);
   `announce_receive_window` makes the SYN of a stream opened inside
   `receive_window(n)` offer n bytes, for the streams the node knows will read
   much. Other streams keep the default, so a peer can park no more unread data
   with this node than before.
25. A trio lock at every layer, each a trip through the scheduler. py-libp2p
   takes a `trio.Lock` for the TCP socket's reads and writes, the stream's state
   (each read and write), the yamux stream's window and the connection's
   writes: about ten per Noise message, and a cProfile of a spread counted
   88,000 acquisitions. An uncontended `trio.Lock.acquire` still yields to the
   scheduler (it is a checkpoint), so each costs a task reschedule: 77,000 of
   them, the largest item of the spread's CPU after the event loop itself.
   `eager_locks` gives those objects a lock that takes a free lock at once and
   waits, as trio's does, only when it is held: ownership, fairness (a released
   lock goes to the next waiter) and cancellation while waiting are trio's. What
   is lost is only the checkpoint of an acquisition that does not wait; every
   path that takes these locks then does socket I/O or waits on an event, which
   checkpoint. Process-wide, like defect 10.
26. An exception from any stream handler stops the host. The library runs each
   inbound stream's handler in the connection's task group, so an exception
   that escapes it ends that group, the swarm service and the node: defect 15
   was this for pubsub's own handler. The node's handlers catch what a peer can
   cause, but a write to a stream the peer has just reset raises from the
   library (`StreamReset`), and a handler's own bug would stop the node for one
   stream. `contained_handler` wraps every handler the node registers: a stream
   error is counted and the stream reset; anything else is logged with its
   traceback as a bug, counted, and the stream reset; the node goes on. (A
   certificate-sync test's lying peer, a handler of the test, met the first
   case about one run in four under load once negotiation got faster.)
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import struct
import time
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator

import trio
from libp2p.abc import INetStream
from libp2p.io.exceptions import IOException
from libp2p.io.trio import TrioTCPStream
from libp2p.network.config import ConnectionConfig
from libp2p.network.exceptions import SwarmException
from libp2p.network.stream.net_stream import NetStream
from libp2p.peer.id import ID
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.mcache import CacheEntry, MessageCache
from libp2p.pubsub.pb.rpc_pb2 import Message
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize, RpcQueue
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.pubsub.subscription import TrioSubscriptionAPI
from libp2p.security.noise import io as noise_io
from libp2p.security.noise.io import BaseNoiseMsgReadWriter
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.stream_muxer.yamux import yamux as yamux_module
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from network.settings import GossipSettings
from network.streams import reset

log = logging.getLogger(__name__)

LIBP2P_VERSION = "0.8.1"

QUIRKS = (
    "gossipsub heartbeat defaults to 120 s: set to [network.gossip].heartbeat_sec",
    "adaptive gossip rewrites degree bounds and slows gossip: disabled",
    "spam protection drops the 11th message/s/topic, publisher included: disabled (validators + scoring)",
    "GRAFT-flood check is inverted and collapses meshes after one PRUNE: disabled (prune back-off kept)",
    "each dial waits 250 ms after success (happy eyeballs): one connection per peer ends the wait",
    "outbound RPCs over 1 MiB are dropped silently: refused at publish with MessageTooLarge",
    "subscription queue holds 32 messages then drops: replaced by a queue of gossip.subscription_queue",
    "negative-score peers keep their mesh place: pruned each heartbeat, then graylisted",
    "eclipse protection needs distinct IPs in the mesh: disabled (permissioned validators, loopback simnets)",
    "per-peer outbound RPC queue holds 32 and drops bursts silently: enlarged to OUTBOUND_QUEUE_RPCS",
    "a peer whose dial failed is not redialled for 60 s (negative cache): cleared before our backed-off redials",
    "heartbeat pruning records no back-off, so pruned peers are re-grafted and refused in a loop: recorded",
    "IHAVE gossip skips peers in back-off, cutting pruned nodes off a topic: gossip to all non-mesh peers",
    "a write cancelled after Noise encrypted it desynchronises the session, dropping the connection: shielded",
    "a malformed pubsub RPC escapes the stream handler and stops the node: guarded per stream",
    "the swarm's auto-connector dials every known peer below 100 connections: its dial cycle disabled",
    "a host stopped by cancellation leaves connections and its listener open: closed, shielded, at exit",
    "each pubsub's seen-messages cache starts a sweeper thread that nothing stops: stopped at exit",
    "the gossip cache keys by sender+seqno, not the message id: IHAVE ids never match, peers IWANT: rekeyed",
    "pubsub's stream opening dials peers that dropped (retry after the connect event): existing connections only",
    "pubsub writes to a stream from its queue and directly, unserialised; large RPCs interleave: one at a time",
    "yamux sends a window update on every read (each varint byte of a pubsub message): at half the window",
    "a full yamux frame (65,536 bytes) exceeds a Noise message (65,519): two messages each; frames capped",
    "no initial stream window setting: bulk streams hand credit back every 128 KiB; their SYN offers more",
    "about ten trio locks per Noise message, each a scheduler trip even when free: free ones taken at once",
    "an exception from any stream handler stops the host: every handler contained, counted, stream reset",
)

OUTBOUND_QUEUE_RPCS = 1024

# Room for the RPC envelope (topic, from, seqno, key, signature, sender record) around the data.
_RPC_ENVELOPE_ROOM = 8 * 1024
MAX_GOSSIP_DATA = DefaultMaxMessageSize - _RPC_ENVELOPE_ROOM


class MessageTooLarge(ValueError):
    """A gossip message the library would drop without a word (defect 6)."""


NOISE_WRITE_MAX_SEC = 30.0


def shield_noise_writes() -> None:
    """Defect 14: every Noise message written whole once encrypted, whatever cancels the writer."""
    original = BaseNoiseMsgReadWriter.write_msg
    if getattr(original, "icn_shielded", False):
        return

    async def write_msg(self: BaseNoiseMsgReadWriter, msg: bytes, prefix_encoded: bool = False) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()  # not started yet: cancelling is still harmless
        with trio.CancelScope(shield=True), trio.fail_after(NOISE_WRITE_MAX_SEC):
            await original(self, msg, prefix_encoded)

    write_msg.icn_shielded = True  # type: ignore[attr-defined]
    BaseNoiseMsgReadWriter.write_msg = write_msg  # type: ignore[method-assign]


def window_updates_at_half() -> None:
    """Defect 22: yamux gives receive credit back once half the window is consumed, not on every read.

    The library's own method still decides how much (its auto-tuning grows the
    window on fast links); it is only not called for less than half a window.
    The sender never stalls for it: with half the window unreturned it still
    holds the other half, and the half is returned as soon as it is read."""
    original = YamuxStream._auto_tune_and_send_window_update
    if getattr(original, "icn_at_half", False):
        return

    async def at_half(self: YamuxStream, *, bytes_read: int = 0) -> None:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        consumed = self.target_recv_window - (self.recv_window + buffered)  # read and not yet credited
        if consumed > 0 and consumed >= self._grow_threshold():
            await original(self, bytes_read=0)  # its first branch: the window back to its (tuned) target

    at_half.icn_at_half = True  # type: ignore[attr-defined]
    YamuxStream._auto_tune_and_send_window_update = at_half  # type: ignore[method-assign]


def yamux_frames_fit_noise() -> None:
    """Defect 23: a yamux frame, header included, no larger than one Noise message's plaintext.

    Only the sender's frame size changes: yamux reads frames of any length, so a
    peer still sending 64 KiB frames is read as before."""
    yamux_module.MAX_MESSAGE_SIZE = min(yamux_module.MAX_MESSAGE_SIZE, noise_io.MAX_PLAINTEXT_LENGTH)


# (window, the task that asked): tasks started meanwhile copy the context, but a dial's side
# effects (pubsub opening its stream to the new peer) must keep the default window.
_RECEIVE_WINDOW: contextvars.ContextVar[tuple[int, object] | None] = contextvars.ContextVar(
    "receive_window", default=None
)


@contextlib.contextmanager
def receive_window(window: int) -> Iterator[None]:
    """Streams this task opens inside the block offer `window` bytes of receive credit (defect 24)."""
    if not yamux_module.DEFAULT_WINDOW_SIZE <= window <= yamux_module.MAX_WINDOW_SIZE:
        raise ValueError(f"a receive window of {window} bytes is outside yamux's 256 KiB-16 MiB")
    token = _RECEIVE_WINDOW.set((window, trio.lowlevel.current_task()))
    try:
        yield
    finally:
        _RECEIVE_WINDOW.reset(token)


def announce_receive_window() -> None:
    """Defect 24: a stream opened inside `receive_window(n)` offers n bytes in its SYN.

    `Yamux.open_stream` registers the stream and then writes its SYN, a window update of
    length 0; the SYN written under the context variable carries the extra credit, and the
    stream's own window and auto-tuning target start from n, so the at-half rule (defect 22)
    hands credit back once n / 2 is read."""
    original = yamux_module.Yamux._write_frame
    if getattr(original, "icn_receive_window", False):
        return
    header = struct.Struct(yamux_module.YAMUX_HEADER_FORMAT)
    syn = (yamux_module.TYPE_WINDOW_UPDATE, yamux_module.FLAG_SYN, 0)

    async def write_frame(self: yamux_module.Yamux, data: bytes) -> None:
        asked = _RECEIVE_WINDOW.get()
        if asked is not None and asked[1] is trio.lowlevel.current_task() and len(data) == header.size:
            window = asked[0]
            version, kind, flags, stream_id, length = header.unpack(data)
            stream = self.streams.get(stream_id)
            if (kind, flags, length) == syn and stream is not None and stream.is_initiator:
                stream.recv_window = stream.target_recv_window = window
                data = header.pack(version, kind, flags, stream_id, window - yamux_module.DEFAULT_WINDOW_SIZE)
        await original(self, data)

    write_frame.icn_receive_window = True  # type: ignore[attr-defined]
    yamux_module.Yamux._write_frame = write_frame  # type: ignore[method-assign]


class EagerLock:
    """A `trio.Lock` that takes a free lock without a checkpoint (defect 25); held, it waits as trio's.

    trio's locks cannot be subclassed, so this one holds one and adds only the fast path:
    `acquire_nowait` succeeds only on a lock nobody holds or waits for (trio hands a released
    lock straight to its next waiter), so no waiter is overtaken."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def acquire(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    def acquire_nowait(self) -> None:
        self._lock.acquire_nowait()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def statistics(self) -> object:
        return self._lock.statistics()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


# The objects of a connection's data path and the trio locks each takes on every read or write.
_DATA_PATH_LOCKS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (TrioTCPStream, ("read_lock", "write_lock")),
    (NetStream, ("_state_lock",)),
    (YamuxStream, ("window_lock", "close_lock")),
    (yamux_module.Yamux, ("streams_lock", "_write_lock")),
)


def eager_locks() -> None:
    """Defect 25: the data path's locks take a free lock without a trip through the scheduler.

    Each class's constructor is wrapped to swap its `trio.Lock` attributes for `EagerLock`s;
    an attribute that is no longer a `trio.Lock` (a library change) is left alone, and
    `tests/network/test_quirks.py` fails on it."""
    for cls, names in _DATA_PATH_LOCKS:
        if not getattr(cls.__init__, "icn_eager_locks", False):
            cls.__init__ = _swapping_locks(cls.__init__, names)  # type: ignore[misc]


def _swapping_locks(init: Callable[..., None], names: tuple[str, ...]) -> Callable[..., None]:
    def swapped(self: object, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)
        for name in names:
            if isinstance(getattr(self, name, None), trio.Lock):
                setattr(self, name, EagerLock())

    swapped.icn_eager_locks = True  # type: ignore[attr-defined]
    return swapped


def check_gossip_size(data: bytes) -> None:
    if len(data) > MAX_GOSSIP_DATA:
        raise MessageTooLarge(
            f"gossip message of {len(data)} bytes exceeds {MAX_GOSSIP_DATA} "
            "(py-libp2p drops RPCs over 1 MiB); send large content over the media protocol"
        )


def connection_config(dial_timeout: float) -> ConnectionConfig:
    """Defect 5: with at most one connection per peer a dial returns when it succeeds."""
    return ConnectionConfig(max_connections_per_peer=1, dial_timeout=dial_timeout)


def disable_auto_connector(swarm: object) -> None:
    """Defect 16: the library dials no peer on its own; what the node dials is the node's policy."""
    connector = getattr(swarm, "auto_connector", None)
    if connector is None or not hasattr(connector, "maybe_connect"):
        raise RuntimeError(
            f"py-libp2p {LIBP2P_VERSION}'s swarm has no auto-connector to disable: see defect 16"
        )

    async def no_dials() -> None:
        return None

    connector.maybe_connect = no_dials  # what both its periodic tick and the disconnect hook call


_PUBSUB_OPENING: contextvars.ContextVar[bool] = contextvars.ContextVar("pubsub_opening", default=False)


def pubsub_never_dials(pubsub: Pubsub, swarm: object) -> None:
    """Defect 20: pubsub opens its streams on existing connections only; it never dials.

    The library's stream opening is marked (a context variable, so only that task's calls see
    it) and the swarm's dial refuses marked calls with the error pubsub's retry loop expects;
    the loop then finds the peer disconnected and gives up, as it was meant to."""
    handle_new_peer = pubsub._handle_new_peer
    dial_peer = swarm.dial_peer  # type: ignore[attr-defined]

    async def opening_stream(peer_id: ID) -> None:
        token = _PUBSUB_OPENING.set(True)
        try:
            await handle_new_peer(peer_id)
        finally:
            _PUBSUB_OPENING.reset(token)

    async def guarded_dial(peer_id: ID, *args: object, **kwargs: object) -> object:
        if _PUBSUB_OPENING.get():
            raise SwarmException(f"pubsub does not dial {peer_id}: no connection to open a stream on")
        return await dial_peer(peer_id, *args, **kwargs)

    pubsub._handle_new_peer = opening_stream  # type: ignore[method-assign]
    swarm.dial_peer = guarded_dial  # type: ignore[attr-defined]


def serialize_pubsub_writes(pubsub: Pubsub) -> None:
    """Defect 21: one RPC at a time on each pubsub stream, whichever of the library's writers sends it."""
    write_msg = pubsub.write_msg
    locks: weakref.WeakKeyDictionary[object, trio.Lock] = weakref.WeakKeyDictionary()

    async def one_at_a_time(stream: object, rpc_msg: object) -> bool:
        lock = locks.get(stream)
        if lock is None:
            lock = locks[stream] = trio.Lock()
        async with lock:
            return await write_msg(stream, rpc_msg)  # type: ignore[arg-type]

    pubsub.write_msg = one_at_a_time  # type: ignore[method-assign,assignment]


CLOSE_SOCKETS_MAX_SEC = 2.0


async def close_sockets(swarm: object) -> None:
    """Defect 17: close every connection and listener of a stopping host, even one stopped by cancellation."""
    connections, listeners = getattr(swarm, "connections", None), getattr(swarm, "listeners", None)
    if not isinstance(connections, dict) or not isinstance(listeners, dict):
        raise RuntimeError(
            f"py-libp2p {LIBP2P_VERSION}'s swarm has no connection or listener map: see defect 17"
        )
    closing = [(str(peer), conn) for peer, conns in connections.items() for conn in conns]
    closing += [(str(addr), listener) for addr, listener in listeners.items()]
    with trio.move_on_after(CLOSE_SOCKETS_MAX_SEC, shield=True):
        for name, item in closing:
            try:
                await item.close()
            except Exception as exc:  # one broken socket must not keep the others open
                log.debug("closing %s failed: %s", name, exc)


def stop_seen_cache(pubsub: Pubsub) -> None:
    """Defect 18: stop the sweeper thread of a stopping pubsub's seen-messages cache (returns at once:
    the thread waits on the event `stop` sets)."""
    cache = getattr(pubsub, "seen_messages", None)
    stop = getattr(cache, "stop", None)
    if stop is None:
        raise RuntimeError(
            f"py-libp2p {LIBP2P_VERSION}'s pubsub has no stoppable seen_messages: see defect 18"
        )
    stop()


def forget_dial_failure(swarm: object, peer: ID) -> None:
    """Defect 11: let our own back-off, not the swarm's 60 s negative cache, pace redials."""
    cache = getattr(swarm, "_negative_peer_cache", None)
    if cache is not None:
        cache.evict(str(peer))


def score_params(settings: GossipSettings, app_score: Callable[[ID], float] | None = None) -> ScoreParams:
    """Scores that only ever punish invalid messages: honest peers sit at 0, a liar sinks.

    One invalid message costs 10 (decaying by `invalid_penalty_decay` a heartbeat); the graylist sits at
    `graylist_score` (default -20), so a peer sending a few invalid messages in
    a short time is pruned and ignored, and forgiven a minute or so later.
    `app_score` (the node's `PeerReputation.score`) adds penalties for
    misbehaviour outside gossip, such as serving bad media.
    """
    return ScoreParams(
        p4_invalid_messages=TopicScoreParams(weight=10.0, cap=1000.0, decay=settings.invalid_penalty_decay),
        publish_threshold=settings.graylist_score,
        gossip_threshold=settings.graylist_score,
        graylist_threshold=settings.graylist_score,
        accept_px_threshold=-math.inf,
        app_specific_score_fn=app_score,
        p6_appl_slack_weight=1.0,
    )


class _LargeRpcQueue(RpcQueue):
    def __init__(self, max_size: int = OUTBOUND_QUEUE_RPCS, max_message_size: int = DefaultMaxMessageSize):
        super().__init__(max_size=max_size, max_message_size=max_message_size)


def enlarge_outbound_queues() -> None:
    """Defect 10: the per-peer queues pubsub creates from now on hold OUTBOUND_QUEUE_RPCS."""
    pubsub_module.RpcQueue = _LargeRpcQueue


BACKOFF_SLACK_SEC = 2


class _MessageIdCache(MessageCache):
    """Defect 19: the gossip cache keyed by the message ids every peer computes."""

    def __init__(self, window_size: int, history_size: int, message_id: Callable[[Message], bytes]) -> None:
        super().__init__(window_size, history_size)
        self._message_id = message_id

    def put(self, msg: Message) -> None:
        mid = self._message_id(msg)
        if mid not in self.msgs:
            self.msgs[mid] = msg
            self.history[0].append(CacheEntry(mid, msg.topicIDs))


class IcnGossipSub(GossipSub):
    """GossipSub with the defects that need a method override fixed (4, 12, 13 and 19)."""

    def attach(self, pubsub: Pubsub) -> None:
        super().attach(pubsub)
        self.mcache = _MessageIdCache(
            self.mcache.window_size, self.mcache.history_size, pubsub.get_message_id
        )

    def mesh_heartbeat(self):  # noqa: ANN201 - the library's signature
        peers_to_graft, peers_to_prune = super().mesh_heartbeat()
        for peer, topics in peers_to_prune.items():  # defect 12
            for topic in topics:
                self._add_back_off(peer, topic, False, self.prune_back_off + BACKOFF_SLACK_SEC)
        return peers_to_graft, peers_to_prune

    async def handle_graft(self, graft_msg, sender_peer_id: ID) -> None:  # noqa: ANN001
        topic = graft_msg.topicID
        until = self.back_off.get(topic, {}).get(sender_peer_id)
        if until is not None and until - time.time() <= BACKOFF_SLACK_SEC:  # defect 12: only our slack left
            del self.back_off[topic][sender_peer_id]
        await super().handle_graft(graft_msg, sender_peer_id)

    def gossip_heartbeat(self):  # noqa: ANN201 - defect 13: back-off does not apply to IHAVE
        peers_to_gossip: dict = defaultdict(dict)
        topics = {**{t: p for t, p in self.fanout.items() if t not in self.mesh}, **self.mesh}
        for topic, current in topics.items():
            if topic not in self.pubsub.peer_topics:
                continue
            msg_ids = self.mcache.window(topic)
            if not msg_ids:
                continue
            others = len(self.pubsub.peer_topics.get(topic, ())) - len(current)
            count = self._get_adaptive_gossip_peers_count(topic, others)
            for peer in self._get_in_topic_gossipsub_peers_from_minus(topic, count, current, False):
                peers_to_gossip[peer][topic] = list(msg_ids)
        return peers_to_gossip

    async def handle_prune(self, prune_msg, sender_peer_id: ID) -> None:  # noqa: ANN001
        await super().handle_prune(prune_msg, sender_peer_id)
        topic = prune_msg.topicID
        if sender_peer_id in self.back_off.get(topic, {}):  # defect 12: never graft back early
            self.back_off[topic][sender_peer_id] += BACKOFF_SLACK_SEC

    def _check_graft_flood_protection(self, peer_id: ID, topic: str) -> bool:  # defect 4
        return True


def build_gossipsub(
    protocols: list, settings: GossipSettings, app_score: Callable[[ID], float] | None = None
) -> GossipSub:
    router = IcnGossipSub(
        protocols=protocols,
        degree=settings.degree,
        degree_low=settings.degree_low,
        degree_high=settings.degree_high,
        heartbeat_interval=settings.heartbeat_sec,  # defect 1
        heartbeat_initial_delay=min(0.1, settings.heartbeat_sec),
        prune_back_off=settings.prune_backoff_sec,
        unsubscribe_back_off=min(10, settings.prune_backoff_sec),
        score_params=score_params(settings, app_score),
        adaptive_gossip_enabled=False,  # defect 2
        spam_protection_enabled=False,  # defect 3
        eclipse_protection_enabled=False,  # defect 9
    )
    enlarge_outbound_queues()  # defect 10
    return router


async def subscribe_with_queue(pubsub: Pubsub, topic: str, size: int) -> TrioSubscriptionAPI:
    """Defect 7: subscribe, then replace the library's 32-slot queue with one of `size`."""
    await pubsub.subscribe(topic)
    send, receive = trio.open_memory_channel(size)
    old_send = pubsub.subscribed_topics_send[topic]
    pubsub.subscribed_topics_send[topic] = send
    subscription = TrioSubscriptionAPI(receive, unsubscribe_fn=lambda: pubsub.unsubscribe(topic))
    pubsub.subscribed_topics_receive[topic] = subscription
    await old_send.aclose()
    return subscription


async def evict_low_scorers(router: GossipSub) -> list[tuple[str, ID]]:
    """Defect 8: prune from every mesh the peers whose score is below the graylist threshold."""
    scorer = router.scorer
    if scorer is None:
        return []
    evicted = []
    for topic, peers in list(router.mesh.items()):
        for peer in list(peers):
            if scorer.is_graylisted(peer, [topic]):
                peers.discard(peer)
                scorer.on_leave_mesh(peer, topic)
                evicted.append((topic, peer))
                try:
                    await router.emit_prune(topic, peer, False, False)
                except Exception as exc:  # the peer may be gone already; the mesh change stands
                    log.debug("prune of %s on %s not sent: %s", peer, topic, exc)
    return evicted


# What the library raises when a stream's peer reset or closed it, or its connection went away
# (its stream errors, StreamReset and StreamEOF among them, are IOExceptions).
_STREAM_GONE: tuple[type[BaseException], ...] = (IOException, MuxedStreamError, trio.BrokenResourceError)


def contained_handler(
    protocol: str, handler: Callable[[INetStream], Awaitable[None]], on_error: Callable[[str, bool], None]
) -> Callable[[INetStream], Awaitable[None]]:
    """Defect 26: a stream handler whose failures end its stream, never the host.

    `on_error(protocol, is_bug)` counts each: False for the stream going away under the
    handler, True for anything else (logged here with its traceback)."""

    async def contained(stream: INetStream) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            bug = not isinstance(exc, _STREAM_GONE)
            if bug:
                log.exception("stream handler for %s failed; the stream is reset, the node goes on", protocol)
            else:
                log.debug("%s stream went away under its handler: %s", protocol, exc)
            on_error(protocol, bug)
            await reset(stream)

    return contained


def guard_pubsub_streams(
    host: object, pubsub: Pubsub, protocols: list[str], on_bad_rpc: Callable[[ID, Exception], None]
) -> None:
    """Defect 15: pubsub's inbound streams, with every failure contained to that stream and peer."""

    async def guarded(stream: object) -> None:
        peer = stream.muxed_conn.peer_id  # type: ignore[attr-defined]
        try:
            await pubsub.stream_handler(stream)  # type: ignore[arg-type]
        except Exception as exc:  # what the library lets escape: nothing a peer sends may stop the node
            on_bad_rpc(peer, exc)
            try:
                await stream.reset()  # type: ignore[attr-defined]
            except Exception as reset_exc:  # already gone
                log.debug("reset after a bad RPC failed: %s", reset_exc)
            pubsub._handle_dead_peer(peer)

    for protocol in protocols:
        host.set_stream_handler(protocol, guarded)  # type: ignore[attr-defined]
