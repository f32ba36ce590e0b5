"""Regression tests for the defects a Twins-style adversary found (issue 23), one per defect.

Each drives `SlotAgreement` or `Ledger` directly with the smallest sequence that
showed the defect; each fails on the code before the fix.
"""

from __future__ import annotations

from consensus.actions import Broadcast, Decided, Step
from consensus.agreement import AgreementConfig, LocalOutput, SlotAgreement, Validity
from consensus.certificate import Certificate
from consensus.checks import MessageChecker
from consensus.evidence import MAX_EVIDENCE_AGE, Evidence
from consensus.journal import MemoryJournal
from consensus.ledger import Ledger
from consensus.messages import (
    MAX_EMBEDDING_DIM,
    MAX_MESSAGE_BYTES,
    MAX_RECIPE_BYTES,
    Announce,
    Precommit,
    Prevote,
    Proposal,
    Value,
    embedding_to_bytes,
    sha256,
)
from tests.consensus.conftest import keys
from tests.consensus.test_ledger import BY_KEY, certify, genesis

CHAIN = b"chain"
SLOT = 4
RECIPE = sha256(b"recipe")
K = keys(5, "r")
D = [k.public_key for k in K]
B, L = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0]


def machine(i: int, journal: MemoryJournal | None = None, **kw) -> SlotAgreement:
    return SlotAgreement(SLOT, D, CHAIN, RECIPE, signer=K[i], journal=journal, **kw)


def out(i: int, b=B) -> LocalOutput:
    return LocalOutput(RECIPE, embedding_to_bytes(b), embedding_to_bytes(L), True, sha256(b"media-%d" % i))


def announce(i: int, b=B, content: bytes | None = None) -> Announce:
    o = out(i, b)
    return Announce(SLOT, RECIPE, o.embedding_b, o.embedding_l, True, content or o.content_hash).signed_by(
        K[i], CHAIN
    )


def votes(kind, round_, value_hash, signers):
    return [kind(SLOT, round_, value_hash).signed_by(K[j], CHAIN) for j in signers]


def sent(actions, kind=None) -> list:
    return [
        a.message
        for a in actions
        if isinstance(a, Broadcast) and (kind is None or isinstance(a.message, kind))
    ]


def lowered_lock_after_restart(factory=SlotAgreement) -> bool:
    """Locked on X in round 2, restarted: do round-1 messages for Y, replayed, lower the lock to Y@1?"""
    y = Value(sha256(b"media-3"))
    journal = MemoryJournal()
    first = factory(SLOT, D, CHAIN, RECIPE, signer=K[2], journal=journal)
    first.set_local_output(out(2))
    first.receive(announce(0))
    first.start()
    for r in (0, 1):  # two rounds without a decision
        first.on_timeout(r, Step.PROPOSE), first.on_timeout(r, Step.PREVOTE)
        for v in votes(Precommit, r, None, [0, 1, 3]):  # a quorum of precommits: the round may end
            first.receive(v)
        first.on_timeout(r, Step.PRECOMMIT)
    # round 2's proposer is D2 itself: it proposes X (its own output) and locks on X's polka
    assert first.round == 2
    x = first.proposals[2][0].value
    for v in votes(Prevote, 2, x.hash, [0, 1, 3]):
        first.receive(v)
    assert (first.locked_hash, first.locked_round) == (x.hash, 2)
    # crash; the restarted machine is fed the old round-1 traffic for Y, in the order an adversary likes
    second = factory(SLOT, D, CHAIN, RECIPE, signer=K[2], journal=journal)
    second.set_local_output(out(2))
    actions = second.start()
    replay = [
        announce(3),
        Proposal(SLOT, 1, y, -1).signed_by(K[1], CHAIN),
        *votes(Prevote, 1, y.hash, [0, 1, 3, 4]),
    ]
    for msg in replay:
        actions += second.receive(msg)
    precommitted_y = any(p.value_hash == y.hash for p in sent(actions, Precommit))
    return (second.locked_hash, second.locked_round) != (x.hash, 2) or second.round < 2 or precommitted_y


def test_1_a_restarted_director_never_lowers_its_lock_when_old_rounds_are_replayed() -> None:
    assert not lowered_lock_after_restart()


def test_2_a_restarted_proposer_resends_its_proposal_byte_for_byte_and_keeps_its_valid_value() -> None:
    journal = MemoryJournal()
    first = machine(1, journal)
    first.set_local_output(out(1))
    first.receive(announce(0))
    first.start()
    v0 = Value(sha256(b"media-0"))
    first.receive(Proposal(SLOT, 0, v0, -1).signed_by(K[0], CHAIN))
    for v in votes(Prevote, 0, v0.hash, [0, 2, 3]):
        first.receive(v)
    assert first.valid_value == v0 and first.valid_round == 0
    for v in votes(Precommit, 0, None, [0, 2, 3]):  # no decision in round 0: round 1 is D1's
        first.receive(v)
    (proposal,) = sent(first.on_timeout(0, Step.PRECOMMIT), Proposal)  # and it proposes (v0, pol 0)
    assert proposal.pol_round == 0 and proposal.value == v0
    second = machine(1, journal)
    second.set_local_output(out(1))
    actions = second.start() + second.on_timeout(0, Step.PRECOMMIT)
    again = [p for p in sent(actions, Proposal) if p.round == 1]
    assert again and all(p.encode() == proposal.encode() for p in again)
    assert second.valid_value == v0 and second.valid_round == 0  # a restored lock comes with its value
    assert (second.locked_hash, second.locked_round) == (v0.hash, 0)


def test_3_evidence_naming_a_future_slot_in_a_certificate_cannot_make_elections_recurse() -> None:
    ledger = Ledger(genesis())
    future = 9
    culprit = ledger.directors(future)[0]
    key = BY_KEY[culprit]
    ev = Evidence.of(
        Prevote(future, 0, sha256(b"a")).signed_by(key, ledger.chain_id),
        Prevote(future, 0, None).signed_by(key, ledger.chain_id),
    )
    ledger.apply(certify(ledger, 2, Value(sha256(b"m2"), None, (ev.encode(),))))
    for slot in range(3, 20):  # before the fix: RecursionError from directors -> barred -> directors
        assert len(ledger.directors(slot)) == 5
    assert culprit not in ledger.barred(19)  # evidence from a later slot than its certificate never counts


def test_3_a_director_refuses_a_value_carrying_evidence_for_another_or_future_slot() -> None:
    m = machine(1)
    m.set_local_output(out(1))
    m.receive(announce(0))
    for slot in (SLOT + 2, SLOT - MAX_EVIDENCE_AGE - 1):
        ev = Evidence.of(
            Prevote(slot, 0, sha256(b"a")).signed_by(K[0], CHAIN),
            Prevote(slot, 0, None).signed_by(K[0], CHAIN),
        )
        assert ev.check(CHAIN) is None
        assert m.validity(Value(sha256(b"media-0"), None, (ev.encode(),))) == Validity.NO
    ok = Evidence.of(
        Prevote(SLOT, 0, sha256(b"a")).signed_by(K[0], CHAIN), Prevote(SLOT, 0, None).signed_by(K[0], CHAIN)
    )
    assert m.validity(Value(sha256(b"media-0"), None, (ok.encode(),))) == Validity.YES


def test_4_evidence_of_huge_equivocations_never_makes_a_proposal_too_large_or_raise() -> None:
    wide = embedding_to_bytes([0.25] * MAX_EMBEDDING_DIM)
    pool = []
    for r in range(6):  # proposal equivocations at the size limit, with a full recipe each
        a, b = (
            Proposal(SLOT, r * 5, Value(sha256(c), bytes([c[0]]) * MAX_RECIPE_BYTES), -1).signed_by(
                K[0], CHAIN
            )
            for c in (b"a", b"b")
        )
        pool.append(Evidence.of(a, b))
    for c in range(3):  # announce equivocations with the widest embeddings
        pool.append(Evidence.of(
            Announce(SLOT, RECIPE, wide, wide, True, sha256(b"x%d" % c)).signed_by(K[c + 2], CHAIN),
            Announce(SLOT, RECIPE, wide, embedding_to_bytes([0.5] * MAX_EMBEDDING_DIM), True, sha256(b"x%d" % c)).signed_by(K[c + 2], CHAIN),
        ))  # fmt: skip
    recipe = b"{" + b" " * (MAX_RECIPE_BYTES - 2) + b"}"
    proposer = machine(0, evidence_pool=pool, next_recipe=recipe, recipe_ok=lambda data: True)
    proposer.set_local_output(out(0))
    (proposal,) = sent(proposer.start(), Proposal)
    assert len(proposal.value.evidence) == 8 and len(proposal.encode()) <= MAX_MESSAGE_BYTES
    checker = MessageChecker(CHAIN, lambda s: D)
    assert checker.check(proposal.encode(), SLOT) is not None


def test_4_an_oversize_next_recipe_is_refused_when_the_machine_is_made_not_when_it_proposes() -> None:
    try:
        machine(0, next_recipe=b"x" * (MAX_RECIPE_BYTES + 1))
    except ValueError as exc:
        assert "next_recipe" in str(exc)
    else:
        raise AssertionError("an oversize next_recipe was accepted")


def test_5_a_director_whose_output_disagrees_follows_the_quorum_instead_of_stalling_the_slot() -> None:
    """D0 (Byzantine) proposes its own output, prevotes, and goes silent. D1-D3 find it valid, D4 does not
    (cosine 0.894 < 0.9). Before the fix D4 never precommitted and the slot failed in every round."""
    agree, disagree = [1.0, 0.3, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0]
    honest = {i: machine(i) for i in (1, 2, 3, 4)}
    byz = machine(0)
    queue: list = []
    for i, m in honest.items():
        queue += sent(m.set_local_output(out(i, agree if i < 4 else disagree)))
    queue += sent(byz.set_local_output(out(0)))
    silent_after_prevote = sent(byz.start())
    queue += silent_after_prevote
    for m in honest.values():
        queue += sent(m.start())
    decided: dict[int, bytes] = {}
    while queue:
        msg = queue.pop(0)
        queue += [
            m for m in sent(byz.receive(msg)) if isinstance(m, Prevote) and m.round == 0
        ]  # the Byzantine director's round-0 prevote, then nothing
        for i, m in honest.items():
            if msg.signer == D[i]:
                continue
            actions = m.receive(msg)
            queue += sent(actions)
            for a in actions:
                if isinstance(a, Decided):
                    decided[i] = a.certificate.value.hash
    assert set(decided) == {1, 2, 3, 4} and len(set(decided.values())) == 1
    assert all(m.round == 0 for m in honest.values())


def test_5_validity_does_not_depend_on_which_of_two_twin_announcements_arrived_first() -> None:
    agree = announce(0)
    twin = announce(0, b=[0.0, 0.0, 1.0, 0.0], content=agree.content_hash)  # same content, other embeddings
    value = Value(agree.content_hash)
    judged = []
    for order in ((agree, twin), (twin, agree)):
        m = machine(1, config=AgreementConfig())
        m.set_local_output(out(1))
        for a in order:
            m.receive(a)
        judged.append(m.validity(value))
    assert judged[0] == judged[1] == Validity.NO  # a director that announced twice vouches for nothing


def test_certificate_from_the_resumed_rounds_verifies() -> None:
    """After restarts, the decision still carries a quorum of valid precommits."""
    journal = {i: MemoryJournal() for i in range(5)}
    machines = {i: machine(i, journal[i]) for i in range(5)}
    queue = [msg for i, m in machines.items() for msg in sent(m.set_local_output(out(i)) + m.start())]
    machines[2] = machine(2, journal[2])  # a restart before anything arrived
    machines[2].set_local_output(out(2))
    queue += sent(machines[2].start())
    certs: list[Certificate] = []
    while queue:
        msg = queue.pop(0)
        for i, m in machines.items():
            if msg.signer != D[i]:
                actions = m.receive(msg)
                queue += sent(actions)
                certs += [a.certificate for a in actions if isinstance(a, Decided)]
    assert len(certs) == 5 and all(c.verify(D, CHAIN) is None for c in certs)
