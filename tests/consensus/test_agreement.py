"""Each rule of the slot agreement, driven message by message."""

from __future__ import annotations

import pytest

from consensus.actions import Broadcast, Decided, EvidenceFound, ScheduleTimeout, SlotFailed, Step
from consensus.agreement import AgreementConfig, LocalOutput, SlotAgreement, Validity
from consensus.evidence import Evidence
from consensus.journal import MemoryJournal
from consensus.messages import Announce, Precommit, Prevote, Proposal, Value, embedding_to_bytes, sha256
from tests.consensus.conftest import keys

CHAIN = b"chain"
SLOT = 4
RECIPE = sha256(b"recipe")
K = keys(5, "d")
D = [k.public_key for k in K]
B, L = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0]


def output(i: int, b=B, lv=L, self_check=True, recipe=RECIPE) -> LocalOutput:
    return LocalOutput(
        recipe, embedding_to_bytes(b), embedding_to_bytes(lv), self_check, sha256(b"media-%d" % i)
    )


def sm(i: int | None, **kw) -> SlotAgreement:
    return SlotAgreement(SLOT, D, CHAIN, RECIPE, signer=K[i] if i is not None else None, **kw)


def broadcasts(actions) -> list:
    return [a.message for a in actions if isinstance(a, Broadcast)]


class Net:
    """Delivers every broadcast to every other machine, in order, until quiet."""

    def __init__(self, machines: list[SlotAgreement]) -> None:
        self.machines = machines
        self.log: list = []

    def pump(self, origin: int, actions: list) -> None:
        queue = [(origin, a) for a in actions]
        while queue:
            src, action = queue.pop(0)
            self.log.append((src, action))
            if isinstance(action, Broadcast):
                for j, m in enumerate(self.machines):
                    if j != src:
                        queue += [(j, a) for a in m.receive(action.message)]

    def decisions(self) -> list:
        return [a.certificate for _, a in self.log if isinstance(a, Decided)]


def run_all(machines: list[SlotAgreement], outputs: dict[int, LocalOutput]) -> Net:
    net = Net(machines)
    for i, out in outputs.items():
        net.pump(i, machines[i].set_local_output(out))
    for i, m in enumerate(machines):
        net.pump(i, m.start())
    return net


def test_happy_path_decides_in_round_zero_with_a_verifiable_certificate() -> None:
    machines = [sm(i, next_recipe=b'{"next": 1}') for i in range(5)]
    net = run_all(machines, {i: output(i) for i in range(5)})
    certs = net.decisions()
    assert len(certs) == 5 and len({c.hash for c in certs}) == 1
    cert = certs[0]
    assert cert.round == 0 and cert.value.candidate == sha256(
        b"media-0"
    )  # round 0's proposer vouches for its own
    assert cert.value.next_recipe == b'{"next": 1}'
    assert cert.verify(D, CHAIN) is None
    assert len(cert.signatures) >= 4
    assert all(m.decision is not None for m in machines)


def test_round_zero_schedules_a_propose_timeout_growing_with_rounds() -> None:
    cfg = AgreementConfig(timeout_propose=3.0, timeout_delta=0.5)
    m = sm(1, config=cfg)
    (timeout,) = [a for a in m.start() if isinstance(a, ScheduleTimeout)]
    assert (timeout.round, timeout.step, timeout.delay) == (0, Step.PROPOSE, 3.0)
    m.on_timeout(0, Step.PROPOSE)
    m.on_timeout(0, Step.PREVOTE)
    later = [a for a in m.on_timeout(0, Step.PRECOMMIT) if isinstance(a, ScheduleTimeout)]
    assert later[0].round == 1 and later[0].delay == 3.5


def _proposal_from_0(candidate_out: LocalOutput) -> tuple[Announce, Proposal]:
    ann = Announce(
        SLOT,
        candidate_out.recipe_hash,
        candidate_out.embedding_b,
        candidate_out.embedding_l,
        candidate_out.self_check,
        candidate_out.content_hash,
    ).signed_by(K[0], CHAIN)
    prop = Proposal(SLOT, 0, Value(candidate_out.content_hash), -1).signed_by(K[0], CHAIN)
    return ann, prop


def _prevote_of(actions) -> Prevote:
    (vote,) = [m for m in broadcasts(actions) if isinstance(m, Prevote)]
    return vote


def test_prevotes_a_candidate_whose_embeddings_agree() -> None:
    m = sm(1)
    m.set_local_output(output(1, b=[0.99, 0.05, 0.0, 0.0]))
    m.start()
    ann, prop = _proposal_from_0(output(0))
    m.receive(ann)
    assert _prevote_of(m.receive(prop)).value_hash == prop.value.hash


@pytest.mark.parametrize(
    "candidate",
    [
        output(0, b=[0.0, 0.0, 1.0, 0.0]),  # CLIP-B disagrees
        output(0, lv=[1.0, 0.0, 0.0]),  # CLIP-L disagrees
        output(0, self_check=False),  # failed its own check
        output(0, recipe=sha256(b"another recipe")),  # made from the wrong recipe
    ],
    ids=["clip_b", "clip_l", "self_check", "recipe"],
)
def test_prevotes_nil_for_an_unacceptable_candidate(candidate: LocalOutput) -> None:
    m = sm(1)
    m.set_local_output(output(1))
    m.start()
    ann, prop = _proposal_from_0(candidate)
    m.receive(ann)
    for j in (2, 3, 4):  # every announcement is in, so a missing match is final
        m.receive(
            Announce(
                SLOT, RECIPE, embedding_to_bytes(B), embedding_to_bytes(L), True, sha256(b"m%d" % j)
            ).signed_by(K[j], CHAIN)
        )
    assert _prevote_of(m.receive(prop)).value_hash is None


def test_waits_for_a_missing_announcement_then_times_out_to_nil() -> None:
    m = sm(1)
    m.set_local_output(output(1))
    m.start()
    _, prop = _proposal_from_0(output(0))
    assert broadcasts(m.receive(prop)) == []  # not valid, not invalid: wait
    assert m.validity(prop.value) == Validity.UNKNOWN
    assert _prevote_of(m.on_timeout(0, Step.PROPOSE)).value_hash is None


def test_a_late_announcement_unblocks_the_prevote() -> None:
    m = sm(1)
    m.set_local_output(output(1))
    m.start()
    ann, prop = _proposal_from_0(output(0))
    m.receive(prop)
    assert _prevote_of(m.receive(ann)).value_hash == prop.value.hash


def test_without_own_output_f_plus_one_agreeing_announcements_are_needed() -> None:
    m = sm(1)  # no local output: its generation failed
    m.start()
    ann, prop = _proposal_from_0(output(0))
    m.receive(ann)
    assert m.validity(prop.value) == Validity.UNKNOWN  # only the candidate's own word so far
    m.receive(
        Announce(SLOT, RECIPE, embedding_to_bytes(B), embedding_to_bytes(L), True, sha256(b"m2")).signed_by(
            K[2], CHAIN
        )
    )
    assert m.validity(prop.value) == Validity.YES  # f + 1 = 2 directors vouch for it
    assert _prevote_of(m.receive(prop)).value_hash == prop.value.hash


def test_bad_next_recipe_or_evidence_make_a_value_invalid() -> None:
    m = sm(1)
    m.set_local_output(output(1))
    ann, _ = _proposal_from_0(output(0))
    m.receive(ann)
    assert m.validity(Value(ann.content_hash, b'{"ok": true}')) == Validity.YES
    assert m.validity(Value(ann.content_hash, b"[1, 2]")) == Validity.NO
    assert m.validity(Value(ann.content_hash, b"\xff")) == Validity.NO
    assert m.validity(Value(ann.content_hash, None, (b"not evidence",))) == Validity.NO
    a = Prevote(SLOT, 0, sha256(b"a")).signed_by(K[3], CHAIN)
    b = Prevote(SLOT, 0, sha256(b"b")).signed_by(K[3], CHAIN)
    assert m.validity(Value(ann.content_hash, None, (Evidence.of(a, b).encode(),))) == Validity.YES


def _votes(kind, round_, value_hash, signers):
    return [kind(SLOT, round_, value_hash).signed_by(K[j], CHAIN) for j in signers]


def test_locks_on_a_polka_and_refuses_other_values_later() -> None:
    m = sm(1)
    m.set_local_output(output(1))
    m.start()
    ann, prop = _proposal_from_0(output(0))
    m.receive(ann)
    m.receive(prop)
    actions = []
    for v in _votes(Prevote, 0, prop.value.hash, [0, 2, 3]):
        actions += m.receive(v)
    (precommit,) = [x for x in broadcasts(actions) if isinstance(x, Precommit)]
    assert precommit.value_hash == prop.value.hash
    assert (m.locked_hash, m.locked_round) == (prop.value.hash, 0)
    assert m.step == Step.PRECOMMIT
    # round 1: a different value, no proof of a later polka: prevote nil
    m.on_timeout(0, Step.PRECOMMIT)
    ann2 = Announce(
        SLOT, RECIPE, embedding_to_bytes(B), embedding_to_bytes(L), True, sha256(b"other")
    ).signed_by(K[1], CHAIN)
    m.receive(ann2)
    # round 1's proposer is us (K[1]); it re-proposes its valid value
    assert m.valid_value == prop.value
    assert m.proposals[1][0].value == prop.value and m.proposals[1][0].pol_round == 0


def test_unlocks_on_a_proposal_with_a_later_polka() -> None:
    m = sm(2)
    m.set_local_output(output(2))
    m.locked_hash, m.locked_round = sha256(b"old"), 0
    m.start()
    m.on_timeout(0, Step.PROPOSE)
    m.on_timeout(0, Step.PREVOTE)
    m.on_timeout(0, Step.PRECOMMIT)
    m.on_timeout(1, Step.PROPOSE)
    m.on_timeout(1, Step.PREVOTE)
    m.on_timeout(1, Step.PRECOMMIT)  # now round 2, proposer K[2] is us; make round 3 (K[3]) propose
    m.on_timeout(2, Step.PROPOSE)
    m.on_timeout(2, Step.PREVOTE)
    m.on_timeout(2, Step.PRECOMMIT)
    ann = Announce(
        SLOT, RECIPE, embedding_to_bytes(B), embedding_to_bytes(L), True, sha256(b"new")
    ).signed_by(K[3], CHAIN)
    m.receive(ann)
    value = Value(ann.content_hash)
    for v in _votes(Prevote, 1, value.hash, [0, 1, 3, 4]):
        m.receive(v)
    prop = Proposal(SLOT, 3, value, 1).signed_by(K[3], CHAIN)
    assert _prevote_of(m.receive(prop)).value_hash == value.hash  # polka in round 1 > locked round 0


def test_nil_polka_precommits_nil_and_a_quorum_of_nil_precommits_starts_the_next_round_at_once() -> None:
    m = sm(1)
    m.start()
    m.on_timeout(0, Step.PROPOSE)
    actions = []
    for v in _votes(Prevote, 0, None, [0, 2, 3]):
        actions += m.receive(v)
    assert [x.value_hash for x in broadcasts(actions) if isinstance(x, Precommit)] == [None]
    assert m.step == Step.PRECOMMIT
    actions = []
    for v in _votes(Precommit, 0, None, [0, 2]):
        m.receive(v)
    assert m.round == 0  # our own nil precommit and two more: three of five, not yet a quorum of four
    actions = m.receive(_votes(Precommit, 0, None, [3])[0])
    # q nil precommits: no value can be decided in round 0, so no precommit timeout is waited out
    assert (m.round, m.step) == (1, Step.PROPOSE)
    assert not any(isinstance(a, ScheduleTimeout) and a.step == Step.PRECOMMIT for a in actions)
    assert any(isinstance(a, ScheduleTimeout) and (a.round, a.step) == (1, Step.PROPOSE) for a in actions)


def test_a_quorum_of_mixed_precommits_waits_out_the_precommit_timeout() -> None:
    m = sm(1)
    m.start()
    m.on_timeout(0, Step.PROPOSE)
    actions = []
    for v in _votes(Prevote, 0, None, [0, 2]):
        actions += m.receive(v)
    actions += m.on_timeout(0, Step.PREVOTE)
    actions += m.receive(Precommit(SLOT, 0, sha256(b"a")).signed_by(K[0], CHAIN))
    actions += m.receive(Precommit(SLOT, 0, None).signed_by(K[2], CHAIN))
    actions += m.receive(Precommit(SLOT, 0, None).signed_by(K[3], CHAIN))
    # our own nil precommit, two more and K0's for a value: a quorum, with a value precommit among it: wait for the rest, the round may still decide
    assert m.round == 0
    assert [a for a in actions if isinstance(a, ScheduleTimeout) and a.step == Step.PRECOMMIT]
    m.on_timeout(0, Step.PRECOMMIT)
    assert m.round == 1


def test_prevote_timeout_after_a_quorum_of_mixed_prevotes() -> None:
    m = sm(1)
    m.start()
    m.on_timeout(0, Step.PROPOSE)
    actions = []
    for j, val in [(0, sha256(b"a")), (2, sha256(b"b")), (3, None)]:
        actions += m.receive(Prevote(SLOT, 0, val).signed_by(K[j], CHAIN))
    timeouts = [a for a in actions if isinstance(a, ScheduleTimeout) and a.step == Step.PREVOTE]
    assert len(timeouts) == 1
    assert [x.value_hash for x in broadcasts(m.on_timeout(0, Step.PREVOTE))] == [None]


def test_decides_only_with_the_value_known() -> None:
    m = sm(None)  # an observer: follows, never votes
    ann, prop = _proposal_from_0(output(0))
    actions = []
    for v in _votes(Precommit, 0, prop.value.hash, [0, 1, 2, 3]):
        actions += m.receive(v)
    assert not any(isinstance(a, Decided) for a in actions)
    decided = [a for a in m.receive(prop) if isinstance(a, Decided)]
    assert len(decided) == 1 and decided[0].certificate.verify(D, CHAIN) is None
    assert not broadcasts(m.start())  # observers never sign


def test_three_precommits_are_not_a_quorum_of_five() -> None:
    m = sm(None)
    _, prop = _proposal_from_0(output(0))
    m.receive(prop)
    for v in _votes(Precommit, 0, prop.value.hash, [0, 1, 2]):
        assert not any(isinstance(a, Decided) for a in m.receive(v))


def test_deadline_fails_the_slot_and_nothing_commits_after() -> None:
    m = sm(None)
    _, prop = _proposal_from_0(output(0))
    m.receive(prop)
    [failed] = m.on_deadline()
    assert isinstance(failed, SlotFailed) and failed.slot == SLOT
    # the reason says where the agreement stood: the round, who proposed, what was judged, the votes
    assert failed.reason.startswith("no certificate by the end of the agreement phase (round 0 propose;")
    assert f"r0 seat 0 proposal {prop.value.hash.hex()[:6]}:" in failed.reason
    actions = []
    for v in _votes(Precommit, 0, prop.value.hash, [0, 1, 2, 3, 4]):
        actions += m.receive(v)
    assert not any(isinstance(a, Decided) for a in actions)
    assert m.on_deadline() == [] and m.start() == []


def test_no_second_decision() -> None:
    machines = [sm(i) for i in range(5)]
    net = run_all(machines, {i: output(i) for i in range(5)})
    assert len(net.decisions()) == 5
    assert machines[0].on_deadline() == []


def test_equivocation_becomes_evidence_even_after_the_decision() -> None:
    machines = [sm(i) for i in range(5)]
    run_all(machines, {i: output(i) for i in range(5)})
    m = machines[1]
    twin = Prevote(SLOT, 0, sha256(b"something else")).signed_by(K[3], CHAIN)
    found = [a for a in m.receive(twin) if isinstance(a, EvidenceFound)]
    assert len(found) == 1
    ev = found[0].evidence
    assert ev.signer == D[3] and ev.check(CHAIN) is None
    assert m.receive(twin) == []  # reported once


def test_jumps_to_a_round_with_f_plus_one_messages() -> None:
    m = sm(1)
    m.start()
    m.receive(Prevote(SLOT, 5, None).signed_by(K[0], CHAIN))
    assert m.round == 0
    m.receive(Prevote(SLOT, 5, None).signed_by(K[2], CHAIN))
    assert m.round == 5 and m.step == Step.PROPOSE


def test_proposals_from_a_non_proposer_are_ignored() -> None:
    m = sm(1)
    m.start()
    ann, _ = _proposal_from_0(output(0))
    m.receive(ann)
    m.set_local_output(output(1))
    wrong = Proposal(SLOT, 0, Value(ann.content_hash), -1).signed_by(K[2], CHAIN)
    m.receive(wrong)
    assert 0 not in m.proposals


def test_journal_repeats_votes_after_a_restart_never_changes_them() -> None:
    journal = MemoryJournal()
    first = sm(1, journal=journal)
    first.set_local_output(output(1))
    first.start()
    ann, prop = _proposal_from_0(output(0))
    first.receive(ann)
    vote = _prevote_of(first.receive(prop))
    assert journal.recorded(SLOT, 0, "prevote") == prop.value.hash
    # restart: same journal, the proposal never arrives this time; the timeout would prevote nil
    second = sm(1, journal=journal)
    second.set_local_output(output(1))
    again = _prevote_of(second.start())  # it resumes in round 0 at the prevote step and says its vote again
    assert again.value_hash == vote.value_hash == prop.value.hash
    assert second.step == Step.PREVOTE and broadcasts(second.on_timeout(0, Step.PROPOSE)) == []
    with pytest.raises(ValueError, match="different prevote"):
        journal.record(SLOT, 0, "prevote", None)


def test_journal_restores_the_lock_and_the_announcement() -> None:
    journal = MemoryJournal()
    journal.record(SLOT, 2, "precommit", sha256(b"locked"))
    journal.record(SLOT, -1, "announce", sha256(b"media-1"))
    m = sm(1, journal=journal)
    assert (m.locked_hash, m.locked_round) == (sha256(b"locked"), 2)
    assert broadcasts(m.set_local_output(output(9))) == []  # a different output than announced: stay silent
    assert len(broadcasts(sm(1, journal=journal).set_local_output(output(1)))) == 1


def test_constructor_checks_directors() -> None:
    with pytest.raises(ValueError, match="distinct"):
        SlotAgreement(SLOT, [D[0], D[0]], CHAIN, RECIPE)
    with pytest.raises(ValueError, match="non-empty"):
        SlotAgreement(SLOT, [], CHAIN, RECIPE)


def test_announcing_is_journaled_once_and_only_by_a_director() -> None:
    journal = MemoryJournal()
    m = sm(1, journal=journal)
    assert len(broadcasts(m.set_local_output(output(1)))) == 1
    assert journal.recorded(SLOT, -1, "announce") == sha256(b"media-1")
    assert m.set_local_output(output(1)) == []  # once
    assert sm(None).set_local_output(output(1)) == []  # observers do not announce
    done = sm(2)
    done.on_deadline()
    assert done.set_local_output(output(2)) == []


def test_timeouts_for_other_rounds_steps_or_before_start_are_ignored() -> None:
    m = sm(1)
    assert m.on_timeout(0, Step.PROPOSE) == []  # not started
    m.start()
    assert m.on_timeout(3, Step.PROPOSE) == []  # another round
    assert m.on_timeout(0, Step.PREVOTE) == []  # still proposing: no precommit
    assert m.step == Step.PROPOSE
    assert [v.value_hash for v in broadcasts(m.on_timeout(0, Step.PROPOSE))] == [None]
    assert m.step == Step.PREVOTE
    assert m.on_timeout(0, Step.PROPOSE) == []  # no second prevote
    (precommit,) = broadcasts(m.on_timeout(0, Step.PREVOTE))
    assert isinstance(precommit, Precommit) and m.step == Step.PRECOMMIT
    actions = m.on_timeout(0, Step.PRECOMMIT)
    assert m.round == 1 and m.step == Step.PROPOSE
    (timeout,) = [a for a in actions if isinstance(a, ScheduleTimeout)]
    assert (timeout.slot, timeout.round) == (SLOT, 1)
    m.on_deadline()
    assert m.on_timeout(1, Step.PROPOSE) == []


def test_rounds_stop_at_the_maximum() -> None:
    m = sm(1)
    m.start()
    m.round = 999
    m.on_timeout(999, Step.PRECOMMIT)
    assert m.round == 1000
    assert m.on_timeout(1000, Step.PRECOMMIT) == [] and m.round == 1000


def test_embeddings_exactly_at_the_threshold_agree() -> None:
    cfg = AgreementConfig(threshold_b=1.0, threshold_l=1.0)
    m = sm(1, config=cfg)
    m.set_local_output(output(1, b=[1.0, 0.0, 0.0, 0.0], lv=[0.0, 1.0, 0.0]))
    ann, prop = _proposal_from_0(output(0, b=[1.0, 0.0, 0.0, 0.0], lv=[0.0, 1.0, 0.0]))
    m.receive(ann)
    assert m.validity(prop.value) == Validity.YES


def _announce(j: int, b=B, lv=L) -> Announce:
    return Announce(
        SLOT, RECIPE, embedding_to_bytes(b), embedding_to_bytes(lv), True, sha256(b"m%d" % j)
    ).signed_by(K[j], CHAIN)


def test_without_own_output_a_lone_candidate_is_invalid_once_everyone_has_announced() -> None:
    m = sm(1)
    other = [0.0, 0.0, 1.0, 0.0]
    lone = _announce(0)
    for j, b in [(0, B), (2, other), (3, [0.0, 0.0, 0.0, 1.0]), (4, [0.0, 1.0, 0.0, 0.0])]:
        m.receive(_announce(j, b=b))
    assert m.validity(Value(lone.content_hash)) == Validity.UNKNOWN  # 4 of 5 in: ours may still come
    m2 = sm(None)
    for j, b in [
        (0, B),
        (1, [0.5, 0.5, 0.0, 0.0]),
        (2, other),
        (3, [0.0, 0.0, 0.0, 1.0]),
        (4, [0.0, 1.0, 0.0, 0.0]),
    ]:
        m2.receive(_announce(j, b=b))
    assert m2.validity(Value(lone.content_hash)) == Validity.NO


def test_a_proposer_without_output_picks_the_best_supported_candidate_and_carries_evidence() -> None:
    a = Prevote(SLOT, 0, sha256(b"a")).signed_by(K[4], CHAIN)
    b = Prevote(SLOT, 0, None).signed_by(K[4], CHAIN)
    evidence = Evidence.of(a, b)
    y = [0.0, 0.0, 1.0, 0.0]
    m2 = sm(0, evidence_pool=[evidence])  # round 0's proposer, no output of its own
    for j, emb in [(1, y), (2, B), (3, B), (4, B)]:
        m2.receive(_announce(j, b=emb))
    (proposal,) = [x for x in broadcasts(m2.start()) if isinstance(x, Proposal)]
    assert proposal.value.candidate in {sha256(b"m2"), sha256(b"m3"), sha256(b"m4")}  # 3 supporters beat 1
    assert proposal.value.evidence == (evidence.encode(),)


def test_a_rule_that_never_settles_is_an_error_not_a_hang(monkeypatch) -> None:
    m = sm(1)
    monkeypatch.setattr(m, "_rule_decide", lambda: [])  # a (buggy) rule that claims progress forever
    with pytest.raises(RuntimeError, match="agreement rules did not settle"):
        m.start()


# -- locking and proof-of-lock rules, edge by edge --------------------------------------------------------
def _at_round(m: SlotAgreement, round_: int) -> None:
    """Walk `m` to the propose step of `round_` through timeouts."""
    m.start()
    for r in range(round_):
        m.on_timeout(r, Step.PROPOSE)
        m.on_timeout(r, Step.PREVOTE)
        m.on_timeout(r, Step.PRECOMMIT)
    assert m.round == round_ and m.step == Step.PROPOSE


def _valid_candidate(m: SlotAgreement, j: int, self_check: bool = True) -> Value:
    ann = Announce(
        SLOT, RECIPE, embedding_to_bytes(B), embedding_to_bytes(L), self_check, sha256(b"c%d" % j)
    ).signed_by(K[j], CHAIN)
    m.receive(ann)
    return Value(ann.content_hash)


def test_a_locked_director_prevotes_nil_for_a_new_value_and_yes_for_its_lock() -> None:
    m = sm(2)
    m.set_local_output(output(2))
    _at_round(m, 3)  # round 3's proposer is K[3]
    locked, other = _valid_candidate(m, 0), _valid_candidate(m, 4)
    m.locked_hash, m.locked_round = locked.hash, 1
    assert _prevote_of(m.receive(Proposal(SLOT, 3, other, -1).signed_by(K[3], CHAIN))).value_hash is None
    assert m.step == Step.PREVOTE
    m2 = sm(2)
    m2.set_local_output(output(2))
    _at_round(m2, 3)
    locked2 = _valid_candidate(m2, 0)
    m2.locked_hash, m2.locked_round = locked2.hash, 1
    assert (
        _prevote_of(m2.receive(Proposal(SLOT, 3, locked2, -1).signed_by(K[3], CHAIN))).value_hash
        == locked2.hash
    )


@pytest.mark.parametrize(
    ("locked_round", "locked_on_v", "expect_v"),
    [(-1, False, True), (0, False, True), (1, False, False), (1, True, True)],
    ids=["unlocked", "lock-at-pol-round", "lock-after-pol-round", "locked-on-v"],
)
def test_proof_of_lock_proposal(locked_round: int, locked_on_v: bool, expect_v: bool) -> None:
    m = sm(2)
    m.set_local_output(output(2))
    _at_round(m, 3)
    v = _valid_candidate(m, 0)
    if locked_round >= 0:
        m.locked_hash, m.locked_round = (v.hash if locked_on_v else sha256(b"other")), locked_round
    for vote in _votes(Prevote, 0, v.hash, [0, 1, 3, 4]):
        m.receive(vote)
    vote = _prevote_of(m.receive(Proposal(SLOT, 3, v, 0).signed_by(K[3], CHAIN)))  # pol_round 0
    assert vote.value_hash == (v.hash if expect_v else None)
    assert m.step == Step.PREVOTE


def test_proof_of_lock_needs_the_quorum_which_vouches_for_the_value() -> None:
    m = sm(2)
    m.set_local_output(output(2))
    _at_round(m, 3)
    v = _valid_candidate(m, 0)
    prop = Proposal(SLOT, 3, v, 1).signed_by(K[3], CHAIN)
    assert broadcasts(m.receive(prop)) == []  # no prevotes known for round 1 at all: wait
    for vote in _votes(Prevote, 1, v.hash, [0, 1, 3]):
        m.receive(vote)
    assert m.step == Step.PROPOSE  # 3 of 5 is not a proof of lock
    m.receive(Prevote(SLOT, 1, v.hash).signed_by(K[4], CHAIN))
    assert m.step == Step.PREVOTE
    bad = sm(2)
    bad.set_local_output(output(2))
    _at_round(bad, 3)
    locally_invalid = _valid_candidate(bad, 0, self_check=False)
    assert bad.validity(locally_invalid) == Validity.NO
    for vote in _votes(Prevote, 1, locally_invalid.hash, [0, 1, 3, 4]):
        bad.receive(vote)
    # a quorum prevoted it: f+1 correct directors found it valid, so every correct director judges alike
    assert bad.validity(locally_invalid) == Validity.YES
    prevote = _prevote_of(bad.receive(Proposal(SLOT, 3, locally_invalid, 1).signed_by(K[3], CHAIN)))
    assert prevote.value_hash == locally_invalid.hash


def test_each_round_schedules_its_own_prevote_timeout() -> None:
    cfg = AgreementConfig(timeout_prevote=1.0, timeout_delta=0.5)
    m = sm(1, config=cfg)
    m.start()
    seen = []
    for r in range(3):
        m.on_timeout(r, Step.PROPOSE)
        for j in (0, 2, 3):
            for a in m.receive(Prevote(SLOT, r, None).signed_by(K[j], CHAIN)):
                if isinstance(a, ScheduleTimeout) and a.step == Step.PREVOTE:
                    seen.append((a.slot, a.round, a.delay))
        m.on_timeout(r, Step.PREVOTE)
        m.on_timeout(r, Step.PRECOMMIT)
    assert seen == [(SLOT, 0, 1.0), (SLOT, 1, 1.5), (SLOT, 2, 2.0)]


def test_each_round_can_lock_again() -> None:
    m = sm(2)
    m.set_local_output(output(2))
    m.start()
    v = _valid_candidate(m, 0)
    m.receive(Proposal(SLOT, 0, v, -1).signed_by(K[0], CHAIN))
    for vote in _votes(Prevote, 0, v.hash, [0, 1, 3]):
        m.receive(vote)
    assert m.locked_round == 0
    m.on_timeout(0, Step.PRECOMMIT)  # round 1: K[1] re-proposes v with its proof of lock
    m.receive(Proposal(SLOT, 1, v, 0).signed_by(K[1], CHAIN))
    for vote in _votes(Prevote, 1, v.hash, [0, 1, 3]):
        m.receive(vote)
    assert (m.locked_hash, m.locked_round) == (v.hash, 1) and m.valid_round == 1


def test_observers_never_lock() -> None:
    m = sm(None)
    m.start()
    v = Value(sha256(b"v"))
    m.receive(Proposal(SLOT, 0, v, -1).signed_by(K[0], CHAIN))
    for vote in _votes(Prevote, 0, v.hash, [0, 1, 2, 3]):
        m.receive(vote)
    assert m.locked_round == -1 and m.valid_value is None


def test_a_proposer_proposes_once_a_candidate_arrives() -> None:
    m = sm(0)  # round 0's proposer, no output of its own and no announcement yet
    assert broadcasts(m.start()) == []
    assert broadcasts(m.receive(_announce(3))) == []  # one director's word is not enough (f + 1 = 2)
    actions = m.receive(_announce(4))
    assert [type(x) for x in broadcasts(actions)] == [Proposal, Prevote]  # proposes, then prevotes it


def test_proposals_are_journaled_and_never_changed_after_a_restart() -> None:
    journal = MemoryJournal()
    m = sm(0, journal=journal)
    m.set_local_output(output(0))
    (proposal,) = [x for x in broadcasts(m.start()) if isinstance(x, Proposal)]
    assert journal.recorded(SLOT, 0, "proposal") == proposal.value.hash
    other = MemoryJournal()
    other.record(SLOT, 0, "proposal", sha256(b"something else"))
    restarted = sm(0, journal=other)
    restarted.set_local_output(output(0))
    assert [x for x in broadcasts(restarted.start()) if isinstance(x, Proposal)] == []


def test_messages_for_another_slot_are_ignored_and_evidence_is_kept() -> None:
    m = sm(1)
    assert m.receive(Prevote(SLOT + 1, 0, None).signed_by(K[0], CHAIN)) == []
    assert m.prevotes == {}
    m.receive(Prevote(SLOT, 0, None).signed_by(K[0], CHAIN))
    (found,) = m.receive(Prevote(SLOT, 0, sha256(b"x")).signed_by(K[0], CHAIN))
    assert m.evidence == [found.evidence]


def test_each_round_schedules_its_own_precommit_timeout() -> None:
    cfg = AgreementConfig(timeout_precommit=1.0, timeout_delta=0.5)
    m = sm(1, config=cfg)
    m.start()
    seen = []
    for r in range(3):
        m.on_timeout(r, Step.PROPOSE)
        m.on_timeout(r, Step.PREVOTE)  # our own nil precommit
        for j, value in ((0, sha256(b"v")), (2, None), (3, None)):  # with ours, a quorum, not all nil
            for a in m.receive(Precommit(SLOT, r, value).signed_by(K[j], CHAIN)):
                if isinstance(a, ScheduleTimeout) and a.step == Step.PRECOMMIT:
                    seen.append((a.slot, a.round, a.delay))
        m.on_timeout(r, Step.PRECOMMIT)
    assert seen == [(SLOT, 0, 1.0), (SLOT, 1, 1.5), (SLOT, 2, 2.0)]


def test_only_a_non_nil_precommit_restores_a_lock() -> None:
    journal = MemoryJournal()
    journal.record(SLOT, 3, "prevote", sha256(b"prevoted"))
    journal.record(SLOT, 2, "precommit", None)
    journal.record(SLOT, 1, "precommit", sha256(b"locked"))
    m = sm(1, journal=journal)
    assert (m.locked_hash, m.locked_round) == (sha256(b"locked"), 1)


def test_a_signer_outside_the_directors_never_votes() -> None:
    outsider = keys(1, "outsider")[0]
    m = SlotAgreement(SLOT, D, CHAIN, RECIPE, signer=outsider)
    assert m.me is None
    assert broadcasts(m.set_local_output(output(1))) == []
    m.start()
    assert broadcasts(m.on_timeout(0, Step.PROPOSE)) == []
