"""One slot's agreement, driven by one task reading one inbox.

As CometBFT's consensus state alone updates its round state from one queue,
the `SlotDriver` alone owns its slot's `SlotAgreement`. Votes from gossip,
timer firings, the director's own output, the start and the deadline all
arrive as events in one inbox; one task (`run`) applies them in order and
carries out the returned actions through the injected ports (`node.ports`).
No two inputs interleave, no other task touches the agreement, and a test can
run five drivers over an in-memory network on trio's MockClock.

`SlotDrivers` routes each checked vote to its slot's driver, holding votes of
a slot that has not started here yet (a faster peer's clock).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from consensus.actions import Action, Broadcast, Decided, EvidenceFound, ScheduleTimeout, SlotFailed, Step
from consensus.agreement import LocalOutput, SlotAgreement
from consensus.messages import Signed
from node.ports import Broadcaster, CertificateSink, EvidenceSink

if TYPE_CHECKING:  # trio's own types are shadowed for mypy by trio-typing's stubs (a libp2p dependency)
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

INBOX_CAPACITY = 256  # a full inbox holds back the gossip reader: backpressure, not loss
MAX_EARLY_VOTES = 4096  # per slot not started yet; a flood of validly signed votes stops here


@dataclass(frozen=True)
class SlotPorts:
    broadcaster: Broadcaster
    certificates: CertificateSink
    evidence: EvidenceSink


@dataclass(frozen=True)
class _Start:
    pass


@dataclass(frozen=True)
class _Output:
    output: LocalOutput


@dataclass(frozen=True)
class _Vote:
    message: Signed


@dataclass(frozen=True)
class _Timer:
    round: int
    step: Step


@dataclass(frozen=True)
class _Deadline:
    pass


_Event = _Start | _Output | _Vote | _Timer | _Deadline


class SlotDriver:
    def __init__(
        self,
        agreement: SlotAgreement,
        ports: SlotPorts,
        *,
        announced: Callable[[LocalOutput], LocalOutput] = lambda output: output,
    ) -> None:
        self.agreement = agreement
        self.slot = agreement.slot
        self._ports = ports
        self._announced = announced
        self._send, self._receive = trio.open_memory_channel[_Event](INBOX_CAPACITY)
        self._timers: trio.Nursery | None = None
        self._timers_armed = True

    @property
    def failed(self) -> str | None:
        return self.agreement.failed

    # -- inputs, from any task -----------------------------------------------------------------------
    async def start(self) -> None:
        await self._put(_Start())

    async def set_local_output(self, output: LocalOutput) -> None:
        await self._put(_Output(output))

    async def deliver(self, msg: Signed) -> None:
        await self._put(_Vote(msg))

    async def deadline(self) -> None:
        await self._put(_Deadline())

    def stop_timers(self) -> None:
        """The slot has ended here: no timer fires any more, but late votes still count
        (late precommits can still complete the certificate)."""
        self._timers_armed = False

    def close(self) -> None:
        """No more input: `run` returns once the inbox is drained."""
        self._send.close()

    async def _put(self, event: _Event) -> None:
        try:
            await self._send.send(event)
        except trio.ClosedResourceError:
            log.debug("slot %d: driver closed, %s dropped", self.slot, type(event).__name__)

    # -- the one task ---------------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as timers:
            self._timers = timers
            task_status.started()
            async with self._receive:
                async for event in self._receive:
                    await self._perform(self._apply(event))
            timers.cancel_scope.cancel()

    def _apply(self, event: _Event) -> list[Action]:
        sm = self.agreement
        if isinstance(event, _Vote):
            return sm.receive(event.message)
        if isinstance(event, _Timer):
            return sm.on_timeout(event.round, event.step)
        if isinstance(event, _Output):
            return sm.set_local_output(self._announced(event.output))
        if isinstance(event, _Start):
            return sm.start()
        return [] if sm.finished else sm.on_deadline()

    async def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Broadcast):
                await self._ports.broadcaster.broadcast(action.message)
            elif isinstance(action, ScheduleTimeout):
                if self._timers_armed and self._timers is not None:
                    self._timers.start_soon(self._timer, action)
            elif isinstance(action, Decided):
                await self._ports.certificates.commit(action.certificate, "agreement")
            elif isinstance(action, EvidenceFound):
                await self._ports.evidence.take_evidence(action.evidence, publish=True)
            elif isinstance(action, SlotFailed):
                log.warning("slot %d failed: %s", action.slot, action.reason)

    async def _timer(self, action: ScheduleTimeout) -> None:
        await trio.sleep(action.delay)
        if self._timers_armed:
            await self._put(_Timer(action.round, action.step))


class SlotDrivers:
    """Which driver takes a vote: the slot's own, or a waiting list until that slot starts here."""

    def __init__(self) -> None:
        self._drivers: dict[int, SlotDriver] = {}
        self._early: dict[int, list[Signed]] = {}
        self.early_dropped = 0

    def get(self, slot: int) -> SlotDriver | None:
        return self._drivers.get(slot)

    async def add(self, driver: SlotDriver) -> None:
        """Register a running driver and hand it the votes that arrived before its slot began."""
        self._drivers[driver.slot] = driver
        for msg in self._early.pop(driver.slot, []):
            await driver.deliver(msg)

    async def deliver(self, msg: Signed, current_slot: int) -> None:
        driver = self._drivers.get(msg.slot)
        if driver is not None:
            await driver.deliver(msg)
        elif msg.slot >= current_slot:  # a faster peer's slot: hold it until ours starts
            held = self._early.setdefault(msg.slot, [])
            if len(held) < MAX_EARLY_VOTES:
                held.append(msg)
            else:
                self.early_dropped += 1

    def retire_before(self, oldest: int) -> None:
        """Close and forget drivers (and held votes) of slots before `oldest`."""
        for slot in [s for s in self._drivers if s < oldest]:
            self._drivers.pop(slot).close()
        for slot in [s for s in self._early if s < oldest]:
            del self._early[slot]
