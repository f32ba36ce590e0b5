"""The studio on trio's MockClock: a fake maker and a fake programme, no engine, no sockets.

What it must do (issue 21, step 3): make a directed slot as soon as its recipe
is settled, however far ahead of the slot that is; wait while it is not; make
an unsettled slot from the recipe its slot task brings at the slot's start; one
job at a time, earliest slot first; throw away a job made from another recipe;
never run past a slot's deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from consensus.agreement import LocalOutput
from consensus.membership import Genesis
from consensus.messages import embedding_to_bytes, sha256
from generation.recipe import Recipe
from node.clock import WallClock
from node.production import Production, ProductionError
from node.studio import Studio
from tests.consensus.conftest import keys, validators

pytestmark = pytest.mark.trio

SLOT_SEC = 10.0
ENDS_AT = 4.0  # verification_end: a slot's output is due 4 s into it
GENESIS = Genesis(validators(keys(4, "studio")), 100.0, slot_sec=SLOT_SEC, directors_per_slot=4)


def recipe(name: str) -> Recipe:
    return Recipe.parse(
        {"audio_track": {"script": name, "voice_id": "rick_c137"}, "visual_track": {"prompt": name}}
    )


@dataclass
class FakeResult:
    slot_id: int
    script: str
    stage_times_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class FakeMaker:
    """Generation takes `gen_sec` of virtual time, packaging `pack_sec`; every step is logged."""

    gen_sec: float = 2.0
    pack_sec: float = 0.5
    fail: set[int] = field(default_factory=set)
    log: list[tuple[str, int, float]] = field(default_factory=list)
    running: int = 0
    most_at_once: int = 0

    async def generate(self, recipe: Recipe, slot: int, timeout_sec: float) -> FakeResult:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.log.append(("generate", slot, trio.current_time()))
        try:
            await trio.sleep(self.gen_sec)
        finally:
            self.running -= 1
        if slot in self.fail:
            raise ProductionError(f"slot {slot}: the actor stage failed")
        return FakeResult(slot, recipe.audio_track.script)

    async def package(self, result: FakeResult, recipe: Recipe) -> Production:
        await trio.sleep(self.pack_sec)
        self.log.append(("packaged", result.slot_id, trio.current_time()))
        vec = embedding_to_bytes([1.0, 0.0])
        cid = sha256(b"%d:" % result.slot_id + result.script.encode())
        output = LocalOutput(bytes.fromhex(recipe.content_hash()), vec, vec, True, cid)
        return Production(result, None, cid, output)  # type: ignore[arg-type]


class FakeProgramme:
    """Which slots this node directs, and each slot's recipe once `settle` is called (certificate held)."""

    def __init__(self, directs: set[int]) -> None:
        self._directs = directs
        self.recipes: dict[int, Recipe] = {}
        self._settled: dict[int, trio.Event] = {}

    def _event(self, slot: int) -> trio.Event:
        return self._settled.setdefault(slot, trio.Event())

    def settle(self, slot: int, r: Recipe) -> None:
        self.recipes[slot] = r
        self._event(slot).set()

    def directs(self, slot: int) -> bool:
        return slot in self._directs

    def settled_recipe(self, slot: int) -> Recipe | None:
        return self.recipes.get(slot)

    async def wait_settled(self, slot: int) -> None:
        await self._event(slot).wait()


def start_of(slot: int) -> float:
    """The trio time at which `slot` starts: the mock clock starts at 0, the wall clock reads it + 100."""
    return GENESIS.slot_start(slot) - 100.0


def studio(maker: FakeMaker, programme: FakeProgramme) -> Studio:
    clock = WallClock(lambda: trio.current_time() + 100.0)
    return Studio(maker, programme, GENESIS, clock, ends_at=ENDS_AT)  # type: ignore[arg-type]


async def test_a_slot_is_made_as_soon_as_its_recipe_settles_and_kept_for_its_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    maker, programme = FakeMaker(), FakeProgramme(directs={2})
    s = studio(maker, programme)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.run)
        await trio.sleep(3.0)  # slot 0 runs; slot 2's recipe is not known yet: nothing made
        assert maker.log == []
        programme.settle(2, recipe("two"))  # the certificate of slot 0 arrives, 3 s into slot 0
        await trio.sleep_until(start_of(2))
        job = await s.output_for(2, recipe("two"))  # the slot task, at slot 2's start: already made
        assert trio.current_time() == start_of(2)
        nursery.cancel_scope.cancel()
    assert [(what, slot) for what, slot, _ in maker.log] == [("generate", 2), ("packaged", 2)]
    assert maker.log[0][2] == pytest.approx(3.0)  # started the moment the recipe settled: 17 s early
    assert job.production is not None and job.error is None
    assert job.started is not None and GENESIS.slot_start(2) - job.started == pytest.approx(17.0)


async def test_an_unsettled_slot_is_made_from_the_recipe_its_slot_brings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    maker, programme = FakeMaker(), FakeProgramme(directs={1})
    s = studio(maker, programme)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.run)
        await trio.sleep_until(start_of(1))
        assert maker.log == []  # never settled: nothing made ahead
        job = await s.output_for(1, recipe("fallback"))
        nursery.cancel_scope.cancel()
    assert job.production is not None
    assert job.production.result.script == "fallback"
    assert job.finished is not None and job.finished - GENESIS.slot_start(1) == pytest.approx(2.5)


async def test_one_job_at_a_time_earliest_slot_first(autojump_clock: trio.testing.MockClock) -> None:
    maker, programme = FakeMaker(gen_sec=3.0), FakeProgramme(directs={1, 2, 3})
    s = studio(maker, programme)
    async with trio.open_nursery() as nursery:
        for slot in (3, 2, 1):  # settled in reverse order, all at once
            programme.settle(slot, recipe(f"r{slot}"))
        nursery.start_soon(s.run)
        jobs = [await s.output_for(slot, recipe(f"r{slot}")) for slot in (1, 2, 3)]
        nursery.cancel_scope.cancel()
    assert maker.most_at_once == 1
    assert [slot for what, slot, _ in maker.log if what == "generate"] == [1, 2, 3]
    assert all(j.production is not None for j in jobs)


async def test_a_job_made_from_another_recipe_is_made_again(autojump_clock: trio.testing.MockClock) -> None:
    maker, programme = FakeMaker(), FakeProgramme(directs={2})
    s = studio(maker, programme)
    async with trio.open_nursery() as nursery:
        programme.settle(2, recipe("what this node thought"))
        nursery.start_soon(s.run)
        await trio.sleep(1.0)  # being made
        await trio.sleep_until(start_of(2))
        job = await s.output_for(2, recipe("what the slot plays"))
        nursery.cancel_scope.cancel()
    assert job.production is not None and job.production.result.script == "what the slot plays"
    assert [slot for what, slot, _ in maker.log if what == "generate"] == [2, 2]


async def test_a_job_in_progress_for_another_recipe_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    maker, programme = FakeMaker(gen_sec=30.0), FakeProgramme(directs={2})
    s = studio(maker, programme)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.run)
        await trio.sleep_until(start_of(2) - 5.0)
        programme.settle(2, recipe("stale"))  # 30 s of work that would run past the deadline anyway
        await trio.sleep_until(start_of(2))
        maker.gen_sec = 1.0
        job = await s.output_for(2, recipe("fresh"))
        nursery.cancel_scope.cancel()
    assert job.production is not None and job.production.result.script == "fresh"
    # the fresh job started at once: the stale one was cancelled, not waited for
    assert job.started is not None and job.started - GENESIS.slot_start(2) == pytest.approx(0.0)


async def test_a_job_ends_at_the_slots_deadline_with_a_reason(autojump_clock: trio.testing.MockClock) -> None:
    maker, programme = FakeMaker(gen_sec=60.0), FakeProgramme(directs={1})
    s = studio(maker, programme)
    async with trio.open_nursery() as nursery:
        programme.settle(1, recipe("slow card"))
        nursery.start_soon(s.run)
        job = await s.output_for(1, recipe("slow card"))
        ended = trio.current_time()
        nursery.cancel_scope.cancel()
    assert ended == pytest.approx(start_of(1) + ENDS_AT)
    assert job.production is None and job.error == "cut off at the deadline"


async def test_a_failed_job_says_why_and_the_next_slot_is_still_made(
    autojump_clock: trio.testing.MockClock,
) -> None:
    maker, programme = FakeMaker(fail={1}), FakeProgramme(directs={1, 2})
    s = studio(maker, programme)
    async with trio.open_nursery() as nursery:
        programme.settle(1, recipe("one"))
        programme.settle(2, recipe("two"))
        nursery.start_soon(s.run)
        failed = await s.output_for(1, recipe("one"))
        made = await s.output_for(2, recipe("two"))
        nursery.cancel_scope.cancel()
    assert failed.production is None and failed.error == "slot 1: the actor stage failed"
    assert made.production is not None


async def test_jobs_of_ended_slots_are_forgotten(autojump_clock: trio.testing.MockClock) -> None:
    maker, programme = FakeMaker(), FakeProgramme(directs=set(range(50)))
    s = studio(maker, programme)
    for slot in range(50):
        programme.settle(slot, recipe(f"r{slot}"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.run)
        await trio.sleep_until(start_of(40))  # no slot task ever asks: jobs are made and never taken
        held = [slot for slot in range(50) if s.job(slot) is not None]
        nursery.cancel_scope.cancel()
    # the studio looks recipe_lag slots ahead, and forgets what ended
    assert held and min(held) >= 39 and max(held) <= 40 + GENESIS.recipe_lag
