"""A director's output, made as soon as the node knows it must make it (issue 21, step 3).

Slot s plays the recipe the certificate of slot s - recipe_lag fixed (`Ledger.recipe`;
2 by default), and its directors are public from genesis. So a director knows what it
must make once that certificate is here, decided in the agreement phase of slot s - 2:
about a slot and a half before slot s starts. Making it then, instead of at the slot's
start, gives a slow card up to a whole slot and more, where the slot's own first 17 s
were all it had before, while the GPU sat idle for the other 28.

The `Studio` alone runs the engine: one card, one job at a time. Its task (`run`) makes
the earliest slot this node directs whose recipe is settled, or that a slot task asked
for, and keeps the result until that slot's task takes it (`output_for`). A slot whose
recipe did not settle before it started (the certificate that fixes it never came)
plays what `RecipeQueue.recipe_for` says then, the fallback programme, and is made
from its start, as every slot was before. A job made from a recipe the slot does not
play after all (a view that changed) is thrown away and made again; a job whose slot
this node no longer directs (evidence barred it) is never asked for and is forgotten.

Every job ends by the slot's `verification_end`: a director that has not announced by
then cannot take part, so the work would be wasted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from consensus.ledger import Ledger
from consensus.membership import Genesis
from generation.pipeline import GenerationResult
from generation.recipe import Recipe
from node.chain import ChainKeeper
from node.clock import WallClock
from node.production import Production, ProductionError
from node.recipes import RecipeQueue

log = logging.getLogger(__name__)


class Maker(Protocol):
    """What the studio makes a slot with (`node.production.EngineMaker` on the real engine)."""

    async def generate(self, recipe: Recipe, slot: int, timeout_sec: float) -> GenerationResult: ...

    async def package(self, result: GenerationResult, recipe: Recipe) -> Production: ...


class Programme(Protocol):
    """What the studio reads of the chain: which slots this node directs and what they play."""

    def directs(self, slot: int) -> bool: ...

    def settled_recipe(self, slot: int) -> Recipe | None:
        """The slot's recipe once no certificate can change it, else None."""
        ...

    async def wait_settled(self, slot: int) -> None:
        """Return once the certificate that fixes the slot's recipe is held."""
        ...


@dataclass
class Job:
    """One slot's making: the recipe, when each step ended (wall seconds), and the result or why none."""

    slot: int
    recipe: Recipe
    started: float | None = None
    generated: float | None = None
    finished: float | None = None
    production: Production | None = None
    error: str | None = None
    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope | None = None

    @property
    def recipe_hash(self) -> str:
        return self.recipe.content_hash()


class Studio:
    def __init__(
        self,
        maker: Maker,
        programme: Programme,
        genesis: Genesis,
        clock: WallClock,
        *,
        ends_at: float,
    ) -> None:
        """`ends_at`: seconds into a slot by which its output must be made (`[slot] verification_end`)."""
        self._maker = maker
        self._programme = programme
        self._genesis = genesis
        self._clock = clock
        self._ends_at = ends_at
        self._jobs: dict[int, Job] = {}
        self._wake = trio.Event()

    def deadline(self, slot: int) -> float:
        """Wall time by which the slot's output must be made."""
        return self._genesis.slot_start(slot) + self._ends_at

    def job(self, slot: int) -> Job | None:
        return self._jobs.get(slot)

    # -- the slot task's side -------------------------------------------------------------------------
    async def output_for(self, slot: int, recipe: Recipe) -> Job:
        """The slot's job for `recipe`, once it has ended (made, failed or cut off at its deadline).

        Made already if the recipe settled early; asked for now otherwise."""
        job = self._jobs.get(slot)
        if job is not None and job.recipe_hash != recipe.content_hash():
            log.warning("slot %d: made from another recipe than the slot plays; making it again", slot)
            job.error = "made from another recipe"
            if job.scope is not None:
                job.scope.cancel()
            job = None
        if job is None:
            job = self._jobs[slot] = Job(slot, recipe)
            self._wake.set()
        await job.done.wait()
        return job

    # -- the one task that runs the engine ------------------------------------------------------------
    async def run(self) -> None:
        while True:
            self._wake = trio.Event()  # before choosing: a request made while choosing still wakes us
            self._forget_old()
            job = self._next_job()
            if job is None:
                await self._wait_for_work()
            else:
                await self._make(job)

    def _current(self) -> int:
        return self._genesis.slot_at(self._clock.now())

    def _ahead(self) -> range:
        """The slots whose recipe can be settled now: up to recipe_lag slots ahead of the current one."""
        current = max(self._current(), 0)
        return range(current, current + self._genesis.recipe_lag + 1)

    def _next_job(self) -> Job | None:
        """The earliest slot asked for or directed with its recipe settled, not made yet, still in time."""
        now = self._clock.now()
        for slot in self._ahead():
            if slot not in self._jobs and self.deadline(slot) > now and self._programme.directs(slot):
                recipe = self._programme.settled_recipe(slot)
                if recipe is not None:
                    self._jobs[slot] = Job(slot, recipe)
        waiting = [j for j in self._jobs.values() if j.started is None and not j.done.is_set()]
        return min(waiting, key=lambda j: j.slot, default=None)

    async def _wait_for_work(self) -> None:
        """Until a slot task asks, a certificate settles a directed slot's recipe, or the next slot starts."""
        unsettled = [
            s
            for s in self._ahead()
            if s not in self._jobs
            and self._programme.directs(s)
            and self._programme.settled_recipe(s) is None
        ]
        next_slot = self._genesis.slot_start(self._current() + 1)
        async with trio.open_nursery() as nursery:

            async def first(wait: Callable[[], Awaitable[object]]) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, self._wake.wait)
            nursery.start_soon(first, lambda: self._clock.sleep_until(next_slot))
            for s in unsettled:
                nursery.start_soon(first, lambda s=s: self._programme.wait_settled(s))

    async def _make(self, job: Job) -> None:
        deadline = self.deadline(job.slot)
        job.started = self._clock.now()
        log.info(
            "slot %d: making it, %.1f s before the slot starts",
            job.slot,
            self._genesis.slot_start(job.slot) - job.started,
        )
        with trio.CancelScope(deadline=self._clock.deadline(deadline)) as scope:
            job.scope = scope
            try:
                result = await self._maker.generate(job.recipe, job.slot, deadline - job.started)
                job.generated = self._clock.now()
                job.production = await self._maker.package(result, job.recipe)
            except ProductionError as exc:
                job.error = str(exc)
        if scope.cancelled_caught and job.error is None:
            job.error = "cut off at the deadline"
        job.scope = None
        job.finished = self._clock.now()
        job.done.set()

    def _forget_old(self) -> None:
        """Jobs of slots that have ended: their slot tasks took them or never will."""
        current = self._current()
        for slot in [s for s, j in self._jobs.items() if s < current and j.done.is_set()]:
            del self._jobs[slot]


class ChainProgramme:
    """The studio's `Programme` as the node's ledger, recipe queue and certificate keeper give it."""

    def __init__(self, ledger: Ledger, recipes: RecipeQueue, chain: ChainKeeper, public_key: bytes) -> None:
        self._ledger = ledger
        self._recipes = recipes
        self._chain = chain
        self._me = public_key

    def directs(self, slot: int) -> bool:
        return self._me in self._ledger.directors(slot)

    def settled_recipe(self, slot: int) -> Recipe | None:
        if not self._ledger.recipe_settled(slot):
            return None
        return self._recipes.recipe_for(slot)[0]

    async def wait_settled(self, slot: int) -> None:
        await self._chain.decided(slot - self._ledger.genesis.recipe_lag).wait()
