"""The slot lifecycle on the wall clock: which slot runs, and its phases in order.

At each slot's start the lifecycle elects (from the ledger), builds the slot's
`SlotAgreement` and its `SlotDriver`, and runs the slot as one task under a
cancel scope that ends with the slot, so a slot that overruns is cut off,
recorded, and never delays the next. The phases, each under its own deadline
from `[slot]` (the seed's plan):

- generation and verification (directors only): the studio (`node.studio`)
  makes the slot's media, usually before the slot starts (as soon as the
  certificate that fixes its recipe is here), and packages it into the content
  store; the director announces its output to its driver as soon as it has it,
  by `verification_end` at the latest;
- agreement: the driver starts the round at `verification_end`; the phase
  ends with a certificate from any source, or at `agreement_end` (then the
  driver is told the deadline passed);
- propagation: the certified media must be on this node by the slot's end.

The lifecycle owns its nursery: slot tasks and their drivers live there, and
the drivers of the last `KEEP_SLOTS` slots keep taking late votes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from consensus.agreement import AgreementConfig, SlotAgreement
from consensus.ledger import Ledger
from consensus.membership import Genesis
from generation.recipe import Recipe
from network.identity import Identity
from node import logs
from node.chain import ChainKeeper
from node.clock import WallClock
from node.metrics import NodeMetrics
from node.ports import Behaviour
from node.production import recipe_hash
from node.propagation import MediaPropagation
from node.recipes import RecipeQueue, canonical_network_recipe
from node.settings import SlotSection
from node.slot_driver import SlotDriver, SlotDrivers, SlotPorts
from node.storage import Storage
from node.studio import Studio

log = logging.getLogger(__name__)

KEEP_SLOTS = 16  # slots of agreement state and records kept in memory (the database keeps the history)


@dataclass
class SlotRecord:
    slot: int
    role: str
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds taken
    missed: list[str] = field(default_factory=list)  # phases cut off at their deadline
    outcome: str = "pending"
    detail: dict[str, Any] = field(default_factory=dict)


class SlotLifecycle:
    def __init__(
        self,
        *,
        genesis: Genesis,
        plan: SlotSection,
        agreement: AgreementConfig,
        identity: Identity,
        ledger: Ledger,
        storage: Storage,
        chain: ChainKeeper,
        recipes: RecipeQueue,
        drivers: SlotDrivers,
        ports: SlotPorts,
        behaviour: Behaviour,
        studio: Studio,
        propagation: MediaPropagation,
        metrics: NodeMetrics,
        clock: WallClock,
    ) -> None:
        self.genesis = genesis
        self._plan = plan
        self._agreement = agreement
        self._identity = identity
        self._ledger = ledger
        self._storage = storage
        self._chain = chain
        self._recipes = recipes
        self._drivers = drivers
        self._ports = ports
        self._behaviour = behaviour
        self._studio = studio
        self._propagation = propagation
        self._metrics = metrics
        self._clock = clock
        self.records: dict[int, SlotRecord] = {}

    # -- the clock --------------------------------------------------------------------------------------
    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            started = -1
            while True:
                slot = self.genesis.slot_at(self._clock.now())
                if slot < 0:
                    await self._clock.sleep_until(self.genesis.genesis_time)
                    continue
                if slot > started:
                    started = slot
                    self._metrics.current_slot.set(slot)
                    driver, recipe = self._driver_for(slot)
                    await nursery.start(driver.run)
                    nursery.start_soon(self._run_slot, slot, driver, recipe)
                    self._chain.want_catch_up()
                await self._clock.sleep_until(self.genesis.slot_start(slot + 1))

    def _driver_for(self, slot: int) -> tuple[SlotDriver, Recipe]:
        """The slot's record, its recipe, and its agreement's driver (elected from the ledger now)."""
        directors = self._ledger.directors(slot)
        role = "director" if self._identity.public_key in directors else "observer"
        recipe, recipe_note = self._recipes.recipe_for(slot)
        record = self.records[slot] = SlotRecord(slot, role)
        record.detail["recipe_hash"] = recipe.content_hash()
        if recipe_note:
            record.detail["recipe_note"] = recipe_note
        sm = SlotAgreement(
            slot,
            directors,
            self.genesis.chain_id,
            recipe_hash(recipe),
            signer=self._identity.signer if role == "director" else None,
            config=self._agreement,
            journal=self._storage,
            next_recipe=self._recipes.next_recipe(),
            evidence_pool=list(self._chain.evidence_pool.values()),
            recipe_ok=canonical_network_recipe,
            directors_of=self._ledger.directors,
        )
        return SlotDriver(sm, self._ports, announced=self._behaviour.announced), recipe

    async def _run_slot(self, slot: int, driver: SlotDriver, recipe: Recipe) -> None:
        start = self.genesis.slot_start(slot)
        plan = self._plan
        record = self.records[slot]
        decided = self._chain.decided(slot)
        with (
            logs.in_phase(slot, "start"),
            trio.move_on_at(self._clock.deadline(start + self.genesis.slot_sec)) as whole,
        ):
            await self._drivers.add(driver)  # votes that came before the slot began here
            if record.role == "director":
                await self._director_work(slot, recipe, driver, record)
            await self._clock.sleep_until(start + plan.verification_end)
            await self._phase(record, "agreement", start + plan.agreement_end, self._agree(driver, decided))
            if not decided.is_set():
                await driver.deadline()
            # propagation: the committed media must be here before the slot ends; the
            # certificate itself may still arrive (late precommits, gossip from a slower part)
            await self._propagate(record, decided, start + self.genesis.slot_sec)
        driver.stop_timers()
        if whole.cancelled_caught and "slot" not in record.missed:
            record.missed.append("slot")
        self._finish_record(record, driver)
        self._forget_before(slot - KEEP_SLOTS)

    def _forget_before(self, oldest: int) -> None:
        for old in [s for s in self.records if s < oldest]:
            del self.records[old]
        self._drivers.retire_before(oldest)
        self._chain.forget_before(oldest)

    async def _phase(self, record: SlotRecord, name: str, deadline_wall: float, work: Any) -> None:
        """Run one phase under its deadline; a phase cut off is recorded and counted, never raised."""
        started = self._clock.now()
        with (
            logs.in_phase(record.slot, name),
            trio.move_on_at(self._clock.deadline(deadline_wall)) as scope,
        ):
            await work
        self._timed(record, name, self._clock.now() - started)
        if scope.cancelled_caught:
            self._missed(record, name)

    async def _agree(self, driver: SlotDriver, decided: trio.Event) -> None:
        await driver.start()
        await decided.wait()

    async def _propagate(self, record: SlotRecord, decided: trio.Event, deadline_wall: float) -> None:
        slot = record.slot
        started = self._clock.now()
        with (
            logs.in_phase(slot, "propagation"),
            trio.move_on_at(self._clock.deadline(deadline_wall)) as scope,
        ):
            await decided.wait()
            cert = self._ledger.certificate(slot)  # held: `decided` is set once the ledger applied it
            if cert is not None:
                await self._propagation.ensure(cert, record.detail)
        if self._ledger.certificate(slot) is None:
            return  # no decision reached us: a failed slot, not a propagation miss
        self._timed(record, "propagation", self._clock.now() - started)
        if scope.cancelled_caught:
            self._missed(record, "propagation")

    async def _director_work(self, slot: int, recipe: Recipe, driver: SlotDriver, record: SlotRecord) -> None:
        """Take the slot's output from the studio (made ahead if its recipe settled early) and announce it."""
        start = self.genesis.slot_start(slot)
        waited = self._clock.now()
        with trio.move_on_at(self._clock.deadline(self._studio.deadline(slot))) as scope:
            await self._studio.output_for(slot, recipe)
        job = self._studio.job(slot)  # the studio forgets a slot's job only once the slot has ended
        if job is None or job.started is None:
            self._missed(record, "generation")
            record.detail["generation_error"] = "not started by the deadline"
            return
        record.detail["generation_lead_sec"] = round(start - job.started, 3)
        ended = job.finished if job.finished is not None else self._clock.now()  # still running: cut off
        generated = job.generated if job.generated is not None else ended
        self._timed(record, "generation", generated - job.started)
        if job.generated is not None:
            self._timed(record, "verification", ended - job.generated)
        record.detail["waited_sec"] = round(self._clock.now() - waited, 3)
        if scope.cancelled_caught:
            self._missed(record, "generation" if job.generated is None else "verification")
        if job.production is None:
            record.detail["generation_error"] = job.error or "cut off at the deadline"
            return
        production = job.production
        record.detail["stage_ms"] = {k: round(v, 1) for k, v in production.result.stage_times_ms.items()}
        record.detail["content_id"] = production.cid.hex()
        await driver.set_local_output(production.output)

    def _timed(self, record: SlotRecord, name: str, took: float) -> None:
        record.phases[name] = round(took, 4)
        self._metrics.phase_seconds.labels(name).observe(took)

    def _missed(self, record: SlotRecord, name: str) -> None:
        record.missed.append(name)
        self._metrics.deadline_missed.labels(name).inc()
        log.warning("slot %d: phase %s cut off at its deadline", record.slot, name)

    def _finish_record(self, record: SlotRecord, driver: SlotDriver) -> None:
        cert = self._ledger.certificate(record.slot)
        if cert is not None:
            record.outcome = "committed"
            record.detail.update(round=cert.round, candidate=cert.value.candidate.hex())
        elif driver.failed:
            record.outcome = "failed"
            record.detail["reason"] = driver.failed
        else:
            record.outcome = "no_certificate"
        record.detail["phases"] = record.phases
        record.detail["missed"] = record.missed
        self._metrics.slots.labels(record.role, record.outcome).inc()
        self._storage.put_outcome(record.slot, record.role, record.outcome, record.detail)
        log.info("slot %d %s as %s %s", record.slot, record.outcome, record.role, json.dumps(record.phases))
