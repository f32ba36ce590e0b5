"""Deliberately broken variants of `SlotAgreement`, for checking that the Twins harness sees bugs.

Each breaks one rule safety rests on. A harness that passes them is blind to that
kind of bug, so `test_twins.py` requires a violation from each within a bounded
number of seeds.
"""

from __future__ import annotations

from consensus.actions import Action
from consensus.agreement import SlotAgreement


class LockIgnored(SlotAgreement):
    """Locks and at once forgets the lock: prevotes follow validity alone."""

    def _rule_polka(self) -> list[Action] | None:
        actions = super()._rule_polka()
        self.locked_round, self.locked_hash = -1, None
        return actions


class LockLoweredOnRestart(SlotAgreement):
    """The defect of issue 23 (1): a restart starts again at round 0, and a polka re-locks at any round."""

    def start(self) -> list[Action]:
        self._resume_round = 0
        return super().start()

    def _may_lock(self) -> bool:
        return True  # no comparison with the old lock
