"""The node's libp2p host: Noise-only TCP with yamux, gossipsub, and kept connections.

`open_host` is the one way to get a running host: it builds it through
`libp2p_quirks`, runs it, its pubsub and its router in one nursery, and tears
all of it down when the block exits (cancellation, not flags). Peers named as
bootstrap, or connected with `keep=True`, are redialled with exponential
back-off whenever their connection drops, which is also how a healed partition
rejoins the mesh.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import multiaddr
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_PROTOCOL_ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from network import faults as fault_layer
from network import libp2p_quirks as quirks
from network.identity import Identity
from network.lazy_select import LazyStream
from network.media.content import gossip_message_id
from network.reputation import PeerReputation
from network.settings import NetworkSettings

log = logging.getLogger(__name__)

StreamHandler = Callable[[INetStream], Awaitable[None]]


@dataclass
class HostStats:
    dials: int = 0
    dial_failures: int = 0
    reconnects: int = 0
    bad_rpcs: int = 0  # pubsub streams that sent what is not a valid RPC (libp2p defect 15)
    # inbound streams whose handler failed, by (protocol, "stream gone" or "bug"): the stream went
    # away under it, or a bug (logged with its traceback); only that stream ends (libp2p defect 26)
    handler_failures: Counter = field(default_factory=Counter)
    evicted: list[tuple[str, ID]] = field(default_factory=list)


class NetworkHost:
    """A running host; made by `open_host`, valid inside its block."""

    def __init__(
        self,
        identity: Identity,
        settings: NetworkSettings,
        host: IHost,
        pubsub: Pubsub,
        router: object,
        nursery: trio.Nursery,
        reputation: PeerReputation,
        stats: HostStats | None = None,
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.host = host
        self.pubsub = pubsub
        self.router = router
        self.stats = stats or HostStats()
        self.reputation = reputation
        self._nursery = nursery
        self._kept: dict[ID, trio.CancelScope] = {}

    @property
    def peer_id(self) -> ID:
        return self.host.get_id()

    def addrs(self) -> list[multiaddr.Multiaddr]:
        """Where others can dial this host, each ending in /p2p/<peer id>."""
        return list(self.host.get_addrs())

    def connected_peers(self) -> list[ID]:
        return list(self.host.get_connected_peers())

    def is_connected(self, peer: ID) -> bool:
        return peer in self.host.get_connected_peers()

    async def connect(self, addr: str | multiaddr.Multiaddr | PeerInfo, *, keep: bool = True) -> None:
        """Dial a peer now (raising if that fails) and, with `keep`, redial it whenever it drops."""
        info = addr if isinstance(addr, PeerInfo) else info_from_p2p_addr(multiaddr.Multiaddr(str(addr)))
        await self._dial(info)
        if keep:
            self.keep_connected(info)

    def keep_connected(self, info: PeerInfo) -> None:
        if info.peer_id in self._kept or info.peer_id == self.peer_id:
            return
        scope = trio.CancelScope()
        self._kept[info.peer_id] = scope
        self._nursery.start_soon(self._keeper, info, scope)

    def forget(self, peer: ID) -> None:
        """Stop redialling a peer (its current connection, if any, stays)."""
        scope = self._kept.pop(peer, None)
        if scope is not None:
            scope.cancel()

    async def disconnect(self, peer: ID) -> None:
        self.forget(peer)
        await self.host.disconnect(peer)

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Serve `protocol`; whatever the handler raises ends its stream only (libp2p defect 26)."""
        self.host.set_stream_handler(
            TProtocol(protocol), quirks.contained_handler(protocol, handler, self._failed)
        )

    def _failed(self, protocol: str, bug: bool) -> None:
        self.stats.handler_failures[protocol, "bug" if bug else "stream gone"] += 1

    async def new_stream(self, peer: ID, protocol: str, *, receive_window: int | None = None) -> INetStream:
        """A stream to `peer` for `protocol`, negotiated with its first write (`LazyStream`: one round
        trip less than the library's `new_stream`), dialling the peer if it is not connected.

        `receive_window` (bytes) is the credit the stream offers from the start, for a stream
        that will read much (libp2p defect 24); the default is yamux's 256 KiB."""
        network = self.host.get_network()
        if receive_window is None:
            stream = await network.new_stream(peer)
        else:
            with quirks.receive_window(receive_window):
                stream = await network.new_stream(peer)
        stream.set_protocol(TProtocol(protocol))
        return LazyStream(stream, protocol)  # type: ignore[return-value]  # an INetStream by delegation

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run a task owned by the host: it ends when the host closes."""
        self._nursery.start_soon(fn, *args)

    # -- internals ------------------------------------------------------------------------------
    async def _dial(self, info: PeerInfo) -> None:
        self.stats.dials += 1
        quirks.forget_dial_failure(self.host.get_network(), info.peer_id)
        try:
            with trio.fail_after(self.settings.reconnect.dial_timeout_sec):
                await self.host.connect(info)
        except BaseException:
            self.stats.dial_failures += 1
            raise

    async def _keeper(self, info: PeerInfo, scope: trio.CancelScope) -> None:
        cfg = self.settings.reconnect
        backoff = cfg.initial_backoff_sec
        with scope:
            while True:
                if self.is_connected(info.peer_id):
                    backoff = cfg.initial_backoff_sec
                    await trio.sleep(cfg.initial_backoff_sec)
                    continue
                try:
                    await self._dial(info)
                    self.stats.reconnects += 1
                    log.info("reconnected to %s", info.peer_id)
                    continue
                except (Exception, trio.TooSlowError) as exc:
                    log.debug("dial %s failed: %s; next try in %.1f s", info.peer_id, exc, backoff)
                await trio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, cfg.max_backoff_sec)

    async def _evict_loop(self) -> None:
        while True:
            await trio.sleep(self.settings.gossip.heartbeat_sec)
            self.stats.evicted.extend(await quirks.evict_low_scorers(self.router))


def build_libp2p_host(identity: Identity, settings: NetworkSettings) -> IHost:
    """Noise is the only security transport offered or accepted; yamux the only muxer."""
    quirks.shield_noise_writes()  # defect 14
    quirks.window_updates_at_half()  # defect 22
    quirks.yamux_frames_fit_noise()  # defect 23
    quirks.announce_receive_window()  # defect 24
    quirks.eager_locks()  # defect 25
    key_pair = identity.key_pair
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt=create_yamux_muxer_option(),
        listen_addrs=[multiaddr.Multiaddr(a) for a in settings.listen],
        connection_config=quirks.connection_config(settings.reconnect.dial_timeout_sec),
    )
    quirks.disable_auto_connector(host.get_network())  # defect 16
    return host


@asynccontextmanager
async def open_host(
    identity: Identity,
    settings: NetworkSettings,
    *,
    faults: fault_layer.FaultPlan | None = None,
) -> AsyncIterator[NetworkHost]:
    host = build_libp2p_host(identity, settings)
    reputation = PeerReputation()
    router = quirks.build_gossipsub(
        [PROTOCOL_ID_V11, GOSSIPSUB_PROTOCOL_ID], settings.gossip, reputation.score
    )
    pubsub = Pubsub(
        host,
        router,
        msg_id_constructor=gossip_message_id,
        seen_ttl=settings.gossip.seen_ttl_sec,
        cache_size=8192,
    )
    stats = HostStats()

    def bad_rpc(peer: ID, exc: Exception) -> None:
        stats.bad_rpcs += 1
        reputation.penalize(peer, "bad_rpc")
        log.info("bad pubsub RPC from %s: %s: %s", peer, type(exc).__name__, str(exc)[:200])

    quirks.guard_pubsub_streams(host, pubsub, list(router.get_protocols()), bad_rpc)
    quirks.pubsub_never_dials(pubsub, host.get_network())  # defect 20
    quirks.serialize_pubsub_writes(pubsub)  # defect 21
    listen = [multiaddr.Multiaddr(a) for a in settings.listen]
    failure: BaseException | None = None
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(host.run(listen))
        stack.push_async_callback(quirks.close_sockets, host.get_network())  # defect 17
        stack.callback(quirks.stop_seen_cache, pubsub)  # defect 18
        nursery = await stack.enter_async_context(trio.open_nursery())
        # Our tasks are cancelled only once pubsub and the router have stopped (exit callbacks run last
        # in, first out). Cancelling them first made the services' clean-up raise Cancelled, which
        # replaced an error from the block's body and was then caught by this very scope: the error
        # vanished and the process lived on as a silent zombie.
        stack.callback(nursery.cancel_scope.cancel)
        if faults is not None:
            fault_layer.install(host.get_network(), faults, nursery)
        await stack.enter_async_context(background_trio_service(pubsub))
        await stack.enter_async_context(background_trio_service(router))
        await pubsub.wait_until_ready()
        net = NetworkHost(identity, settings, host, pubsub, router, nursery, reputation, stats)
        nursery.start_soon(net._evict_loop)
        for addr in settings.bootstrap:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            net.keep_connected(info)
        try:
            yield net
        except BaseException as exc:
            failure = exc
            raise
    if failure is not None:  # a library's clean-up swallowed the body's error after all: never lose it
        raise failure
