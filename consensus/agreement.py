"""One slot's Byzantine agreement among its directors: a sans-IO Tendermint instance.

Inputs: `start()`, `set_local_output(out)`, `receive(msg)` (a message that has
passed `MessageChecker`), `on_timeout(round, step)` and `on_deadline()`. Each
returns the actions for the driver (consensus.actions). Nothing here reads a
clock, sleeps, or does I/O; the same inputs in the same order always give the
same outputs. Time enters only as `ScheduleTimeout` requests and the calls the
driver makes back.

The rules (Buchman, Kwon and Milosevic, "The latest gossip on BFT consensus",
2018, Algorithm 1), with n directors, f = (n-1)//3 and quorum q = floor(2n/3)+1:

- Round r's proposer is directors[r mod n]. It proposes its valid value if it
  has one (with that value's round), else a new value: a candidate it can vouch
  for, the next slot's recipe, and evidence it holds.
- Prevote (step propose): for a proposal (v, -1), prevote v if v is valid and we
  are unlocked or locked on v, else nil. For (v, vr) with q prevotes for v in
  round vr < r, prevote v if valid and lockedRound <= vr or locked on v.
- On q prevotes for v in round r (with its proposal, v valid), the first time:
  lock on v and precommit v if still at prevote; v becomes the valid value.
- On q nil prevotes at prevote: precommit nil. Timeouts: propose -> prevote nil;
  prevote (after q prevotes of any kind) -> precommit nil; precommit (after q
  precommits of any kind) -> next round. f+1 messages of a later round: jump.
- On q precommits for v in any round, with v known: decide; the precommits are
  the certificate. After a decision or the deadline, nothing more is done.

Validity of a value: its next recipe passes the recipe check, its evidence is
genuine and relevant to this slot, and the candidate's signed Announce is held,
for this slot's recipe, with a passing self-check (configurable), and its CLIP
embeddings agree with ours within the cosine thresholds; a director with no
output of its own needs f+1 directors' announcements agreeing with the
candidate instead (so at least one correct director vouches for it). While the
Announce is missing the value is neither valid nor invalid: the director waits
(until its timeout). The announcement of a director that announced twice
never makes a candidate valid.

That judgement is local (two correct directors' outputs may sit on either side
of a threshold), and Tendermint's liveness needs `valid()` to answer alike at
every correct process. So a quorum of prevotes for a value in any round also
makes it valid: a quorum holds f+1 correct directors, at least one of which
found it valid itself. Every correct director that has seen the same prevotes
then judges alike, and a director whose own output disagrees follows the
quorum instead of stalling the slot.

Crash recovery (consensus.journal): a restarted machine resumes at the highest
round it journaled, with its lock, its valid value and its votes as they were;
its round and its lock never go back, and it re-sends journaled proposals byte
for byte.

A message that conflicts with one already held from the same signer (same kind,
slot and round) becomes evidence, and is kept: every signed vote counts for the
value it names, so an equivocator counts towards each value it signed. Safety
does not need to discard them (any two quorums share f+1 directors, at least one
correct, and a correct director never signs two votes), and keeping them lets
every correct director that has seen the same messages reach the same quorums,
whichever twin arrived first.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from consensus.actions import Action, Broadcast, Decided, EvidenceFound, ScheduleTimeout, SlotFailed, Step
from consensus.certificate import Certificate
from consensus.crypto import Signer
from consensus.evidence import EquivocationDetector, Evidence, decode_relevant
from consensus.journal import MemoryJournal, VoteJournal
from consensus.membership import max_faulty, quorum
from consensus.messages import (
    MAX_EVIDENCE_PER_VALUE,
    MAX_RECIPE_BYTES,
    MAX_ROUND,
    Announce,
    DecodeError,
    Precommit,
    Prevote,
    Proposal,
    Signed,
    Value,
    canonical,
    cosine,
    decode_cbor,
    decode_signed,
)


@dataclass(frozen=True)
class AgreementConfig:
    timeout_propose: float = 3.0
    timeout_prevote: float = 1.0
    timeout_precommit: float = 1.0
    timeout_delta: float = 0.5  # added per round, so a slow network eventually fits
    threshold_b: float = 0.9  # cosine agreement between two directors' CLIP-B embeddings
    threshold_l: float = 0.9
    require_self_check: bool = True


@dataclass(frozen=True)
class LocalOutput:
    """What this director's engine produced for the slot."""

    recipe_hash: bytes
    embedding_b: bytes
    embedding_l: bytes
    self_check: bool
    content_hash: bytes


MAX_RULE_FIRINGS = 10_000  # far above what any input can trigger (about 10 rules x rounds reached)


class Validity(Enum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"  # the candidate's announcement has not arrived yet


def json_object_recipe(data: bytes) -> bool:
    """Default check of a proposed next recipe: a UTF-8 JSON object (the node plugs in the full schema)."""
    try:
        return isinstance(json.loads(data.decode("utf-8")), dict)
    except (UnicodeDecodeError, ValueError):
        return False


class SlotAgreement:
    def __init__(
        self,
        slot: int,
        directors: Sequence[bytes],
        chain_id: bytes,
        recipe_hash: bytes,
        *,
        signer: Signer | None = None,
        config: AgreementConfig = AgreementConfig(),
        journal: VoteJournal | None = None,
        next_recipe: bytes | None = None,
        evidence_pool: Iterable[Evidence] = (),
        recipe_ok: Callable[[bytes], bool] = json_object_recipe,
        quorum_size: int | None = None,
        directors_of: Callable[[int], Sequence[bytes] | None] | None = None,
    ) -> None:
        """`directors_of(slot)` names the directors of earlier slots, so that evidence against them
        can be judged (the node passes its ledger's); by default only this slot's evidence counts."""
        if not directors or len(set(directors)) != len(directors):
            raise ValueError("directors must be a non-empty list of distinct keys")
        if next_recipe is not None and len(next_recipe) > MAX_RECIPE_BYTES:
            raise ValueError(f"next_recipe is longer than {MAX_RECIPE_BYTES} bytes")
        self.slot = slot
        self.directors = tuple(directors)
        self.chain_id = chain_id
        self.recipe_hash = recipe_hash
        self.config = config
        self.n = len(self.directors)
        self.f = max_faulty(self.n)
        self.q = quorum_size or quorum(self.n)
        self._signer = signer if signer is not None and signer.public_key in self.directors else None
        self.me = self._signer.public_key if self._signer else None
        self._journal: VoteJournal = journal if journal is not None else MemoryJournal()
        self._next_recipe = next_recipe
        self._recipe_ok = recipe_ok
        self._evidence_pool: dict[bytes, Evidence] = {e.hash: e for e in evidence_pool}
        self._directors_of = directors_of or (lambda s: self.directors if s == slot else None)

        self.round = 0
        self.step = Step.PROPOSE
        self.started = False
        self.decision: Certificate | None = None
        self.failed: str | None = None
        self.locked_hash: bytes | None = None
        self.locked_round = -1
        self.valid_value: Value | None = None
        self.valid_round = -1
        self.own: LocalOutput | None = None

        self.announces: dict[
            bytes, list[Announce]
        ] = {}  # signer -> its announcements (two if it equivocated)
        self.proposals: dict[int, list[Proposal]] = {}  # round -> its proposer's proposals, first first
        self.values: dict[bytes, Value] = {}
        self.prevotes: dict[int, dict[bytes, set[bytes | None]]] = {}  # round -> signer -> values it prevoted
        self.precommits: dict[
            int, dict[tuple[bytes, bytes | None], Precommit]
        ] = {}  # round -> (signer, value)
        self._round_signers: dict[int, set[bytes]] = {}
        self._fired: set[tuple[str, int]] = set()
        self._detector = EquivocationDetector()
        self.evidence: list[Evidence] = []
        self._evidence_ok: dict[bytes, bool] = {}
        self._recipe_verdicts: dict[bytes, bool] = {}
        self._agreement: dict[tuple[bytes, bytes, bytes, bytes], bool] = {}
        self._resume_round = 0
        self._restore()

    # -- inputs --------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.decision is not None or self.failed is not None

    def start(self) -> list[Action]:
        """Begin round 0, or after a restart the highest round the journal holds (rounds never go back)."""
        if self.started or self.finished:
            return []
        self.started = True
        return self._start_round(self._resume_round) + self._evaluate()

    def set_local_output(self, out: LocalOutput) -> list[Action]:
        """Our engine's output is ready: announce it."""
        if self.finished or self._signer is None or self.own is not None:
            return []
        recorded = self._journal.recorded(self.slot, -1, "announce")
        if recorded is not ... and recorded != out.content_hash:
            return []  # we announced another output before a restart: announcing this one would equivocate
        self.own = out
        if recorded is ...:
            self._journal.record(self.slot, -1, "announce", out.content_hash)
        ann = Announce(
            self.slot, out.recipe_hash, out.embedding_b, out.embedding_l, out.self_check, out.content_hash
        ).signed_by(self._signer, self.chain_id)
        self._accept(ann)
        return [Broadcast(ann), *self._evaluate()]

    def receive(self, msg: Signed) -> list[Action]:
        """Take a checked message. Equivocation is detected even after the slot is decided or failed."""
        if msg.slot != self.slot or msg.signer not in self.directors:
            return []
        actions: list[Action] = []
        evidence = self._detector.observe(msg)
        if evidence is not None:
            self.evidence.append(evidence)
            self._evidence_pool[evidence.hash] = evidence
            actions.append(EvidenceFound(evidence))
        if self.finished:
            return actions
        self._accept(msg)
        return actions + self._evaluate()

    def on_timeout(self, round_: int, step: Step) -> list[Action]:
        if self.finished or not self.started or round_ != self.round:
            return []
        actions: list[Action] = []
        if step == Step.PROPOSE and self.step == Step.PROPOSE:
            self.step = Step.PREVOTE
            actions += self._vote(Prevote, round_, None)
        elif step == Step.PREVOTE and self.step == Step.PREVOTE:
            self.step = Step.PRECOMMIT
            actions += self._vote(Precommit, round_, None)
        elif step == Step.PRECOMMIT:
            actions += self._start_round(round_ + 1)
        return actions + self._evaluate()

    def on_deadline(self) -> list[Action]:
        """The agreement phase is over: without a decision now, the slot fails. Never decides later."""
        if self.finished:
            return []
        self.failed = f"no certificate by the end of the agreement phase ({self.progress()})"
        return [SlotFailed(self.slot, self.failed)]

    def progress(self) -> str:
        """Where the agreement stands, in one line: what an operator reads to learn why a slot failed.

        For each round reached: the proposer (by seat), whether its proposal arrived and what this
        director judged it, then the prevotes and precommits held (nil or the value's first bytes).
        """
        parts = [
            f"round {self.round} {self.step.name.lower()}",
            f"announced {len(self.announces)}/{self.n}",
            f"own {'yes' if self.own is not None else 'no'}",
        ]
        rounds = set(self.proposals) | set(self.prevotes) | set(self.precommits) | {self.round}
        for r in sorted(rounds)[-4:]:  # the last few rounds: the line stays short whatever arrived
            p = self._first_proposal(r)
            seat = self.directors.index(self.proposer(r))
            verdict = "none" if p is None else f"{p.value.hash.hex()[:6]}:{self.validity(p.value).value}"
            prevotes = _tally(v for values in self.prevotes.get(r, {}).values() for v in values)
            precommits = _tally(v for (_, v) in self.precommits.get(r, {}))
            parts.append(f"r{r} seat {seat} proposal {verdict} prevotes {prevotes} precommits {precommits}")
        return "; ".join(parts)

    # -- state ----------------------------------------------------------------------------------------
    def proposer(self, round_: int) -> bytes:
        return self.directors[round_ % self.n]

    def _restore(self) -> None:
        """Read the journal back: the round to resume at, the lock, and the valid value (see journal.py)."""
        for round_, step, value_hash, data in self._journal.votes(self.slot):
            self._resume_round = max(self._resume_round, round_)
            if step == "precommit" and value_hash is not None and round_ > self.locked_round:
                self.locked_round, self.locked_hash = round_, value_hash
            elif step == "polka" and round_ > self.valid_round:
                value = _journaled_value(data, value_hash)
                if value is not None:
                    self.valid_value, self.valid_round = value, round_
                    self.values.setdefault(value.hash, value)

    def _journaled(self, round_: int, step: str) -> bytes | None:
        for r, s, _, data in self._journal.votes(self.slot):
            if (r, s) == (round_, step):
                return data
        return None

    def _accept(self, msg: Signed) -> None:
        if isinstance(msg, Announce):
            held = self.announces.setdefault(msg.signer, [])
            if msg not in held:
                held.append(msg)
            return
        self._round_signers.setdefault(msg.round, set()).add(msg.signer)
        if isinstance(msg, Proposal):
            if msg.signer != self.proposer(msg.round):
                return
            proposed = self.proposals.setdefault(msg.round, [])
            if msg not in proposed:
                proposed.append(msg)
                self.values.setdefault(msg.value.hash, msg.value)
        elif isinstance(msg, Prevote):
            self.prevotes.setdefault(msg.round, {}).setdefault(msg.signer, set()).add(msg.value_hash)
        elif isinstance(msg, Precommit):
            self.precommits.setdefault(msg.round, {}).setdefault((msg.signer, msg.value_hash), msg)

    def _count(self, votes: dict[bytes, set[bytes | None]], value_hash: bytes | None) -> int:
        """Directors that prevoted `value_hash` (an equivocator counts for each value it signed)."""
        return sum(1 for values in votes.values() if value_hash in values)

    def _all_announces(self) -> list[Announce]:
        return sorted(
            (a for held in self.announces.values() for a in held), key=lambda a: (a.signer, a.content_hash)
        )

    def _first_proposal(self, round_: int) -> Proposal | None:
        held = self.proposals.get(round_)
        return held[0] if held else None

    # -- validity -------------------------------------------------------------------------------------
    def _agree(self, a: Announce | LocalOutput, b: Announce) -> bool:
        key = (a.embedding_b, a.embedding_l, b.embedding_b, b.embedding_l)
        if key not in self._agreement:  # rules re-check validity often; the cosines never change
            self._agreement[key] = (
                cosine(a.embedding_b, b.embedding_b) >= self.config.threshold_b
                and cosine(a.embedding_l, b.embedding_l) >= self.config.threshold_l
            )
        return self._agreement[key]

    def _announces_for(self, candidate: bytes) -> list[Announce]:
        """Announcements of `candidate` for this recipe, from directors that announced only once."""
        return [
            held[0]
            for held in self.announces.values()
            if len(held) == 1
            and held[0].content_hash == candidate
            and held[0].recipe_hash == self.recipe_hash
        ]

    def _supporters(self, ann: Announce) -> int:
        """Directors with an announcement for this slot's recipe that agrees with `ann`."""
        return sum(
            1
            for held in self.announces.values()
            if any(other.recipe_hash == self.recipe_hash and self._agree(other, ann) for other in held)
        )

    def _candidate_validity(self, candidate: bytes) -> Validity:
        anns = self._announces_for(candidate)
        all_in = len(self.announces) == self.n
        if not anns:
            only_twins = any(a.content_hash == candidate for held in self.announces.values() for a in held)
            return Validity.NO if all_in or only_twins else Validity.UNKNOWN
        for ann in anns:
            if self.config.require_self_check and not ann.self_check:
                continue
            if self.own is not None:
                if self._agree(self.own, ann):
                    return Validity.YES
            elif self._supporters(ann) >= self.f + 1:
                return Validity.YES
        return Validity.NO if self.own is not None or all_in else Validity.UNKNOWN

    def _evidence_valid(self, data: bytes) -> bool:
        if data not in self._evidence_ok:
            ev = decode_relevant(data, self.chain_id, self.slot, self._directors_of)
            self._evidence_ok[data] = ev is not None
        return self._evidence_ok[data]

    def _recipe_valid(self, data: bytes) -> bool:
        """The recipe check once per recipe: rules ask for validity often, and parsing is not cheap."""
        if data not in self._recipe_verdicts:
            self._recipe_verdicts[data] = self._recipe_ok(data)
        return self._recipe_verdicts[data]

    def _vouched(self, value_hash: bytes) -> bool:
        """A quorum prevoted this value in some round: f+1 correct directors found it valid."""
        return any(self._count(votes, value_hash) >= self.q for votes in self.prevotes.values())

    def validity(self, value: Value) -> Validity:
        if self._vouched(value.hash):
            return Validity.YES
        if value.next_recipe is not None and not self._recipe_valid(value.next_recipe):
            return Validity.NO
        if not all(self._evidence_valid(e) for e in value.evidence):
            return Validity.NO
        return self._candidate_validity(value.candidate)

    def _new_value(self) -> Value | None:
        options = []
        for ann in self._all_announces():
            if self._candidate_validity(ann.content_hash) == Validity.YES:
                mine = self.own is not None and ann.content_hash == self.own.content_hash
                options.append((not mine, -self._supporters(ann), ann.content_hash))
        if not options:
            return None
        # Only evidence every correct director will accept, at most MAX_EVIDENCE_PER_VALUE pieces of at
        # most MAX_EVIDENCE_BYTES each: by consensus.messages' budget the proposal always fits.
        pool = sorted(e.encode() for e in self._evidence_pool.values())
        evidence = tuple(data for data in pool if self._evidence_valid(data))[:MAX_EVIDENCE_PER_VALUE]
        return Value(min(options)[2], self._next_recipe, evidence)

    # -- steps ----------------------------------------------------------------------------------------
    def _start_round(self, round_: int) -> list[Action]:
        """Enter `round_` (never below the current round), resuming any step the journal shows we took."""
        if round_ > MAX_ROUND or round_ < self.round:
            return []
        self.round, self.step = round_, Step.PROPOSE
        delay = self.config.timeout_propose + round_ * self.config.timeout_delta
        actions: list[Action] = [ScheduleTimeout(self.slot, round_, Step.PROPOSE, delay)]
        actions += self._propose() or []
        if self._signer is not None:  # after a restart: where we had voted in this round, say it again
            for kind, step in ((Prevote, Step.PREVOTE), (Precommit, Step.PRECOMMIT)):
                recorded = self._journal.recorded(self.slot, round_, kind.KIND)
                if recorded is not ...:
                    self.step = step
                    actions += self._vote(kind, round_, recorded)
        return actions

    def _propose(self) -> list[Action] | None:
        if (
            self._signer is None
            or self.proposer(self.round) != self.me
            or ("proposed", self.round) in self._fired
        ):
            return None
        proposal: Signed | None
        if self._journal.recorded(self.slot, self.round, "proposal") is not ...:
            proposal = _journaled_proposal(self._journaled(self.round, "proposal"))
            if proposal is None:
                return None  # an unreadable journal entry: never sign a second, different proposal
        else:
            value = self.valid_value or self._new_value()
            if value is None:
                return None
            pol = self.valid_round if self.valid_value is not None else -1
            proposal = Proposal(self.slot, self.round, value, pol).signed_by(self._signer, self.chain_id)
            self._journal.record(self.slot, self.round, "proposal", value.hash, proposal.encode())
        self._fired.add(("proposed", self.round))
        self._accept(proposal)
        return [Broadcast(proposal)]

    def _vote(
        self, kind: type[Prevote] | type[Precommit], round_: int, value_hash: bytes | None
    ) -> list[Action]:
        if self._signer is None:
            return []
        recorded = self._journal.recorded(self.slot, round_, kind.KIND)
        if recorded is not ...:
            value_hash = recorded  # after a restart: repeat the vote we made, never a different one
        else:
            self._journal.record(self.slot, round_, kind.KIND, value_hash)
        vote = kind(self.slot, round_, value_hash).signed_by(self._signer, self.chain_id)
        self._accept(vote)
        return [Broadcast(vote)]

    def _evaluate(self) -> list[Action]:
        actions: list[Action] = []
        rules = (
            self._rule_decide,
            self._rule_jump_round,
            self._rule_own_proposal,
            self._rule_prevote_proposal,
            self._rule_prevote_pol_proposal,
            self._rule_prevote_timeout,
            self._rule_polka,
            self._rule_nil_polka,
            self._rule_nil_precommits,
            self._rule_precommit_timeout,
        )
        progressed = True
        budget = MAX_RULE_FIRINGS
        while progressed and not self.finished:
            progressed = False
            budget -= 1
            if budget < 0:  # each rule fires once per round and step; spinning here is a bug, not a schedule
                raise RuntimeError(f"slot {self.slot}: agreement rules did not settle")
            for rule in rules:
                fired = rule()
                if fired is not None:
                    actions += fired
                    progressed = True
                    break
        return actions

    def _rule_decide(self) -> list[Action] | None:
        for round_, votes in sorted(self.precommits.items()):
            tally = Counter(value_hash for (_, value_hash) in votes if value_hash is not None)
            for value_hash, count in sorted(tally.items()):
                if count >= self.q and value_hash in self.values:
                    sigs = tuple(
                        sorted((v.signer, v.signature) for v in votes.values() if v.value_hash == value_hash)
                    )
                    self.decision = Certificate(self.slot, round_, self.values[value_hash], sigs)
                    return [Decided(self.decision)]
        return None

    def _rule_jump_round(self) -> list[Action] | None:
        if not self.started:
            return None
        later = [
            r for r, signers in self._round_signers.items() if r > self.round and len(signers) >= self.f + 1
        ]
        return self._start_round(max(later)) if later else None

    def _rule_own_proposal(self) -> list[Action] | None:
        if not self.started or self.step != Step.PROPOSE:
            return None
        return self._propose()

    def _rule_prevote_proposal(self) -> list[Action] | None:
        p = self._first_proposal(self.round)
        if not self.started or self.me is None or self.step != Step.PROPOSE or p is None or p.pol_round != -1:
            return None
        validity = self.validity(p.value)
        if validity == Validity.UNKNOWN:
            return None
        ok = validity == Validity.YES and (self.locked_round == -1 or self.locked_hash == p.value.hash)
        self.step = Step.PREVOTE
        return self._vote(Prevote, self.round, p.value.hash if ok else None)

    def _rule_prevote_pol_proposal(self) -> list[Action] | None:
        p = self._first_proposal(self.round)
        if not self.started or self.me is None or self.step != Step.PROPOSE or p is None or p.pol_round < 0:
            return None
        vr = p.pol_round
        if self._count(self.prevotes.get(vr, {}), p.value.hash) < self.q:
            return None
        validity = self.validity(p.value)
        if validity == Validity.UNKNOWN:
            return None
        ok = validity == Validity.YES and (self.locked_round <= vr or self.locked_hash == p.value.hash)
        self.step = Step.PREVOTE
        return self._vote(Prevote, self.round, p.value.hash if ok else None)

    def _rule_prevote_timeout(self) -> list[Action] | None:
        key = ("prevote_timeout", self.round)
        if self.step != Step.PREVOTE or key in self._fired or len(self.prevotes.get(self.round, {})) < self.q:
            return None
        self._fired.add(key)
        delay = self.config.timeout_prevote + self.round * self.config.timeout_delta
        return [ScheduleTimeout(self.slot, self.round, Step.PREVOTE, delay)]

    def _rule_polka(self) -> list[Action] | None:
        key = ("polka", self.round)
        if not self.started or self.me is None or key in self._fired or self.step == Step.PROPOSE:
            return None
        votes = self.prevotes.get(self.round, {})
        # q prevotes for the proposal's value: the quorum vouches for its validity (module docstring)
        ready = [p for p in self.proposals.get(self.round, []) if self._count(votes, p.value.hash) >= self.q]
        if not ready:
            return None
        p = ready[0]
        self._fired.add(key)
        actions: list[Action] = []
        # journaled before it can show in a vote: a restart restores the valid value, and the lock with it
        self._journal.record(self.slot, self.round, "polka", p.value.hash, canonical(p.value.to_cbor()))
        if self.step == Step.PREVOTE and self._may_lock():
            self.locked_hash, self.locked_round = p.value.hash, self.round
            self.step = Step.PRECOMMIT
            actions = self._vote(Precommit, self.round, p.value.hash)
        if self.round > self.valid_round:
            self.valid_value, self.valid_round = p.value, self.round
        return actions

    def _may_lock(self) -> bool:
        """A lock never goes back: only a polka of our lock's round or a later one may replace it."""
        return self.round >= self.locked_round

    def _rule_nil_polka(self) -> list[Action] | None:
        if self.me is None or self.step != Step.PREVOTE:
            return None
        if self._count(self.prevotes.get(self.round, {}), None) < self.q:
            return None
        self.step = Step.PRECOMMIT
        return self._vote(Precommit, self.round, None)

    def _rule_nil_precommits(self) -> list[Action] | None:
        if not self.started:
            return None
        nil = {signer for (signer, value_hash) in self.precommits.get(self.round, {}) if value_hash is None}
        return self._start_round(self.round + 1) if len(nil) >= self.q else None

    def _rule_precommit_timeout(self) -> list[Action] | None:
        key = ("precommit_timeout", self.round)
        signers = {signer for (signer, _) in self.precommits.get(self.round, {})}
        if not self.started or key in self._fired or len(signers) < self.q:
            return None
        self._fired.add(key)
        delay = self.config.timeout_precommit + self.round * self.config.timeout_delta
        return [ScheduleTimeout(self.slot, self.round, Step.PRECOMMIT, delay)]


def _journaled_value(data: bytes | None, value_hash: bytes | None) -> Value | None:
    """A polka's value read back from our own journal; None if the entry is unreadable or mismatched."""
    if data is None:
        return None
    try:
        value = Value.from_cbor(decode_cbor(data, len(data)))
    except DecodeError:
        return None
    return value if value.hash == value_hash else None


def _journaled_proposal(data: bytes | None) -> Signed | None:
    if data is None:
        return None
    try:
        msg = decode_signed(data)
    except DecodeError:
        return None
    return msg if isinstance(msg, Proposal) else None


def _tally(votes: Iterable[bytes | None]) -> str:
    """Votes counted by value, e.g. `{nil:3,4be1c2:1}`."""
    counts = Counter("nil" if v is None else v.hex()[:6] for v in votes)
    return "{" + ",".join(f"{k}:{n}" for k, n in sorted(counts.items())) + "}"
