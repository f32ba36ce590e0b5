"""What the state machines ask their driver to do. Frozen data; the driver performs them in order."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.messages import Signed


class Step(StrEnum):
    PROPOSE = "propose"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"


@dataclass(frozen=True)
class Broadcast:
    """Send `message` to the slot's directors (and observers)."""

    message: Signed


@dataclass(frozen=True)
class ScheduleTimeout:
    """Call `on_timeout(round, step)` after `delay` seconds (of the driver's clock)."""

    slot: int
    round: int
    step: Step
    delay: float


@dataclass(frozen=True)
class Decided:
    certificate: Certificate


@dataclass(frozen=True)
class SlotFailed:
    slot: int
    reason: str


@dataclass(frozen=True)
class EvidenceFound:
    evidence: Evidence


Action = Broadcast | ScheduleTimeout | Decided | SlotFailed | EvidenceFound
