"""Fuzzing every door in CI, briefly: `ICN_FUZZ_EXAMPLES` examples per target (default 150).

The targets and generators are in `tests/fuzz_targets.py`; `bench/fuzz.py` runs them
long. A finding prints the input hypothesis shrank it to; it reproduces with the
`@reproduce_failure` line hypothesis prints beside it.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz_targets import TARGETS, Target

EXAMPLES = int(os.environ.get("ICN_FUZZ_EXAMPLES", "150"))


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_door_is_bounded_and_total(target: Target) -> None:
    ran = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def door(value) -> None:
        ran.append(1)
        if target.needs_dir:
            with tempfile.TemporaryDirectory() as folder:
                target.run(value, folder)
        else:
            target.run(value)

    door()
    assert len(ran) >= min(EXAMPLES, 50)
