"""The small interfaces the node's components talk through.

Each is what one component needs from another, and nothing more, so a test can
hand a component fakes (an in-memory network, a list that collects
certificates) and a simnet adversary can wrap the honest implementation
instead of overriding the node's methods.
"""

from __future__ import annotations

import logging
from typing import Protocol

from consensus.agreement import LocalOutput
from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.messages import Signed
from network.topics import Topic

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Gossip as the node's components see it: publish, or raise ValueError when the checks refuse."""

    async def publish(self, topic: Topic, data: bytes) -> None: ...


async def publish_own(gossip: Publisher, topic: Topic, data: bytes) -> None:
    """Publish a message this node made. Our own message failing our own checks is a bug worth a
    loud log, not a reason to stop the task that made it."""
    try:
        await gossip.publish(topic, data)
    except ValueError as exc:
        log.error("not published on %s: %s", topic.value, exc)


class Broadcaster(Protocol):
    """Sends this node's own consensus messages to the slot's directors and observers."""

    async def broadcast(self, msg: Signed) -> None: ...


class CertificateSink(Protocol):
    """Applies, stores and spreads a certificate; False when it does not fit the ledger (yet)."""

    async def commit(self, cert: Certificate, source: str) -> bool: ...


class EvidenceSink(Protocol):
    """Keeps evidence for proposals to carry; `publish` gossips it on."""

    async def take_evidence(self, ev: Evidence, *, publish: bool) -> None: ...


class Behaviour(Protocol):
    """What a node says about itself: the two seams an adversary in the simnet wraps.

    The production node is `Honest`; `simnet.byzantine` supplies the lying ones.
    """

    def broadcaster(self, honest: Broadcaster) -> Broadcaster: ...

    def announced(self, output: LocalOutput) -> LocalOutput: ...


class Honest:
    """Sends what the state machine asks, announces what the engine made."""

    def broadcaster(self, honest: Broadcaster) -> Broadcaster:
        return honest

    def announced(self, output: LocalOutput) -> LocalOutput:
        return output
