"""The ICN node: the composition root that wires its components and runs them.

Ownership: `Node.run` opens the host and one nursery; the gossip readers, the
HTTP face, catch-up and the slot lifecycle live there, each a component with
its own module:

- `node.lifecycle`: the slot clock and each slot's phases (generation,
  verification, agreement, propagation) under their deadlines;
- `node.studio`: the one task that runs the engine, making each slot this node
  directs as soon as its recipe is settled, often a slot ahead;
- `node.slot_driver`: one task per slot that alone drives its agreement from
  one inbox;
- `node.chain`: certificates (from any door), the evidence pool, catch-up;
- `node.recipes`: the proposal queue and each slot's recipe;
- `node.propagation`: fetching certified media, announcing what is held;
- `node.api`: status, metrics and the HTTP routes.

Components talk through the small interfaces of `node.ports`; a `Behaviour`
(honest here; lying ones only in the simnet) wraps what the node sends and
announces.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from libp2p.peer.id import ID

from consensus.ledger import Ledger
from consensus.messages import Announce, Signed
from generation.pipeline import VortexPipeline
from generation.recipe import Recipe
from network.certsync import CertificateSync
from network.faults import FaultPlan
from network.gossip import Gossip
from network.host import NetworkHost, open_host
from network.identity import Identity, load_key_file, peer_id_of
from network.media.store import MediaStore
from network.media.transfer import MediaService
from network.topics import Topic
from node import api, logs, web
from node.chain import ChainKeeper
from node.clip import Announcements
from node.clock import WallClock
from node.engine import build_engine
from node.lifecycle import SlotLifecycle, SlotRecord
from node.metrics import NodeMetrics
from node.playout import SegmentCache
from node.ports import Behaviour, Honest, publish_own
from node.production import EngineMaker
from node.propagation import MediaPropagation
from node.public_face import PublicFace
from node.recipes import RecipeQueue, load_fallback
from node.retention import Retention
from node.settings import NodeSettings
from node.slot_driver import SlotDrivers, SlotPorts
from node.storage import Storage
from node.studio import ChainProgramme, Studio

if TYPE_CHECKING:  # trio's own types are shadowed for mypy by trio-typing's stubs (a libp2p dependency)
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)


class GossipBroadcaster:
    """The honest broadcaster: this node's consensus messages on the votes topic.

    Gossip does not hand a node its own messages back, so its own announcement
    is noted here for the slot's CLIP scores."""

    def __init__(self, gossip: Gossip, announcements: Announcements) -> None:
        self._gossip = gossip
        self._announcements = announcements

    async def broadcast(self, msg: Signed) -> None:
        if isinstance(msg, Announce):
            self._announcements.record(msg)
        await publish_own(self._gossip, Topic.VOTES, msg.encode())


class _PeersForCatchUp:
    """Catch-up's view of the host: connected peers, the certificate-sync protocol, reputation."""

    def __init__(self, net: NetworkHost, sync: CertificateSync) -> None:
        self._net, self._sync = net, sync

    def connected_peers(self) -> list[ID]:
        return self._net.connected_peers()

    async def fetch(self, peer: ID, start: int, count: int) -> Sequence[bytes]:
        return await self._sync.fetch(peer, start, count)

    def penalize(self, peer: ID, reason: str) -> None:
        self._net.reputation.penalize(peer, reason)


class Node:
    def __init__(
        self,
        settings: NodeSettings,
        *,
        engine: VortexPipeline | None = None,
        identity: Identity | None = None,
        faults: FaultPlan | None = None,
        wall: Callable[[], float] | None = None,
        name: str | None = None,
        behaviour: Behaviour | None = None,
    ) -> None:
        self.settings = settings
        self.genesis = settings.chain.genesis()
        self.chain_id = self.genesis.chain_id
        self.ledger = Ledger(self.genesis)
        self.identity = identity or load_key_file(settings.node.key_file)
        self.faults = faults
        self.clock = WallClock(wall) if wall is not None else WallClock()
        self.name = name or str(self.identity.peer_id)[-8:]
        self.behaviour: Behaviour = behaviour or Honest()
        storage_dir = Path(settings.node.storage_dir)
        self.storage = Storage(storage_dir / "node.sqlite", self.chain_id)
        self.media_store = MediaStore(
            storage_dir / "media", max_file_bytes=settings.network.media.max_file_bytes
        )
        self.workdir = storage_dir / "work"
        shutil.rmtree(self.workdir, ignore_errors=True)  # a slot's files left by a crash: never needed again
        self.segments = SegmentCache(storage_dir / "hls")
        self.engine = engine
        self.metrics = NodeMetrics()
        self.recipes = RecipeQueue(
            self.ledger, load_fallback(settings.node.fallback_recipe), settings.limits.recipe_queue
        )
        self.chain = ChainKeeper(
            self.ledger,
            self.storage,
            self.recipes,
            self.metrics,
            self.clock.now,
            catch_up_batch=settings.limits.catch_up_batch,
        )
        self.drivers = SlotDrivers()
        self.net: NetworkHost | None = None
        self.gossip: Gossip | None = None
        self.media: MediaPropagation | None = None
        self.lifecycle: SlotLifecycle | None = None
        self.http_port: int | None = None  # the operator face
        self.public_port: int | None = None  # the public face (viewer, playlist, media)
        self.public_face: PublicFace | None = None  # when it runs in its own process
        self.token = web.read_token(settings.http.token_file)
        self.chain.restore()
        self.retention = Retention(
            settings.storage, self.media_store, self.storage, self.ledger, self.metrics,
            self.current_slot, self.clock.now,
            protected_slots=settings.http.playlist_slots + 2,  # the live window, and the slot being agreed
        )  # fmt: skip

    # -- ValidationContext (gossip checks) ------------------------------------------------------------
    def current_slot(self) -> int:
        return max(self.genesis.slot_at(self.clock.now()), 0)

    def directors(self, slot: int) -> tuple[bytes, ...] | None:
        return self.ledger.directors(slot) if slot >= 0 else None

    # -- read-only views, for status and tests -----------------------------------------------------------
    @property
    def records(self) -> dict[int, SlotRecord]:
        return self.lifecycle.records if self.lifecycle is not None else {}

    # -- running --------------------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        logs.node_name.set(self.name)
        if self.engine is None:
            self.engine = await trio.to_thread.run_sync(build_engine, self.settings.generation)
        try:
            async with open_host(self.identity, self.settings.network, faults=self.faults) as net:
                self.net = net
                gossip = self.gossip = Gossip(net, self)
                await gossip.start()
                self.chain.gossip = gossip
                service = MediaService(net, self.media_store)
                self.media = MediaPropagation(
                    service, self.media_store, self.storage, self.metrics, gossip,
                    self.genesis.slot_start, self.clock.now,
                )  # fmt: skip
                ports = SlotPorts(
                    self.behaviour.broadcaster(GossipBroadcaster(gossip, self.chain.announcements)),
                    self.chain,
                    self.chain,
                )
                studio = Studio(
                    EngineMaker(self.engine, self.media_store, self.storage, self.workdir),
                    ChainProgramme(self.ledger, self.recipes, self.chain, self.identity.public_key),
                    self.genesis,
                    self.clock,
                    ends_at=self.settings.slot.verification_end,
                )
                self.lifecycle = SlotLifecycle(
                    genesis=self.genesis,
                    plan=self.settings.slot,
                    agreement=self.settings.agreement.config(),
                    identity=self.identity,
                    ledger=self.ledger,
                    storage=self.storage,
                    chain=self.chain,
                    recipes=self.recipes,
                    drivers=self.drivers,
                    ports=ports,
                    behaviour=self.behaviour,
                    studio=studio,
                    propagation=self.media,
                    metrics=self.metrics,
                    clock=self.clock,
                )
                sync = CertificateSync(net, self.storage.certificate_data)
                api.watch_metrics(self.metrics, net, gossip, service, self.drivers, self.engine)
                async with trio.open_nursery() as nursery:
                    http = self.settings.http
                    operator_addr = self.settings.node.http_addr
                    operator = web.Face(
                        self.metrics, self, recipes_need_token=not web.is_loopback(operator_addr)
                    )
                    self.http_port = await nursery.start(
                        web.serve, web.build_app(self, operator, http, self.token), operator_addr, http
                    )
                    if http.public_process:
                        self.public_face = PublicFace(self.settings)
                        self.public_port = await nursery.start(self.public_face.run)
                    else:
                        public = web.Face(None, self, recipes_need_token=True)
                        self.public_port = await nursery.start(
                            web.serve, web.build_app(self, public, http, self.token), http.public_addr, http
                        )
                    nursery.start_soon(self._votes_loop)
                    nursery.start_soon(self._certificates_loop)
                    nursery.start_soon(self._evidence_loop)
                    nursery.start_soon(self._recipes_loop)
                    nursery.start_soon(self._media_have_loop, service)
                    nursery.start_soon(self.chain.catch_up_loop, _PeersForCatchUp(net, sync))
                    nursery.start_soon(studio.run)
                    nursery.start_soon(self.lifecycle.run)
                    nursery.start_soon(self.retention.run)
                    log.info("node %s up: %s", net.peer_id, [str(a) for a in net.addrs()])
                    task_status.started(self)
        finally:
            self.storage.close()

    async def submit_recipe(self, recipe: Recipe) -> bytes:
        """Publish a network-valid recipe (see `network_recipe`), then queue it for our own proposals."""
        assert self.gossip is not None, "the node is not running"
        return await self.recipes.submit(recipe, self.gossip)

    def status(self) -> dict[str, Any]:
        return api.status(self)

    def media_path(self, slot: int) -> Path | None:
        """The committed MP4 of `slot`, if this node holds it."""
        return api.committed_media(self.ledger, self.media_store, slot)

    # -- gossip readers --------------------------------------------------------------------------------
    async def _votes_loop(self) -> None:
        assert self.gossip is not None and self.media is not None
        async for msg in self.gossip.inbox(Topic.VOTES):
            signed: Signed = msg.message
            if isinstance(signed, Announce):
                self.media.announced(signed.content_hash, peer_id_of(signed.signer))
                self.chain.announcements.record(signed)
            await self.drivers.deliver(signed, self.current_slot())

    async def _certificates_loop(self) -> None:
        assert self.gossip is not None and self.media is not None
        media = self.media
        async with trio.open_nursery() as fetches:
            async for msg in self.gossip.inbox(Topic.CERTIFICATES):
                cert = msg.message
                if not await self.chain.commit(cert, "gossip"):
                    continue
                if self.drivers.get(cert.slot) is None and self.current_slot() - cert.slot <= 1:
                    # a slot this node did not run (it started late): its media until the next slot begins
                    deadline = self.clock.deadline(self.genesis.slot_start(cert.slot + 1))
                    fetches.start_soon(_fetch_until, media, cert, deadline)

    async def _evidence_loop(self) -> None:
        assert self.gossip is not None
        async for msg in self.gossip.inbox(Topic.EVIDENCE):
            await self.chain.take_evidence(msg.message, publish=False)

    async def _recipes_loop(self) -> None:
        assert self.gossip is not None
        async for msg in self.gossip.inbox(Topic.RECIPES):
            self.recipes.queue(msg.message)

    async def _media_have_loop(self, service: MediaService) -> None:
        assert self.gossip is not None
        async for msg in self.gossip.inbox(Topic.MEDIA_HAVE):
            service.add_provider(msg.message.cid, msg.origin, msg.message.addrs)


async def _fetch_until(media: MediaPropagation, cert: Any, deadline: float) -> None:
    with trio.move_on_at(deadline):
        await media.ensure(cert)
