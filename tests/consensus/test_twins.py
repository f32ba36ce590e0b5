"""The Twins harness in CI: a few thousand seeded executions, and proof that it can see bugs.

`ICN_TWINS_EXECUTIONS` sets the sweep's size (default 2000); `bench/twins.py`
runs 100,000 in parallel. A failing seed reproduces alone:
`python -c "from tests.consensus.twins import *; print(run(TwinsScenario.from_seed(SEED)))"`.
"""

from __future__ import annotations

import os

import pytest

from consensus.agreement import SlotAgreement
from tests.consensus import broken
from tests.consensus.test_restarts_and_evidence import lowered_lock_after_restart
from tests.consensus.twins import TwinsScenario, run

EXECUTIONS = int(os.environ.get("ICN_TWINS_EXECUTIONS", "2000"))


def _first_unsafe_seed(factory, seeds: int, quorum_size: int | None = None) -> int | None:
    for seed in range(seeds):
        if any(
            v.startswith("safety")
            for v in run(TwinsScenario.from_seed(seed), factory, quorum_size).violations
        ):
            return seed
    return None


def test_no_violation_over_seeded_twins_executions() -> None:
    seen = {"restarts": 0, "starved": 0, "twins_disagree": 0, "decided": 0}
    for seed in range(EXECUTIONS):
        out = run(TwinsScenario.from_seed(seed))
        assert not out.violations, f"seed {seed}: {out.violations} ({out.scenario})"
        seen["restarts"] += out.restarts
        seen["starved"] += out.scenario.starve_decisions
        seen["twins_disagree"] += not out.scenario.twin_outputs_agree
        seen["decided"] += len(out.decisions) == 4
    # the sweep covered what it claims to: restarts, starved rounds, twins with other outputs
    assert seen["restarts"] > EXECUTIONS // 2 and seen["starved"] > EXECUTIONS // 4
    assert seen["twins_disagree"] > EXECUTIONS // 10 and seen["decided"] == EXECUTIONS


def test_the_harness_finds_the_double_certificate_a_quorum_of_three_allows() -> None:
    assert _first_unsafe_seed(SlotAgreement, 1000, quorum_size=3) is not None, "a quorum of 3 went unnoticed"


def test_the_harness_finds_an_ignored_lock() -> None:
    assert _first_unsafe_seed(broken.LockIgnored, 2000) is not None, "an ignored lock went unnoticed"


def test_the_harness_finds_a_round_lowered_on_restart() -> None:
    """The harness checks Tendermint's invariants across crashes (a restarted director never returns
    below a round it signed in, and its lock never goes back), so a restart that starts again at round 0
    is seen long before it grows into two certificates (a path the random search rarely completes)."""
    found = next(
        (
            seed
            for seed in range(200)
            if any(
                "went back" in v
                for v in run(TwinsScenario.from_seed(seed), broken.LockLoweredOnRestart).violations
            )
        ),
        None,
    )
    assert found is not None, "a restart that lowers the round went unnoticed"


@pytest.mark.parametrize(
    ("factory", "lowered"), [(SlotAgreement, False), (broken.LockLoweredOnRestart, True)]
)
def test_the_restart_sequence_that_lowered_a_lock_tells_the_variants_apart(factory, lowered: bool) -> None:
    """The sequence from issue 23 (1), replayed directly against each variant: only the broken one
    lowers its lock (the regression test of the defect itself)."""
    assert lowered_lock_after_restart(factory) is lowered
