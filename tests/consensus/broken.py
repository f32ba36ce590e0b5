"""Deliberately broken variants of `SlotAgreement`, for checking that the Twins harness sees bugs.

Each breaks one rule safety rests on. A harness that passes them is blind to that
kind of bug, so `test_twins.py` requires a violation from each within a bounded
number of seeds.
"""

from __future__ import annotations

from consensus.actions import Action, Step
from consensus.agreement import SlotAgreement
from consensus.messages import Precommit


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

    def _rule_polka(self) -> list[Action] | None:
        key = ("polka", self.round)
        if not self.started or self.me is None or key in self._fired or self.step == Step.PROPOSE:
            return None
        votes = self.prevotes.get(self.round, {})
        ready = [p for p in self.proposals.get(self.round, []) if self._count(votes, p.value.hash) >= self.q]
        if not ready:
            return None
        p = ready[0]
        self._fired.add(key)
        actions: list[Action] = []
        if self.step == Step.PREVOTE:
            self.locked_hash, self.locked_round = p.value.hash, self.round  # no comparison with the old lock
            self.step = Step.PRECOMMIT
            actions = self._vote(Precommit, self.round, p.value.hash)
        self.valid_value, self.valid_round = p.value, self.round
        return actions
