"""Thousands of seeded adversarial executions of one slot's agreement among 5 directors.

Each seed fixes everything (see harness.py). To reproduce a failure:
`python -c "from tests.consensus.harness import Scenario, run; print(run(Scenario.from_seed(SEED)))"`.
ICN_CONSENSUS_EXECUTIONS sets how many seeds the main sweep runs (default 2000).
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from tests.consensus.harness import BEHAVIOURS, Scenario, run

EXECUTIONS = int(os.environ.get("ICN_CONSENSUS_EXECUTIONS", "2000"))
SEEDS = range(0, EXECUTIONS)


def _honest(sc: Scenario) -> list[int]:
    return [i for i in range(5) if not (sc.byzantine and i == sc.byzantine_index)]


def test_safety_liveness_and_evidence_over_seeded_executions() -> None:
    """Seeds 0..EXECUTIONS-1: any mix of one faulty director, delays, drops, duplicates, reorderings."""
    counts = {"executions": 0, "timely": 0, "decided": 0}
    behaviours_seen = set()
    for seed in SEEDS:
        sc = Scenario.from_seed(seed)
        out = run(sc)
        counts["executions"] += 1
        behaviours_seen.add(sc.byzantine)
        honest = _honest(sc)
        # safety: at most one value decided, and at most one value any node could certify
        assert len(set(out.decisions.values())) <= 1, f"seed {seed}: two decisions"
        assert len(out.certifiable_values(4)) <= 1, f"seed {seed}: two certifiable values"
        # liveness: timely network and at least 4 correct directors -> every correct director decides in time
        if sc.timely:
            counts["timely"] += 1
            missing = [i for i in honest if i not in out.decisions]
            assert not missing, f"seed {seed}: {missing} did not decide ({sc})"
            assert max(out.decision_times.values()) < 13.0
        # every equivocation a correct director received becomes evidence there
        for i in honest:
            assert out.equivocations_seen[i] <= out.evidence[i], f"seed {seed}: node {i} missed evidence"
        counts["decided"] += bool(out.decisions)
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
        caught += sum(bool(out.evidence[i]) for i in _honest(sc))
    assert caught > 0


def test_the_scheduler_finds_the_double_commit_that_a_three_of_five_quorum_allows() -> None:
    """Why the quorum is 4 of 5: with 3, an equivocating proposer gets two values certified.

    This checks the checker: the same sweep that passes with quorum 4 must fail with 3.
    """
    for seed in range(300):
        base = Scenario.from_seed(seed, quorum_size=3)
        sc = dataclasses.replace(base, byzantine="equivocate", byzantine_index=0, outputs_differ=True)
        if len(run(sc).certifiable_values(3)) > 1:
            return  # found one (seed 215 at the time of writing)
    pytest.fail("expected the 3-of-5 quorum to be broken by some seed in 0..299")
