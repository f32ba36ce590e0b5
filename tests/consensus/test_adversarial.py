"""Thousands of seeded adversarial executions of one slot's agreement among 5 directors.

Each seed fixes everything (see harness.py). To reproduce a failure:
`python -c "from tests.consensus.harness import Scenario, run; print(run(Scenario.from_seed(SEED)))"`.
ICN_CONSENSUS_EXECUTIONS sets how many seeds the main sweep runs (default 2000).
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from tests.consensus.harness import BEHAVIOURS, Outcome, Scenario, honest, judge, run

EXECUTIONS = int(os.environ.get("ICN_CONSENSUS_EXECUTIONS", "2000"))
SEEDS = range(0, EXECUTIONS)


def test_safety_liveness_and_evidence_over_seeded_executions() -> None:
    """Seeds 0..EXECUTIONS-1: any mix of one faulty director, delays, drops, duplicates, reorderings."""
    counts = {"executions": 0, "timely": 0, "decided": 0}
    behaviours_seen = set()
    for seed in SEEDS:
        sc = Scenario.from_seed(seed)
        out = run(sc)
        counts["executions"] += 1
        counts["timely"] += sc.timely
        counts["decided"] += bool(out.decisions)
        behaviours_seen.add(sc.byzantine)
        violated = {kind: found for kind, found in judge(out).items() if found}
        assert not violated, f"seed {seed}: {violated} ({sc})"
    assert behaviours_seen == {None, *BEHAVIOURS}
    assert counts["timely"] > EXECUTIONS // 3
    print(f"\nadversarial sweep: seeds 0..{EXECUTIONS - 1}: {counts}")


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_each_fault_as_proposer_of_round_zero(behaviour: str) -> None:
    """The faulty director leads round 0: the slot still commits, on a correct director's output."""
    for seed in range(40):
        sc = dataclasses.replace(
            Scenario.from_seed(seed, timely=True), byzantine=behaviour, byzantine_index=0
        )
        out = run(sc)
        assert len(out.decisions) == 4, f"seed {seed} ({behaviour}): {out.decisions}"
        assert len(set(out.decisions.values())) == 1


def test_equivocation_is_caught_when_both_twins_arrive() -> None:
    caught = 0
    for seed in range(60):
        sc = dataclasses.replace(Scenario.from_seed(seed, timely=True), byzantine="equivocate")
        out = run(sc)
        caught += sum(bool(out.evidence[i]) for i in honest(sc))
    assert caught > 0


def test_the_scheduler_finds_the_double_commit_that_a_three_of_five_quorum_allows() -> None:
    """Why the quorum is 4 of 5: with 3, an equivocating proposer gets two values certified.

    This checks the checker: the same sweep that passes with quorum 4 must fail with 3.
    """
    for seed in range(300):
        base = Scenario.from_seed(seed, quorum_size=3)
        sc = dataclasses.replace(base, byzantine="equivocate", byzantine_index=0, outputs_differ=True)
        if "two certifiable values" in judge(run(sc))["safety"]:
            return  # found one (seed 215 at the time of writing)
    pytest.fail("expected the 3-of-5 quorum to be broken by some seed in 0..299")


def test_judge_reports_each_kind_of_violation() -> None:
    """The sweep's rules can fail: a late or missing decision, a missed equivocation, two decisions."""
    sc = dataclasses.replace(Scenario.from_seed(0, timely=True), byzantine=None)
    out = Outcome(sc, decisions=dict.fromkeys(range(5), b"v"), decision_times=dict.fromkeys(range(5), 1.0))
    out.evidence = {i: set() for i in range(5)}
    out.equivocations_seen = {i: set() for i in range(5)}
    assert judge(out) == {"safety": [], "liveness": [], "evidence": []}
    out.decision_times[2] = 13.5
    out.equivocations_seen[3] = {("prevote", 1)}
    out.decisions[4] = b"w"
    del out.decisions[1]
    found = judge(out)
    assert found["safety"] == ["two decisions"]
    assert found["liveness"] == ["[1] did not decide"]
    assert found["evidence"] == ["node 3 missed evidence"]
    out.decisions[1] = out.decisions[4] = b"v"
    assert judge(out)["liveness"] == ["decided at 13.50 s, after the deadline"]
