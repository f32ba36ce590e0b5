"""What this node holds against each peer outside gossip: bad media, broken protocol.

Gossipsub scores invalid gossip itself (P4); this adds the application's own
penalties as its P6 term, so a peer that serves garbage media loses its mesh
place through the same graylist. Penalties halve every `half_life_sec`, so a
peer that stops misbehaving is forgiven.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from libp2p.peer.id import ID

# One protocol violation pushes a peer below the default graylist (-20).
VIOLATION_PENALTY = 25.0


class PeerReputation:
    def __init__(self, half_life_sec: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.half_life_sec = half_life_sec
        self._clock = clock
        self._penalty: dict[ID, tuple[float, float]] = {}  # peer -> (penalty, as of time)
        self.reasons: Counter[str] = Counter()

    def penalize(self, peer: ID, reason: str, amount: float = VIOLATION_PENALTY) -> None:
        self._penalty[peer] = (self.penalty(peer) + amount, self._clock())
        self.reasons[reason] += 1

    def penalty(self, peer: ID) -> float:
        value, since = self._penalty.get(peer, (0.0, 0.0))
        if not value:
            return 0.0
        return value * 0.5 ** ((self._clock() - since) / self.half_life_sec)

    def score(self, peer: ID) -> float:
        """Gossipsub's application-specific score: 0 for a clean peer, negative after violations."""
        return -self.penalty(peer)
