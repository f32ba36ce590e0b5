"""A Twins harness for one slot's agreement (Bano et al., "Twins: BFT Systems Made Robust", 2020).

One director's key runs as two *twins*: two correct-looking `SlotAgreement`
instances with their own journals and different outputs, which is how a
Byzantine director behaves at its most confusing while every message it sends
is well formed and signed. Around them, per-round network partitions (each
round's messages reach only the instances on their side) until a global
stabilisation time (GST), random delays, drops and reordering before it, and
honest directors that crash at any moment and restart from their journals, fed
the messages they had already received again in an adversarial order.

Everything comes from one `random.Random(seed)`: a failing execution reproduces
from its seed alone, `run(TwinsScenario.from_seed(SEED))`.

Checks (`Outcome.violations`):
- safety: every two certifiable values agree (a value is certifiable when some
  round holds a quorum of valid precommits for it, whoever collects them);
- no honest director signs two different headers for one (kind, slot, round);
- no evidence names an honest director;
- no exception leaves a state machine;
- liveness: when the network is synchronous after GST, with every honest director
  up from then on, every honest director decides before the deadline.

The machine under test comes from a factory, so a deliberately broken variant can
be checked too: the harness must see the bugs it is meant to see.
"""

from __future__ import annotations

import heapq
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from consensus.actions import Broadcast, Decided, EvidenceFound, ScheduleTimeout
from consensus.agreement import AgreementConfig, LocalOutput, SlotAgreement
from consensus.crypto import Signer
from consensus.journal import MemoryJournal
from consensus.messages import Precommit, Prevote, Proposal, Signed, canonical, embedding_to_bytes, sha256

N = 5
CHAIN_ID = b"icn-twins"
SLOT = 7
RECIPE_HASH = sha256(b"twins recipe")
KEYS = [Signer.from_seed(sha256(b"twins-director-%d" % i)) for i in range(N)]
DIRECTORS = [k.public_key for k in KEYS]
CONFIG = AgreementConfig(timeout_propose=3.0, timeout_prevote=1.0, timeout_precommit=1.0, timeout_delta=0.5)
DELTA = 0.5  # the message delay bound after GST
SETTLE = (
    60.0  # virtual seconds after GST (and after the last restart) in which every honest director must decide
)

Factory = Callable[..., SlotAgreement]


@dataclass(frozen=True)
class TwinsScenario:
    seed: int
    byzantine: int  # the director whose key runs as two twins
    gst: float
    partition_rate: float  # chance that a round (before GST) is partitioned
    drop_rate: float  # chance that a message is lost before GST
    max_delay: float  # before GST
    crashes: int  # honest crash-restarts
    twin_outputs_agree: bool  # the twins' outputs look like the honest ones (else: far off)
    # before GST no instance gets a quorum of precommits for a value, and timeouts fire early
    # (adversarial timeouts): rounds go by with locks piling up and nothing decided
    starve_decisions: bool
    starve_rate: float  # chance that an instance is kept below a quorum for one (round, vote kind)

    @classmethod
    def from_seed(cls, seed: int) -> TwinsScenario:
        rng = random.Random(seed)
        return cls(
            seed=seed,
            # half the time the proposer of round 1: its twins then lead the round right after round 0
            byzantine=rng.choice((1, rng.randrange(N))),
            gst=rng.uniform(0.0, 40.0),
            partition_rate=rng.uniform(0.3, 1.0),
            drop_rate=rng.uniform(0.0, 0.3),
            max_delay=rng.uniform(0.05, 4.0),
            crashes=rng.choice((0, 1, 2, 3, 5)),
            twin_outputs_agree=rng.random() < 0.7,
            starve_decisions=rng.random() < 0.5,
            starve_rate=rng.uniform(0.0, 0.6),
        )


@dataclass
class Outcome:
    scenario: TwinsScenario
    violations: list[str] = field(default_factory=list)
    decisions: dict[int, bytes] = field(default_factory=dict)  # honest director -> decided value hash
    restarts: int = 0
    messages: int = 0
    max_round: int = 0


class _Twins:
    def __init__(self, sc: TwinsScenario, factory: Factory, quorum_size: int | None) -> None:
        self.sc = sc
        self.factory = factory
        self.quorum_size = quorum_size
        self.rng = random.Random(sc.seed * 1_000_003 + 17)
        self.out = Outcome(sc)
        self.honest = [i for i in range(N) if i != sc.byzantine]
        # instances: 0..N-1 are the directors (the Byzantine index is twin A); N is twin B
        self.instances = list(range(N + 1))
        self.key_of = {i: (sc.byzantine if i == N else i) for i in self.instances}
        self.journals = {i: MemoryJournal() for i in self.instances}
        self.outputs = self._outputs()
        self.machines: dict[int, SlotAgreement | None] = {}
        self.incarnation = dict.fromkeys(self.instances, 0)
        self.started: set[int] = set()
        # Tendermint's invariants across crashes: an honest director never returns to a round below one
        # it has signed in (rounds it only passed through unsigned are not journaled, and need not be),
        # and its locked round never goes back. Checked once its current incarnation has started.
        self.running: set[int] = set()
        self.signed_round: dict[int, int] = {}
        self.locked_high: dict[int, int] = {}
        self.delivered: dict[int, list[Signed]] = {i: [] for i in self.instances}
        self.sent_log: list[tuple[int, Signed]] = []
        self.partitions: dict[tuple[int, str], dict[int, int]] = {}  # (round, kind) -> instance -> side
        self.signed_by_honest: dict[tuple, set[bytes]] = {}
        self.precommits: dict[tuple[int, bytes], set[bytes]] = {}  # (round, value) -> signers
        self.queue: list[tuple[float, int, int, str, object]] = []
        self.seq = 0
        self.last_restart = 0.0
        self.q = quorum_size or (2 * N) // 3 + 1
        self.starving: dict[tuple[int, str], set[int]] = {}  # (round, vote kind) -> starved instances
        self.votes_held: dict[tuple[int, str, int, bytes], set[bytes]] = {}  # (instance, kind, round, value)

    # -- set-up --------------------------------------------------------------------------------------
    def _outputs(self) -> dict[int, LocalOutput]:
        base_b = [self.rng.gauss(0, 1) for _ in range(8)]
        base_l = [self.rng.gauss(0, 1) for _ in range(12)]
        outs = {}
        for i in self.instances:
            b = [x + self.rng.gauss(0, 0.05) for x in base_b]
            lv = [x + self.rng.gauss(0, 0.05) for x in base_l]
            if i in (self.sc.byzantine, N) and not self.sc.twin_outputs_agree:
                b = [self.rng.gauss(0, 1) for _ in range(8)]
                lv = [self.rng.gauss(0, 1) for _ in range(12)]
            content = sha256(b"twins-media-%d-%d" % (self.sc.seed, i))
            outs[i] = LocalOutput(RECIPE_HASH, embedding_to_bytes(b), embedding_to_bytes(lv), True, content)
        return outs

    def _machine(self, i: int) -> SlotAgreement:
        return self.factory(
            SLOT,
            DIRECTORS,
            CHAIN_ID,
            RECIPE_HASH,
            signer=KEYS[self.key_of[i]],
            config=CONFIG,
            journal=self.journals[i],
            quorum_size=self.quorum_size,
        )

    # -- scheduling ----------------------------------------------------------------------------------
    def at(self, t: float, instance: int, kind: str, payload: object) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, instance, kind, payload))

    def _side(self, key: tuple[int, str], instance: int) -> int:
        if key not in self.partitions:
            if self.rng.random() < self.sc.partition_rate:
                # one side often large enough for a quorum, so that rounds make progress (and locks) there
                sizes = (2, 3, 4, 4, 5)
                together = set(self.rng.sample(self.instances, self.rng.choice(sizes)))
                sides = {i: int(i not in together) for i in self.instances}
                sides[N] = 1 - sides[self.sc.byzantine]  # the twins always on opposite sides
            else:
                sides = dict.fromkeys(self.instances, 0)
            self.partitions[key] = sides
        return self.partitions[key][instance]

    def _starved(self, key: tuple[int, str], instance: int) -> bool:
        """Whether `instance` is kept below a quorum for any one value in this (round, vote kind)."""
        if key not in self.starving:
            round_, kind = key
            if kind == "precommit" and self.sc.starve_decisions:
                starved = set(self.instances)
            elif kind == "prevote" and self.rng.random() < self.sc.starve_rate:
                # hide the polka from those the proposal did not reach: they prevote nil and time out,
                # while those it reached lock; the Twins scenarios that break locks start this way
                leader = round_ % N
                starved = {
                    i
                    for i in self.instances
                    if self._side((round_, "proposal"), i) != self._side((round_, "proposal"), leader)
                }
            else:
                starved = {i for i in self.instances if self.rng.random() < self.sc.starve_rate / 3}
            self.starving[key] = starved
        return instance in self.starving[key]

    def _reaches(self, now: float, src: int, dst: int, msg: Signed) -> bool:
        """Before GST: proposals cross only within their round's sides; votes for
        a value reach a starved instance only while it holds fewer than a quorum of them (its own included),
        a content-aware network that lets locks form where decisions or polkas would end the round."""
        if now >= self.sc.gst:
            return True
        key = (max(msg.round, 0), msg.KIND)
        if isinstance(msg, Prevote | Precommit):
            if msg.value_hash is not None and self._starved(key, dst):
                seen = self.votes_held.setdefault((dst, msg.KIND, msg.round, msg.value_hash), set())
                if len(seen | {msg.signer}) >= self.q:
                    return False
                seen.add(msg.signer)
        elif isinstance(msg, Proposal) and self._side(key, src) != self._side(key, dst):
            return False  # announcements are only dropped: a candidate nobody can judge stalls every round
        return self.rng.random() >= self.sc.drop_rate

    def send(self, now: float, src: int, msg: Signed) -> None:
        self.out.messages += 1
        self.sent_log.append((src, msg))
        key = self.key_of[src]
        if key != self.sc.byzantine:
            self.signed_by_honest.setdefault(msg.conflict_key(), set()).add(canonical(msg.header()))
            self.signed_round[src] = max(self.signed_round.get(src, 0), msg.round)
        if isinstance(msg, Precommit) and msg.value_hash is not None:
            self.precommits.setdefault((msg.round, msg.value_hash), set()).add(msg.signer)
        if isinstance(msg, Prevote | Precommit) and msg.value_hash is not None:  # its own vote counts there
            self.votes_held.setdefault((src, msg.KIND, msg.round, msg.value_hash), set()).add(msg.signer)
        for dst in self.instances:
            if dst != src and self._reaches(now, src, dst, msg):
                delay = self.rng.uniform(0.0, DELTA if now >= self.sc.gst else self.sc.max_delay)
                self.at(max(now + delay, now), dst, "msg", msg)

    # -- the run -------------------------------------------------------------------------------------
    def handle(self, now: float, instance: int, actions: list) -> None:
        for a in actions:
            if isinstance(a, Broadcast):
                self.send(now, instance, a.message)
            elif isinstance(a, ScheduleTimeout):
                delay = a.delay
                if self.sc.starve_decisions and now < self.sc.gst:
                    delay = self.rng.uniform(0.0, delay)  # adversarial timeouts: only ever liveness
                self.at(now + delay, instance, "timeout", (self.incarnation[instance], a.round, a.step))
            elif isinstance(a, Decided):
                if self.key_of[instance] != self.sc.byzantine:
                    self.out.decisions[instance] = a.certificate.value.hash
                    problem = a.certificate.verify(DIRECTORS, CHAIN_ID)
                    if problem and self.quorum_size is None:
                        self.out.violations.append(f"honest {instance} made a bad certificate: {problem}")
            elif isinstance(a, EvidenceFound) and a.evidence.signer != DIRECTORS[self.sc.byzantine]:
                self.out.violations.append(
                    f"evidence names honest director {DIRECTORS.index(a.evidence.signer)}"
                )

    def call(self, now: float, instance: int, fn: Callable[[], list]) -> None:
        try:
            actions = fn()
        except Exception:  # the check: nothing may escape a state machine
            self.out.violations.append(f"exception in instance {instance}: {traceback.format_exc(limit=3)}")
            return
        self.handle(now, instance, actions)
        self._check_monotonic(instance)

    def _check_monotonic(self, i: int) -> None:
        m = self.machines.get(i)
        if m is None or i not in self.running or self.key_of[i] == self.sc.byzantine:
            return
        signed, locked = self.signed_round.get(i, 0), self.locked_high.get(i, -1)
        if m.round < signed:
            self.out.violations.append(
                f"round went back: honest {i} signed in round {signed}, now in {m.round}"
            )
        if m.locked_round < locked:
            self.out.violations.append(f"lock went back: honest {i} from round {locked} to {m.locked_round}")
        self.locked_high[i] = max(locked, m.locked_round)

    def restart(self, now: float, i: int) -> None:
        """A crashed honest director comes back: journal only; old messages replayed in any order."""
        self.out.restarts += 1
        self.incarnation[i] += 1
        m = self._machine(i)
        self.machines[i] = m
        self.last_restart = max(self.last_restart, now)
        self.call(now, i, lambda: m.set_local_output(self.outputs[i]))
        if i in self.started:
            self.running.add(i)
            self.call(now, i, m.start)
        replay = [msg for msg in self.delivered[i] if self.rng.random() < 0.9]
        self.rng.shuffle(replay)
        for msg in replay:
            self.at(now + self.rng.uniform(0.0, 0.2), i, "msg", msg)
        if now >= self.sc.gst:
            self.repair(now, [i])

    def repair(self, now: float, instances: list[int]) -> None:
        """Gossip's guarantee after GST: every message sent so far reaches every instance that is up."""
        for _, msg in self.sent_log:
            for i in instances:
                self.at(now + self.rng.uniform(0.0, DELTA), i, "msg", msg)

    def run(self) -> Outcome:
        sc = self.sc
        for i in self.instances:
            self.machines[i] = self._machine(i)
            self.at(self.rng.uniform(0.0, 1.0), i, "output", None)
            self.at(self.rng.uniform(0.0, 1.0), i, "start", None)
        for _ in range(sc.crashes):
            victim = self.rng.choice(self.honest)
            down = self.rng.uniform(0.0, sc.gst + 5.0)
            self.at(down, victim, "crash", None)
            self.at(down + self.rng.uniform(0.1, 6.0), victim, "restart", None)
        self.at(sc.gst, -1, "gst", None)
        horizon = sc.gst + 6.0 + 6.0 + SETTLE  # the last restart is at most gst + 11
        while self.queue:
            now, _, i, kind, payload = heapq.heappop(self.queue)
            if now > horizon:
                break
            if kind == "gst":
                self.repair(now, self.instances)
                continue
            m = self.machines.get(i)
            if kind == "crash":
                self.machines[i] = None
                self.incarnation[i] += 1
                self.running.discard(i)
                continue
            if kind == "restart":
                if m is None:
                    self.restart(now, i)
                continue
            if kind == "start":
                self.started.add(i)  # the agreement phase has begun, whether or not this instance is up
            if m is None:
                continue  # down: timers die with it and messages are lost
            if kind == "output":
                self.call(now, i, lambda m=m, i=i: m.set_local_output(self.outputs[i]))
            elif kind == "start":
                self.running.add(i)
                self.call(now, i, m.start)
            elif kind == "timeout":
                incarnation, round_, step = payload
                if incarnation == self.incarnation[i]:
                    self.call(now, i, lambda m=m, r=round_, s=step: m.on_timeout(r, s))
            else:
                msg = payload
                self.delivered[i].append(msg)
                self.call(now, i, lambda m=m, msg=msg: m.receive(msg))
            self.out.max_round = max(self.out.max_round, m.round)
        self._check(horizon)
        return self.out

    def _check(self, horizon: float) -> None:
        certifiable = {value for (_, value), signers in self.precommits.items() if len(signers) >= self.q}
        if len(certifiable) > 1:
            self.out.violations.append(f"safety: {len(certifiable)} certifiable values")
        for key, headers in self.signed_by_honest.items():
            if len(headers) > 1:
                self.out.violations.append(f"honest director signed two headers for {key[0]} round {key[3]}")
        if len(set(self.out.decisions.values())) > 1:
            self.out.violations.append("safety: two decisions")
        # liveness: every honest director is up after the last restart, and the network is synchronous
        missing = [i for i in self.honest if i not in self.out.decisions]
        if missing and self.machines and all(self.machines[i] is not None for i in self.honest):
            self.out.violations.append(f"liveness: honest {missing} undecided {SETTLE} s after GST")


def run(scenario: TwinsScenario, factory: Factory = SlotAgreement, quorum_size: int | None = None) -> Outcome:
    return _Twins(scenario, factory, quorum_size).run()
