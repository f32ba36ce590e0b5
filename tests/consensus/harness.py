"""A deterministic adversarial scheduler for one slot's agreement among 5 directors.

Honest directors relay every message they accept to the others, once, as
gossipsub does; the faulty one does not. Everything is driven by one `random.Random(seed)`: message delays, drops,
duplicates, reorderings, start and output times, which director is Byzantine and
how. Virtual time; no threads, no sockets. A failing execution reproduces from
its seed alone (`run(Scenario.from_seed(seed))`).

Byzantine behaviours (at most one director):
- equivocate: a conflicting twin of each announce, proposal and vote, each half of the
  others getting one version;
- different_output: announces an output whose embeddings disagree with everyone's;
- missing_candidate: prevotes and precommits for a value no one has;
- silent: sends nothing;
- replay: re-sends messages of an earlier slot and its own old messages, and floods garbage.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from consensus.actions import Broadcast, Decided, EvidenceFound, ScheduleTimeout, SlotFailed
from consensus.agreement import AgreementConfig, LocalOutput, SlotAgreement
from consensus.checks import MessageChecker
from consensus.crypto import Signer
from consensus.messages import (
    Announce,
    Precommit,
    Prevote,
    Proposal,
    Signed,
    Value,
    embedding_to_bytes,
    sha256,
)

BEHAVIOURS = ("equivocate", "different_output", "missing_candidate", "silent", "replay")
CHAIN_ID = b"icn-test-chain"
SLOT = 10
RECIPE_HASH = sha256(b"recipe for slot 10")
DEADLINE = 13.0  # the agreement phase: 17 s to 30 s of the slot
KEYS = [Signer.from_seed(sha256(f"director-{i}".encode())) for i in range(5)]


@dataclass(frozen=True)
class Scenario:
    seed: int
    byzantine: str | None
    byzantine_index: int
    timely: bool
    max_delay: float
    drop_rate: float
    dup_rate: float
    outputs_differ: bool
    quorum_size: int | None = None

    @classmethod
    def from_seed(cls, seed: int, *, timely: bool | None = None, quorum_size: int | None = None) -> Scenario:
        rng = random.Random(seed)
        byzantine = rng.choice((None, *BEHAVIOURS))
        is_timely = rng.random() < 0.5 if timely is None else timely
        return cls(
            seed=seed,
            byzantine=byzantine,
            byzantine_index=rng.randrange(5),
            timely=is_timely,
            max_delay=rng.uniform(0.01, 0.5) if is_timely else rng.uniform(0.01, 6.0),
            drop_rate=0.0 if is_timely else rng.uniform(0.0, 0.4),
            dup_rate=rng.uniform(0.0, 0.3),
            outputs_differ=rng.random() < 0.5,
            quorum_size=quorum_size,
        )


@dataclass
class Outcome:
    scenario: Scenario
    decisions: dict[int, bytes] = field(default_factory=dict)  # honest node -> decided value hash
    decision_times: dict[int, float] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    evidence: dict[int, set[tuple]] = field(default_factory=dict)  # node -> conflict keys reported
    equivocations_seen: dict[int, set[tuple]] = field(
        default_factory=dict
    )  # node -> conflict keys it received twice
    precommits: list[Precommit] = field(default_factory=list)  # every precommit sent, by anyone
    messages_sent: int = 0
    messages_delivered: int = 0

    def certifiable_values(self, q: int) -> set[bytes]:
        """Values for which some round holds q valid precommits from distinct directors: any node could certify them."""
        by_round: dict[tuple[int, bytes], set[bytes]] = {}
        for p in self.precommits:
            if p.value_hash is not None and p.verify(CHAIN_ID):
                by_round.setdefault((p.round, p.value_hash), set()).add(p.signer)
        return {value for (_, value), signers in by_round.items() if len(signers) >= q}


def _vector(rng: random.Random, dim: int) -> list[float]:
    return [rng.gauss(0, 1) for _ in range(dim)]


def _perturb(rng: random.Random, v: list[float], scale: float) -> list[float]:
    return [x + rng.gauss(0, scale) for x in v]


class _Sim:
    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.rng = random.Random(sc.seed * 7919 + 1)
        self.directors = [k.public_key for k in KEYS]
        self.byz = sc.byzantine_index if sc.byzantine else None
        self.queue: list[tuple[float, int, int, str, object]] = []
        self.seq = 0
        self.out = Outcome(
            sc, evidence={i: set() for i in range(5)}, equivocations_seen={i: set() for i in range(5)}
        )
        config = AgreementConfig(threshold_b=0.9, threshold_l=0.9)
        self.nodes = [
            SlotAgreement(
                SLOT,
                self.directors,
                CHAIN_ID,
                RECIPE_HASH,
                signer=KEYS[i],
                config=config,
                next_recipe=b'{"audio_track": {}}',
                quorum_size=sc.quorum_size,
            )
            for i in range(5)
        ]
        self.checkers = [
            MessageChecker(CHAIN_ID, lambda s: self.directors if s in (SLOT - 1, SLOT) else None)
            for _ in range(5)
        ]
        self.received: list[dict[tuple, set]] = [{} for _ in range(5)]
        self.seen_ids: list[set[bytes]] = [set() for _ in range(5)]
        self.twin_values: dict[int, bytes] = {}  # round -> value of the faulty proposer's twin proposal

    # -- scheduling --
    def at(self, time: float, node: int, kind: str, payload: object) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (time, self.seq, node, kind, payload))

    def send(self, now: float, src: int, data: bytes, targets: list[int] | None = None) -> None:
        self.out.messages_sent += 1
        for dst in targets if targets is not None else range(5):
            if dst == src or self.rng.random() < self.sc.drop_rate:
                continue
            self.at(now + self.rng.uniform(0.001, self.sc.max_delay), dst, "msg", data)
            if self.rng.random() < self.sc.dup_rate:
                self.at(now + self.rng.uniform(0.001, self.sc.max_delay), dst, "msg", data)

    # -- outputs --
    def outputs(self) -> list[LocalOutput]:
        base_b, base_l = _vector(self.rng, 16), _vector(self.rng, 24)
        common = sha256(b"media-" + str(self.sc.seed).encode())
        outs = []
        for i in range(5):
            b, lv, content = base_b, base_l, common
            if self.sc.outputs_differ:
                b, lv = _perturb(self.rng, base_b, 0.02), _perturb(self.rng, base_l, 0.02)
                content = sha256(b"media-%d-%d" % (self.sc.seed, i))
            if i == self.byz and self.sc.byzantine == "different_output":
                b, lv, content = _vector(self.rng, 16), _vector(self.rng, 24), sha256(b"forged")
            outs.append(
                LocalOutput(RECIPE_HASH, embedding_to_bytes(b), embedding_to_bytes(lv), True, content)
            )
        return outs

    # -- byzantine twists on what the faulty director sends --
    def twist(self, now: float, src: int, msg: Signed) -> None:
        behaviour = self.sc.byzantine if src == self.byz else None
        key = KEYS[src]
        if behaviour == "silent":
            return
        if behaviour == "missing_candidate" and isinstance(msg, Prevote | Precommit):
            msg = type(msg)(msg.slot, msg.round, sha256(b"nobody has this %d" % msg.round)).signed_by(
                key, CHAIN_ID
            )
        if isinstance(msg, Precommit):
            self.out.precommits.append(msg)
        if behaviour == "equivocate":
            twin = self.conflicting(msg, key)
            others = [i for i in range(5) if i != src]
            self.rng.shuffle(others)
            half = self.rng.randrange(0, 5)
            self.send(now, src, msg.encode(), others[:half])
            self.send(now, src, twin.encode(), others[half:])
            if isinstance(twin, Precommit):
                self.out.precommits.append(twin)
            return
        self.send(now, src, msg.encode())
        if behaviour == "replay":
            old = Prevote(SLOT - 5, 0, sha256(b"old")).signed_by(key, CHAIN_ID)
            self.send(now, src, old.encode())
            self.send(now + 2.0, src, msg.encode())  # its own message again, later
            self.send(now, src, b"\xa1\x00" + bytes(self.rng.randrange(256) for _ in range(20)))  # garbage

    def conflicting(self, msg: Signed, key: Signer) -> Signed:
        """A twin that is as damaging as possible: where it can, it names another *valid* value."""
        other = sha256(b"twin-%d-%d" % (msg.round, self.rng.randrange(10**6)))
        if isinstance(msg, Prevote | Precommit):
            twin = self.twin_values.get(msg.round)
            if twin is not None and twin != msg.value_hash:
                flipped = twin
            else:
                flipped = None if msg.value_hash is not None else other
            return type(msg)(msg.slot, msg.round, flipped).signed_by(key, CHAIN_ID)
        if isinstance(msg, Proposal):
            held = self.nodes[self.byz].announces.values()
            alternatives = sorted({a.content_hash for anns in held for a in anns} - {msg.value.candidate})
            candidate = self.rng.choice(alternatives) if alternatives else other
            value = Value(candidate, msg.value.next_recipe, msg.value.evidence)
            self.twin_values[msg.round] = value.hash
            return Proposal(msg.slot, msg.round, value, msg.pol_round).signed_by(key, CHAIN_ID)
        assert isinstance(msg, Announce)
        return Announce(
            msg.slot, msg.recipe_hash, msg.embedding_b, msg.embedding_l, msg.self_check, other
        ).signed_by(key, CHAIN_ID)

    # -- the run --
    def handle(self, now: float, node: int, actions: list) -> None:
        for a in actions:
            if isinstance(a, Broadcast):
                self.twist(now, node, a.message)
            elif isinstance(a, ScheduleTimeout):
                self.at(now + a.delay, node, "timeout", (a.round, a.step))
            elif isinstance(a, Decided):
                if node != self.byz:
                    self.out.decisions[node] = a.certificate.value.hash
                    self.out.decision_times[node] = now
                    if self.sc.quorum_size is None:  # an overridden quorum makes certificates others reject
                        err = a.certificate.verify(self.directors, CHAIN_ID)
                        assert err is None, f"seed {self.sc.seed}: node {node} made a bad certificate: {err}"
            elif isinstance(a, SlotFailed):
                self.out.failed.add(node)
            elif isinstance(a, EvidenceFound):
                self.out.evidence[node].add(a.evidence.conflict_key())

    def run(self) -> Outcome:
        outs = self.outputs()
        for i in range(5):
            self.at(self.rng.uniform(0.0, 0.5), i, "start", None)
            self.at(self.rng.uniform(-1.0, 1.0), i, "output", outs[i])
            self.at(DEADLINE, i, "deadline", None)
        while self.queue:
            now, _, node, kind, payload = heapq.heappop(self.queue)
            if now > DEADLINE + 10:
                break
            sm = self.nodes[node]
            if kind == "start":
                actions = sm.start()
            elif kind == "output":
                actions = sm.set_local_output(payload)
            elif kind == "deadline":
                actions = sm.on_deadline()
            elif kind == "timeout":
                actions = sm.on_timeout(*payload)
            else:
                msg = self.checkers[node].check(payload, SLOT)
                if msg is None or msg.message_id in self.seen_ids[node]:
                    continue  # invalid, or a duplicate the gossip layer drops by message id
                self.seen_ids[node].add(msg.message_id)
                if node != self.byz:
                    self.send(now, node, payload)  # gossip relay
                self.out.messages_delivered += 1
                bodies = self.received[node].setdefault(msg.conflict_key(), set())
                bodies.add(repr(msg.header()))
                if len(bodies) > 1:
                    self.out.equivocations_seen[node].add(msg.conflict_key())
                actions = sm.receive(msg)
            self.handle(now, node, actions)
        return self.out


def run(scenario: Scenario) -> Outcome:
    return _Sim(scenario).run()


def honest(sc: Scenario) -> list[int]:
    return [i for i in range(5) if not (sc.byzantine and i == sc.byzantine_index)]


def judge(out: Outcome) -> dict[str, list[str]]:
    """What an execution violated, by kind: safety, liveness, evidence (each empty when kept).

    - safety: at most one value decided, and at most one value any node could certify;
    - liveness: with a timely network and at least 4 correct directors, every correct
      director decides before the agreement deadline;
    - evidence: every equivocation a correct director received became evidence there.
    The sweep test and `bench/consensus_sweep.py` read the same rules."""
    sc = out.scenario
    found: dict[str, list[str]] = {"safety": [], "liveness": [], "evidence": []}
    if len(set(out.decisions.values())) > 1:
        found["safety"].append("two decisions")
    if len(out.certifiable_values(sc.quorum_size or 4)) > 1:
        found["safety"].append("two certifiable values")
    if sc.timely:
        missing = [i for i in honest(sc) if i not in out.decisions]
        if missing:
            found["liveness"].append(f"{missing} did not decide")
        elif max(out.decision_times.values()) >= DEADLINE:
            found["liveness"].append(
                f"decided at {max(out.decision_times.values()):.2f} s, after the deadline"
            )
    for i in honest(sc):
        if not out.equivocations_seen[i] <= out.evidence[i]:
            found["evidence"].append(f"node {i} missed evidence")
    return found
