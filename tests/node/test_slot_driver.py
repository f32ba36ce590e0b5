"""The slot driver on trio's MockClock: five drivers over an in-memory network, no sockets.

A whole slot takes milliseconds of real time; the virtual clock jumps through
the timeouts. The network keeps every message, as gossip's model does after
GST, so a director that restarts from its journal is handed what it missed.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import trio
import trio.testing
from trio_typing import TaskStatus

from consensus.agreement import AgreementConfig, LocalOutput, SlotAgreement
from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.journal import MemoryJournal
from consensus.messages import Prevote, Proposal, Signed, canonical, embedding_to_bytes, sha256
from node.slot_driver import MAX_EARLY_VOTES, SlotDriver, SlotDrivers, SlotPorts
from tests.consensus.conftest import keys

pytestmark = pytest.mark.trio

CHAIN = b"driver-chain"
SLOT = 7
RECIPE = sha256(b"recipe")
K = keys(5, "drv")
D = tuple(k.public_key for k in K)
B, L = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0]
LATENCY = 0.05


def output(i: int) -> LocalOutput:
    return LocalOutput(RECIPE, embedding_to_bytes(B), embedding_to_bytes(L), True, sha256(b"media-%d" % i))


class MemoryNet:
    """Delivers each broadcast to every other joined driver after `LATENCY`, from one task it owns."""

    def __init__(self) -> None:
        self.drivers: dict[int, SlotDriver] = {}
        self.history: list[tuple[int, Signed]] = []
        self._send, self._receive = trio.open_memory_channel[tuple[int, Signed]](math.inf)

    def broadcaster(self, i: int) -> _Port:
        return _Port(self, i)

    async def join(self, i: int, driver: SlotDriver) -> None:
        """A (re)started director: it is handed every message the others sent so far."""
        self.drivers[i] = driver
        for src, msg in list(self.history):
            if src != i:
                await driver.deliver(msg)

    def leave(self, i: int) -> None:
        self.drivers.pop(i, None)

    async def run(self) -> None:
        async for src, msg in self._receive:
            await trio.sleep(LATENCY)
            for j, driver in list(self.drivers.items()):
                if j != src:
                    await driver.deliver(msg)


class _Port:
    def __init__(self, net: MemoryNet, i: int) -> None:
        self._net, self._i = net, i

    async def broadcast(self, msg: Signed) -> None:
        self._net.history.append((self._i, msg))
        self._net._send.send_nowait((self._i, msg))


class Sink:
    """Collects certificates and evidence, as the node's chain keeper would apply them."""

    def __init__(self) -> None:
        self.certificates: list[Certificate] = []
        self.evidence: list[Evidence] = []
        self.decided = trio.Event()

    async def commit(self, cert: Certificate, source: str) -> bool:
        assert source == "agreement"
        self.certificates.append(cert)
        self.decided.set()
        return True

    async def take_evidence(self, ev: Evidence, *, publish: bool) -> None:
        self.evidence.append(ev)


def driver(
    i: int, net: MemoryNet, sink: Sink, journal: MemoryJournal, next_recipe: bytes | None = None
) -> SlotDriver:
    sm = SlotAgreement(
        SLOT, D, CHAIN, RECIPE, signer=K[i], journal=journal, config=AgreementConfig(),
        next_recipe=next_recipe, recipe_ok=lambda data: True,
    )  # fmt: skip
    return SlotDriver(sm, SlotPorts(net.broadcaster(i), sink, sink))


def headers_by_signer(net: MemoryNet) -> dict[tuple[int, str, int], set[bytes]]:
    seen: dict[tuple[int, str, int], set[bytes]] = defaultdict(set)
    for src, msg in net.history:
        seen[(src, type(msg).__name__, getattr(msg, "round", -1))].add(canonical(msg.header()))
    return seen


async def slot_of_five(
    net: MemoryNet,
    sinks: list[Sink],
    journals: list[MemoryJournal],
    *,
    task_status: TaskStatus[list[SlotDriver]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The network and five directors' drivers, each given its output and started; runs until cancelled."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.run)
        drivers = [driver(i, net, sinks[i], journals[i]) for i in range(5)]
        for i, d in enumerate(drivers):
            await nursery.start(d.run)
            await net.join(i, d)
        for i, d in enumerate(drivers):
            await d.set_local_output(output(i))
            await d.start()
        task_status.started(drivers)


async def test_five_drivers_agree_on_one_certificate_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net, sinks = MemoryNet(), [Sink() for _ in K]
    journals = [MemoryJournal() for _ in K]
    async with trio.open_nursery() as nursery:
        await nursery.start(slot_of_five, net, sinks, journals)
        with trio.fail_after(30):
            for s in sinks:
                await s.decided.wait()
        started = trio.current_time()
        nursery.cancel_scope.cancel()
    values = {s.certificates[0].value.hash for s in sinks}
    assert len(values) == 1
    for s in sinks:
        assert s.certificates[0].verify(D, CHAIN) is None
        assert not s.evidence
    assert started < 30  # virtual seconds: the slot decided well inside its agreement window


async def test_a_director_restarted_from_its_journal_rejoins_without_equivocating(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net, sinks = MemoryNet(), [Sink() for _ in K]
    journals = [MemoryJournal() for _ in K]
    victim = 0  # round 0's proposer: after its restart its recipe queue holds another recipe
    async with trio.open_nursery() as nursery:
        drivers = await nursery.start(slot_of_five, net, sinks, journals)
        # crash the proposer as soon as it has proposed, before anyone decided
        with trio.fail_after(30):
            while not any(src == victim and isinstance(m, Proposal) for src, m in net.history):
                await trio.sleep(0.01)
        assert not any(s.decided.is_set() for s in sinks)
        net.leave(victim)
        drivers[victim].close()
        signed_before = len(journals[victim].votes(SLOT))
        await trio.sleep(1.0)
        # a new machine over the same journal: it resumes, re-sends what it signed, and decides
        restarted = driver(victim, net, sinks[victim], journals[victim], next_recipe=b'{"queued": "later"}')
        await nursery.start(restarted.run)
        await net.join(victim, restarted)
        await restarted.set_local_output(output(victim))
        await restarted.start()
        with trio.fail_after(60):
            for s in sinks:
                await s.decided.wait()
        nursery.cancel_scope.cancel()
    assert signed_before >= 1
    proposals = {m.encode() for src, m in net.history if src == victim and isinstance(m, Proposal)}
    assert len(proposals) == 1  # re-sent byte for byte, not re-made from the new queue
    assert len({s.certificates[0].value.hash for s in sinks}) == 1
    for (src, kind, round_), headers in headers_by_signer(net).items():
        assert len(headers) == 1, f"director {src} signed two {kind} headers in round {round_}"
    assert not any(s.evidence for s in sinks)


async def test_a_silent_proposer_costs_its_propose_timeout_and_no_precommit_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Round 0's proposer is down: the four others prevote and precommit nil once its propose timeout
    fires, and round 1 starts on the quorum of nil precommits, not after the precommit timeout."""
    net, sinks = MemoryNet(), [Sink() for _ in K]
    config = AgreementConfig()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.run)
        started = trio.current_time()
        for i in range(1, 5):  # director 0 never runs
            d = driver(i, net, sinks[i], MemoryJournal())
            await nursery.start(d.run)
            await net.join(i, d)
            await d.set_local_output(output(i))
            await d.start()
        with trio.fail_after(30):
            for s in sinks[1:]:
                await s.decided.wait()
        took = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert {s.certificates[0].round for s in sinks[1:]} == {1}
    assert len({s.certificates[0].value.hash for s in sinks[1:]}) == 1
    # the propose timeout and a few message delays; waiting out the precommit timeout would add 1 s
    assert config.timeout_propose < took < config.timeout_propose + config.timeout_precommit


async def test_stopped_timers_fire_no_more_and_close_ends_the_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A lone director without output: only its propose timer moves it on (to a nil prevote)."""
    nets = {armed: MemoryNet() for armed in (True, False)}
    async with trio.open_nursery() as nursery:
        for armed, net in nets.items():
            nursery.start_soon(net.run)
            d = driver(1, net, Sink(), MemoryJournal())  # director 1: not round 0's proposer
            await nursery.start(d.run)
            await d.start()
            if not armed:
                d.stop_timers()
        await trio.sleep(60)
        d.close()
        await d.deliver(Prevote(SLOT, 0, None).signed_by(K[2], CHAIN))  # after close: dropped, no error
        nursery.cancel_scope.cancel()
    prevotes = {armed: [m for _, m in net.history if isinstance(m, Prevote)] for armed, net in nets.items()}
    assert [p.value_hash for p in prevotes[True]] == [None]  # the propose timeout fired: prevote nil
    assert prevotes[False] == []  # stopped before it fired


async def test_votes_for_a_slot_not_started_wait_for_its_driver_and_are_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    drivers = SlotDrivers()
    early = [Prevote(SLOT, r, None).signed_by(K[1], CHAIN) for r in range(3)]
    for msg in early:
        await drivers.deliver(msg, current_slot=SLOT - 1)
    await drivers.deliver(Prevote(SLOT - 5, 0, None).signed_by(K[1], CHAIN), current_slot=SLOT - 1)  # stale
    net, sink = MemoryNet(), Sink()
    d = driver(0, net, sink, MemoryJournal())
    seen: list[Signed] = []
    real_deliver = d.deliver

    async def counting(msg: Signed) -> None:
        seen.append(msg)
        await real_deliver(msg)

    d.deliver = counting  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        await drivers.add(d)
        assert seen == early  # in arrival order, the stale one never held
        assert drivers.get(SLOT) is d
        drivers.retire_before(SLOT + 1)
        assert drivers.get(SLOT) is None
    # a flood of validly signed votes for a future slot stops at the bound
    flood = SlotDrivers()
    for r in range(MAX_EARLY_VOTES + 10):
        await flood.deliver(Prevote(SLOT + 1, r % 1000, None).signed_by(K[1], CHAIN), current_slot=SLOT)
    assert flood.early_dropped == 10


@pytest.fixture(autouse=True)
def _no_real_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests must not touch the network: any socket is a bug in the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a fake-clock driver test opened a socket")

    monkeypatch.setattr(trio.socket, "socket", refuse)
