"""Deterministic director election.

Weighted sampling without replacement by Efraimidis-Spirakis keys: each
validator draws u in (0, 1) from SHA-256(beacon, slot, public key) and gets key
log(u) / w with w = sqrt(reputation + 1); the largest keys win. The result does
not depend on the order validators are listed in, and every node with the same
beacon computes the same directors. A region holds at most `max_per_region`
seats; validators in cooldown are passed over first, and taken only if the
slot cannot otherwise be filled.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence

from consensus.membership import Validator
from consensus.messages import sha256


def election_key(beacon: bytes, slot: int, validator: Validator, reputation: float) -> float:
    digest = sha256(beacon + slot.to_bytes(8, "big", signed=False) + validator.public_key)
    u = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 1)  # strictly inside (0, 1)
    return math.log(u) / math.sqrt(reputation + 1.0)


def elect_directors(
    validators: Sequence[Validator],
    beacon: bytes,
    slot: int,
    *,
    count: int = 5,
    max_per_region: int = 2,
    reputations: dict[bytes, float] | None = None,
    excluded: Collection[bytes] = (),
    cooling: Collection[bytes] = (),
) -> tuple[bytes, ...]:
    """Public keys of the slot's directors, in election order (which is also proposer order)."""
    reps = reputations or {}
    ranked = sorted(
        (v for v in validators if v.public_key not in excluded),
        key=lambda v: (-election_key(beacon, slot, v, reps.get(v.public_key, v.reputation)), v.public_key),
    )
    chosen: list[bytes] = []
    per_region: Counter[str] = Counter()
    for allow_cooling in (False, True):
        for v in ranked:
            if len(chosen) == count:
                return tuple(chosen)
            if v.public_key in chosen or per_region[v.region] >= max_per_region:
                continue
            if v.public_key in cooling and not allow_cooling:
                continue
            chosen.append(v.public_key)
            per_region[v.region] += 1
    return tuple(chosen)
