"""The ICN node: one trio program that follows the slot clock and plays its part in every slot.

Ownership: `Node.run` opens the host and one nursery; every long-lived task
(gossip readers, certificate follower, recipe intake, catch-up, HTTP, the slot
clock) lives there, and every slot runs as its own task under a cancel scope
that ends with the slot, so a slot that overruns is cut off, recorded, and
never delays the next. Phases inside a slot run under their own deadlines.

Consensus is the sans-IO `SlotAgreement`; this module is its driver: it feeds
checked messages and timer expiries in, and carries the returned actions out
(publish, arm a timer, store and apply a certificate, publish evidence).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from consensus.actions import Action, Broadcast, Decided, EvidenceFound, ScheduleTimeout, SlotFailed
from consensus.agreement import SlotAgreement
from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.ledger import Ledger, LedgerError
from consensus.messages import Announce, DecodeError, Signed, sha256
from generation.errors import RecipeError
from generation.pipeline import VortexPipeline
from generation.recipe import Recipe, network_recipe
from network.certsync import CertificateSync
from network.faults import FaultPlan
from network.gossip import Gossip
from network.host import NetworkHost, open_host
from network.identity import Identity, load_key_file, peer_id_of
from network.media.store import MediaStore
from network.media.transfer import FetchError, MediaService
from network.topics import Topic, encode_recipe
from node import logs
from node.engine import build_engine
from node.http import Response, serve
from node.metrics import NodeMetrics, counter, gauge
from node.production import ProductionError, generate, package, recipe_hash
from node.settings import NodeSettings
from node.storage import Storage

log = logging.getLogger(__name__)

KEEP_SLOTS = 16  # slots of agreement state, records and announcements kept in memory

FALLBACK_RECIPE = {
    "audio_track": {
        "script": "You are watching the Interdimensional Cable Network.",
        "voice_id": "rick_c137",
    },
    "visual_track": {"prompt": "a test card with colour bars"},
}


@dataclass
class SlotRecord:
    slot: int
    role: str
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds taken
    missed: list[str] = field(default_factory=list)  # phases cut off at their deadline
    outcome: str = "pending"
    detail: dict[str, Any] = field(default_factory=dict)


class Node:
    def __init__(
        self,
        settings: NodeSettings,
        *,
        engine: VortexPipeline | None = None,
        identity: Identity | None = None,
        faults: FaultPlan | None = None,
        wall: Callable[[], float] = time.time,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.genesis = settings.chain.genesis()
        self.chain_id = self.genesis.chain_id
        self.ledger = Ledger(self.genesis)
        self.identity = identity or load_key_file(settings.node.key_file)
        self.faults = faults
        self.wall = wall
        self.name = name or str(self.identity.peer_id)[-8:]
        storage_dir = Path(settings.node.storage_dir)
        self.storage = Storage(storage_dir / "node.sqlite", self.chain_id)
        self.media_store = MediaStore(
            storage_dir / "media", max_file_bytes=settings.network.media.max_file_bytes
        )
        self.workdir = storage_dir / "work"
        self.engine = engine
        self.metrics = NodeMetrics()
        self.fallback = self._load_fallback()
        self.agreements: dict[int, SlotAgreement] = {}
        self._slot_nurseries: dict[int, trio.Nursery] = {}
        self.records: dict[int, SlotRecord] = {}
        self._early_votes: dict[int, list[Signed]] = {}
        self._decided: dict[int, trio.Event] = {}
        self.recipes: OrderedDict[bytes, bytes] = OrderedDict()  # recipe hash -> canonical JSON
        self.evidence_pool: dict[bytes, Evidence] = {e.hash: e for e in self.storage.evidence()}
        self.announcers: dict[bytes, set[ID]] = {}  # content id -> peers that announced it
        self.net: NetworkHost | None = None
        self.gossip: Gossip | None = None
        self.media: MediaService | None = None
        self.sync: CertificateSync | None = None
        self.http_port: int | None = None
        self._catch_up_wanted = trio.Event()
        self._restore()

    # -- ValidationContext (gossip checks) ------------------------------------------------------------
    def current_slot(self) -> int:
        return max(self.genesis.slot_at(self.wall()), 0)

    def directors(self, slot: int) -> tuple[bytes, ...] | None:
        return self.ledger.directors(slot) if slot >= 0 else None

    # -- start-up ----------------------------------------------------------------------------------------
    def _load_fallback(self) -> Recipe:
        path = self.settings.node.fallback_recipe
        if path is None:
            return Recipe.parse(FALLBACK_RECIPE)
        try:
            return network_recipe(Path(path).read_bytes())
        except OSError as exc:
            raise RecipeError(f"node.fallback_recipe: cannot read {path}: {exc}") from None

    def _restore(self) -> None:
        """Rebuild the ledger from stored certificates, in slot order."""
        for cert in self.storage.certificates():
            try:
                self.ledger.apply(cert)
            except LedgerError as exc:
                log.error("stored certificate for slot %d not applied: %s", cert.slot, exc)
                break
        last = self.storage.last_certified_slot()
        if last is not None:
            self.metrics.last_certified_slot.set(last)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        logs.node_name.set(self.name)
        if self.engine is None:
            self.engine = await trio.to_thread.run_sync(build_engine, self.settings.generation)
        try:
            async with open_host(self.identity, self.settings.network, faults=self.faults) as net:
                self.net = net
                self.gossip = Gossip(net, self)
                await self.gossip.start()
                self.media = MediaService(net, self.media_store)
                self.sync = CertificateSync(net, self.storage.certificate_data)
                self._watch_metrics()
                async with trio.open_nursery() as nursery:
                    host, port = self.settings.node.http_addr.rsplit(":", 1)
                    self.http_port = await nursery.start(serve, host, int(port), self._http)
                    nursery.start_soon(self._votes_loop)
                    nursery.start_soon(self._certificates_loop, nursery)
                    nursery.start_soon(self._evidence_loop)
                    nursery.start_soon(self._recipes_loop)
                    nursery.start_soon(self._media_have_loop)
                    nursery.start_soon(self._catch_up_loop, nursery)
                    nursery.start_soon(self._clock_loop, nursery)
                    log.info("node %s up: %s", net.peer_id, [str(a) for a in net.addrs()])
                    task_status.started(self)
        finally:
            self.storage.close()

    # -- the slot clock -----------------------------------------------------------------------------------
    async def _sleep_until_wall(self, t: float) -> None:
        await trio.sleep(max(0.0, t - self.wall()))

    def _wall_deadline(self, t: float) -> float:
        """A trio deadline for wall-clock time `t`."""
        return trio.current_time() + (t - self.wall())

    async def _clock_loop(self, nursery: trio.Nursery) -> None:
        started = -1
        while True:
            now = self.wall()
            slot = self.genesis.slot_at(now)
            if slot < 0:
                await self._sleep_until_wall(self.genesis.genesis_time)
                continue
            if slot > started:
                started = slot
                self.metrics.current_slot.set(slot)
                nursery.start_soon(self._run_slot, slot)
                self._catch_up_wanted.set()
            await self._sleep_until_wall(self.genesis.slot_start(slot + 1))

    async def _run_slot(self, slot: int) -> None:
        start = self.genesis.slot_start(slot)
        plan = self.settings.slot
        directors = self.ledger.directors(slot)
        me = self.identity.public_key
        role = "director" if me in directors else "observer"
        record = self.records[slot] = SlotRecord(slot, role)
        recipe, recipe_note = self._recipe_for(slot)
        record.detail["recipe_hash"] = recipe.content_hash()
        if recipe_note:
            record.detail["recipe_note"] = recipe_note
        decided = self._decided.setdefault(slot, trio.Event())
        sm = SlotAgreement(
            slot,
            directors,
            self.chain_id,
            recipe_hash(recipe),
            signer=self.identity.signer if role == "director" else None,
            config=self.settings.agreement.config(),
            journal=self.storage,
            next_recipe=self._next_recipe(),
            evidence_pool=list(self.evidence_pool.values()),
            recipe_ok=canonical_network_recipe,
            directors_of=self.directors,
        )
        self.agreements[slot] = sm
        with (
            logs.in_phase(slot, "start"),
            trio.move_on_at(self._wall_deadline(start + self.genesis.slot_sec)) as whole,
        ):
            async with trio.open_nursery() as slot_nursery:
                self._slot_nurseries[slot] = slot_nursery
                for msg in self._early_votes.pop(slot, []):
                    await self._perform(sm.receive(msg), slot_nursery)
                if role == "director":
                    await self._director_work(slot, recipe, sm, record, slot_nursery)
                # agreement
                await self._sleep_until_wall(start + plan.verification_end)
                await self._phase(
                    record, "agreement", start + plan.agreement_end, self._agree(sm, decided, slot_nursery)
                )
                if not decided.is_set() and not sm.finished:
                    await self._perform(sm.on_deadline(), slot_nursery)
                # propagation: the committed media must be here before the slot ends; the
                # certificate itself may still arrive (late precommits, gossip from a slower part)
                await self._propagate(record, decided, start + self.genesis.slot_sec)
                slot_nursery.cancel_scope.cancel()
        self._slot_nurseries.pop(slot, None)
        if whole.cancelled_caught and "slot" not in record.missed:
            record.missed.append("slot")
        self._finish_record(record, sm)
        self._forget_before(slot - KEEP_SLOTS)

    def _forget_before(self, oldest: int) -> None:
        """Bound what a long-running node keeps in memory (the database keeps the history)."""
        for table in (self.agreements, self.records, self._decided, self._early_votes):
            for old in [s for s in table if s < oldest]:
                del table[old]
        keep = {c.value.candidate for s, c in self.ledger.certificates.items() if s >= oldest}
        for cid in [c for c in self.announcers if c not in keep and len(self.announcers) > 4 * KEEP_SLOTS]:
            del self.announcers[cid]

    async def _phase(self, record: SlotRecord, name: str, deadline_wall: float, work: Any) -> None:
        """Run one phase under its deadline; a phase cut off is recorded and counted, never raised."""
        started = self.wall()
        with logs.in_phase(record.slot, name), trio.move_on_at(self._wall_deadline(deadline_wall)) as scope:
            await work
        record.phases[name] = round(self.wall() - started, 4)
        self.metrics.phase_seconds.labels(name).observe(self.wall() - started)
        if scope.cancelled_caught:
            record.missed.append(name)
            self.metrics.deadline_missed.labels(name).inc()
            log.warning("slot %d: phase %s cut off at its deadline", record.slot, name)

    async def _propagate(self, record: SlotRecord, decided: trio.Event, deadline_wall: float) -> None:
        slot = record.slot
        started = self.wall()
        with logs.in_phase(slot, "propagation"), trio.move_on_at(self._wall_deadline(deadline_wall)) as scope:
            await decided.wait()
            await self._ensure_media(self.ledger.certificates[slot])
        if slot not in self.ledger.certificates:
            return  # no decision reached us: a failed slot, not a propagation miss
        record.phases["propagation"] = round(self.wall() - started, 4)
        self.metrics.phase_seconds.labels("propagation").observe(self.wall() - started)
        if scope.cancelled_caught:
            record.missed.append("propagation")
            self.metrics.deadline_missed.labels("propagation").inc()
            log.warning("slot %d: media not here by the end of the slot", slot)

    async def _director_work(
        self, slot: int, recipe: Recipe, sm: SlotAgreement, record: SlotRecord, nursery: trio.Nursery
    ) -> None:
        start = self.genesis.slot_start(slot)
        plan = self.settings.slot
        box: dict[str, Any] = {}

        async def make() -> None:
            try:
                box["result"] = await generate(
                    self.engine, recipe, slot, timeout_sec=start + plan.verification_end - self.wall()
                )
            except ProductionError as exc:
                box["error"] = str(exc)

        await self._phase(record, "generation", start + plan.verification_end, make())
        if "result" not in box:
            record.detail["generation_error"] = box.get("error", "cut off at the deadline")
            return
        record.detail["stage_ms"] = {k: round(v, 1) for k, v in box["result"].stage_times_ms.items()}

        async def encode() -> None:
            box["production"] = await package(
                self.engine, box["result"], recipe, self.media_store, self.workdir
            )

        await self._phase(record, "verification", start + plan.verification_end, encode())
        production = box.get("production")
        if production is None:
            return
        record.detail["content_id"] = production.cid.hex()
        self.storage.put_media(production.cid, slot, production.media.size_bytes, "produced")
        await self._perform(self._announce(sm, production.output), nursery)

    def _announce(self, sm: SlotAgreement, output: Any) -> list[Action]:
        """The director's announcement (a hook: simnet's Byzantine modes change what is announced)."""
        return sm.set_local_output(output)

    async def _agree(self, sm: SlotAgreement, decided: trio.Event, nursery: trio.Nursery) -> None:
        await self._perform(sm.start(), nursery)
        await decided.wait()

    def _recipe_for(self, slot: int) -> tuple[Recipe, str | None]:
        data = self.ledger.recipe(slot)
        if data is None:
            return self.fallback, "no recipe committed for this slot: fallback programme"
        try:
            return network_recipe(data), None
        except RecipeError as exc:  # a quorum agreed to it: a schema change, or more than f faulty directors
            return self.fallback, f"committed recipe unusable ({exc}): fallback programme"

    def _next_recipe(self) -> bytes | None:
        committed = {c.value.next_recipe for c in self.ledger.certificates.values() if c.value.next_recipe}
        for data in list(self.recipes.values()):
            if data in committed:
                continue
            return data
        return None

    def _finish_record(self, record: SlotRecord, sm: SlotAgreement) -> None:
        cert = self.ledger.certificates.get(record.slot)
        if cert is not None:
            record.outcome = "committed"
            record.detail.update(round=cert.round, candidate=cert.value.candidate.hex())
        elif sm.failed:
            record.outcome = "failed"
            record.detail["reason"] = sm.failed
        else:
            record.outcome = "no_certificate"
        record.detail["phases"] = record.phases
        record.detail["missed"] = record.missed
        self.metrics.slots.labels(record.role, record.outcome).inc()
        self.storage.put_outcome(record.slot, record.role, record.outcome, record.detail)
        log.info("slot %d %s as %s %s", record.slot, record.outcome, record.role, json.dumps(record.phases))

    # -- carrying out consensus actions ----------------------------------------------------------------------
    async def _perform(self, actions: list[Action], nursery: trio.Nursery | None) -> None:
        """Carry out actions; timers need the slot's nursery (a slot that has ended arms none)."""
        for action in actions:
            if isinstance(action, Broadcast):
                await self._broadcast(action.message)
            elif isinstance(action, ScheduleTimeout):
                if nursery is not None:
                    nursery.start_soon(self._timer, action, nursery)
            elif isinstance(action, Decided):
                await self._commit(action.certificate, "agreement")
            elif isinstance(action, EvidenceFound):
                await self._take_evidence(action.evidence, publish=True)
            elif isinstance(action, SlotFailed):
                log.warning("slot %d failed: %s", action.slot, action.reason)

    async def _broadcast(self, msg: Signed) -> None:
        """Publish our own consensus message (a hook: simnet's Byzantine modes replace it)."""
        await self._publish(Topic.VOTES, msg.encode())

    async def _publish(self, topic: Topic, data: bytes) -> None:
        try:
            await self.gossip.publish(topic, data)
        except ValueError as exc:  # our own message failing our own checks is a bug worth a loud log
            log.error("not published on %s: %s", topic.value, exc)

    async def _timer(self, action: ScheduleTimeout, nursery: trio.Nursery) -> None:
        await trio.sleep(action.delay)
        sm = self.agreements.get(action.slot)
        if sm is not None:
            await self._perform(sm.on_timeout(action.round, action.step), nursery)

    async def _commit(self, cert: Certificate, source: str) -> bool:
        """Apply, store and spread a certificate; False if it does not fit the ledger (yet)."""
        if cert.slot in self.ledger.certificates:
            return True
        try:
            self.ledger.apply(cert)
        except LedgerError as exc:
            log.warning("certificate for slot %d from %s not applied: %s", cert.slot, source, exc)
            self._catch_up_wanted.set()
            return False
        self.storage.put_certificate(cert, self.wall())
        self.metrics.certificates.labels(source).inc()
        self.metrics.last_certified_slot.set(max(self.ledger.certificates))
        for data in cert.value.evidence:
            self.evidence_pool.pop(sha256(data), None)
        if cert.value.next_recipe is not None:
            self.recipes.pop(sha256(cert.value.next_recipe), None)
        self._decided.setdefault(cert.slot, trio.Event()).set()
        if source != "catch-up":
            await self._publish(Topic.CERTIFICATES, cert.encode())
        log.info("slot %d certified (round %d, from %s)", cert.slot, cert.round, source)
        return True

    async def _take_evidence(self, ev: Evidence, *, publish: bool) -> None:
        if ev.hash in self.evidence_pool:
            return
        self.evidence_pool[ev.hash] = ev
        self.storage.put_evidence(ev)
        self.metrics.evidence.inc()
        log.warning("evidence: director %s equivocated in slot %d", ev.signer.hex()[:12], ev.slot)
        if publish:
            await self._publish(Topic.EVIDENCE, ev.encode())

    async def _ensure_media(self, cert: Certificate) -> None:
        cid = cert.value.candidate
        if not self.media_store.has(cid):
            # until the caller's deadline: providers not reachable yet (not neighbours, not yet
            # holding it) become so as `media-have` announcements arrive with their addresses
            attempt = 0
            while True:
                providers = sorted(self.announcers.get(cid, ()), key=str)
                try:
                    report = await self.media.fetch(cid, providers)
                    break
                except FetchError as exc:
                    attempt += 1
                    record = self.records.get(cert.slot)
                    if record is not None:
                        record.detail["media_error"] = str(exc)[:300]
                    log.info("slot %d media not fetched yet (attempt %d): %s", cert.slot, attempt, exc)
                    await trio.sleep(min(0.25 * attempt, 2.0))
            if (record := self.records.get(cert.slot)) is not None:
                record.detail.pop("media_error", None)
            self.metrics.media_fetched_bytes.inc(sum(report.bytes_from.values()))
            self.storage.put_media(cid, cert.slot, report.path.stat().st_size, "fetched")
        record = self.records.get(cert.slot)
        if record is not None:
            record.detail["media"] = cid.hex()
            record.detail["media_at"] = round(self.wall() - self.genesis.slot_start(cert.slot), 3)
        await self._publish(Topic.MEDIA_HAVE, self.media.have_message(cid))

    # -- gossip readers --------------------------------------------------------------------------------------
    async def _votes_loop(self) -> None:
        async for msg in self.gossip.inbox(Topic.VOTES):
            signed: Signed = msg.message
            if isinstance(signed, Announce):
                self.announcers.setdefault(signed.content_hash, set()).add(peer_id_of(signed.signer))
            sm = self.agreements.get(signed.slot)
            if sm is None:
                if signed.slot >= self.current_slot():  # a faster peer's slot: hold it until ours starts
                    self._early_votes.setdefault(signed.slot, []).append(signed)
                continue
            await self._perform(sm.receive(signed), self._slot_nurseries.get(signed.slot))

    async def _certificates_loop(self, nursery: trio.Nursery) -> None:
        async for msg in self.gossip.inbox(Topic.CERTIFICATES):
            if await self._commit(msg.message, "gossip"):
                cert = msg.message
                if cert.slot not in self.agreements and self.current_slot() - cert.slot <= 1:
                    deadline = self.genesis.slot_start(cert.slot + 1)
                    nursery.start_soon(self._fetch_until, cert, deadline)

    async def _fetch_until(self, cert: Certificate, deadline_wall: float) -> None:
        with trio.move_on_at(self._wall_deadline(deadline_wall)):
            await self._ensure_media(cert)

    async def _evidence_loop(self) -> None:
        async for msg in self.gossip.inbox(Topic.EVIDENCE):
            await self._take_evidence(msg.message, publish=False)

    async def _recipes_loop(self) -> None:
        async for msg in self.gossip.inbox(Topic.RECIPES):
            self._queue_recipe(msg.message)

    def _queue_recipe(self, recipe: Recipe) -> bytes:
        data = recipe.canonical_bytes()
        key = sha256(data)
        if key not in self.recipes:
            self.recipes[key] = data
            while len(self.recipes) > self.settings.limits.recipe_queue:
                self.recipes.popitem(last=False)
        return key

    async def submit_recipe(self, recipe: Recipe) -> bytes:
        """Publish a network-valid recipe (see `network_recipe`), then queue it for our own proposals.
        Queued only once published: a recipe the network refuses never reaches a proposal."""
        await self.gossip.publish(Topic.RECIPES, encode_recipe(recipe))
        return self._queue_recipe(recipe)

    async def _media_have_loop(self) -> None:
        async for msg in self.gossip.inbox(Topic.MEDIA_HAVE):
            self.media.add_provider(msg.message.cid, msg.origin, msg.message.addrs)

    # -- catching up ------------------------------------------------------------------------------------------
    async def _catch_up_loop(self, nursery: trio.Nursery) -> None:
        while True:
            await self._catch_up_wanted.wait()
            self._catch_up_wanted = trio.Event()
            await self.catch_up()

    async def catch_up(self) -> int:
        """Ask connected peers for certificates after our newest; apply those that verify, in order."""
        applied = 0
        peers = self.net.connected_peers()
        random.shuffle(peers)
        for peer in peers[:3]:
            start = max(self.ledger.certificates, default=-1) + 1
            try:
                batch = await self.sync.fetch(peer, start, self.settings.limits.catch_up_batch)
            except Exception as exc:  # that peer could not help; ask the next
                log.debug("catch-up from %s failed: %s", peer, exc)
                continue
            for data in batch:
                try:
                    cert = Certificate.decode(data)
                except DecodeError:
                    self.net.reputation.penalize(peer, "bad_certificate")
                    break
                if await self._commit(cert, "catch-up"):
                    applied += 1
                else:
                    break
            if len(batch) < self.settings.limits.catch_up_batch:
                break
        return applied

    # -- status, metrics, HTTP ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        slot = self.current_slot()
        last = max(self.ledger.certificates, default=None)
        cert = self.ledger.certificates.get(last) if last is not None else None
        directors = self.ledger.directors(slot)
        return {
            "peer_id": str(self.identity.peer_id),
            "public_key": self.identity.public_key.hex(),
            "chain_id": self.chain_id.hex(),
            "slot": slot,
            "role": "director" if self.identity.public_key in directors else "observer",
            "directors": [d.hex() for d in directors],
            "peers": len(self.net.connected_peers()) if self.net else 0,
            "last_certificate": None
            if cert is None
            else {
                "slot": cert.slot,
                "round": cert.round,
                "hash": cert.hash.hex(),
                "media": cert.value.candidate.hex(),
            },
            "pending_recipes": len(self.recipes),
            "recent_slots": {
                s: {"role": r.role, "outcome": r.outcome, "phases": r.phases, "missed": r.missed}
                for s, r in sorted(self.records.items())[-5:]
            },
            "engine": self.engine.sources if self.engine is not None else None,
        }

    def _watch_metrics(self) -> None:
        def live():  # noqa: ANN202
            net, gossip, media = self.net, self.gossip, self.media
            yield gauge("icn_peers", "Connected peers", len(net.connected_peers()))
            stats = gossip.validators.stats
            yield counter(
                "icn_messages_accepted", "Gossip messages accepted by topic", ["topic"],
                [([t], n) for t, n in stats.accepted.items()],
            )  # fmt: skip
            yield counter(
                "icn_messages_rejected", "Gossip messages rejected by topic and reason", ["topic", "reason"],
                [([t, r], n) for (t, r), n in stats.rejected.items()],
            )  # fmt: skip
            yield counter(
                "icn_media_bytes_served",
                "Media bytes served to peers",
                [],
                [([], media.server.stats.bytes_served)],
            )
            if self.engine is not None:
                from generation.utils.memory import get_vram_stats

                vram = get_vram_stats(self.engine.device)
                yield gauge("icn_vram_allocated_gb", "Engine device memory allocated", vram["allocated_gb"])
                yield gauge("icn_vram_reserved_gb", "Engine device memory reserved", vram["reserved_gb"])

        self.metrics.watch(live)

    async def _http(self, method: str, path: str, body: bytes) -> Response:
        if path == "/metrics" and method == "GET":
            return Response(200, self.metrics.render(), "text/plain; version=0.0.4")
        if path == "/status" and method == "GET":
            return Response.json(200, self.status())
        if path == "/recipes":
            if method != "POST":
                return Response.json(405, {"error": "POST a recipe as JSON"})
            try:
                recipe = network_recipe(body)
            except RecipeError as exc:
                return Response.json(400, {"error": str(exc)})
            try:
                key = await self.submit_recipe(recipe)
            except ValueError as exc:  # the gossip checks refused it (e.g. too large once framed)
                return Response.json(400, {"error": str(exc)})
            return Response.json(202, {"queued": key.hex(), "pending": len(self.recipes)})
        return Response.json(404, {"error": f"no route {method} {path}"})


def canonical_network_recipe(data: bytes) -> bool:
    """A proposal's next recipe: network-valid (`network_recipe`) and in canonical form."""
    try:
        return network_recipe(data).canonical_bytes() == data
    except RecipeError:
        return False
