"""Who may direct slots, and how slots are numbered.

Everything in consensus derives from the genesis: the validator set, the slot
clock (slot n starts at genesis_time + n * slot_sec) and the chain id that
every signature commits to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from consensus.crypto import PUBLIC_KEY_BYTES
from consensus.messages import canonical, sha256

MAX_RECIPE_LAG = 16  # a recipe fixed further ahead would outlive the ledger's window of certificates


@dataclass(frozen=True)
class Validator:
    peer_id: str
    public_key: bytes
    region: str
    reputation: float = 0.0

    def __post_init__(self) -> None:
        if len(self.public_key) != PUBLIC_KEY_BYTES:
            raise ValueError(f"validator {self.peer_id}: public key must be {PUBLIC_KEY_BYTES} bytes")
        if not (self.reputation >= 0 and math.isfinite(self.reputation)):
            raise ValueError(f"validator {self.peer_id}: reputation must be a finite number >= 0")
        if not self.region:
            raise ValueError(f"validator {self.peer_id}: region must not be empty")


@dataclass(frozen=True)
class Genesis:
    """The network's fixed starting point; its hash is the chain id."""

    validators: tuple[Validator, ...]
    genesis_time: float
    seed: bytes = b""
    slot_sec: float = 45.0
    directors_per_slot: int = 5
    max_directors_per_region: int = 2
    cooldown_slots: int = 0
    evidence_lag: int = 2
    # slot s plays the recipe fixed by the certificate of slot s - recipe_lag: with 2, a director
    # knows what to make about a slot and a half before its slot starts (issue 21, step 3)
    recipe_lag: int = 2

    def __post_init__(self) -> None:
        keys = [v.public_key for v in self.validators]
        if len(set(keys)) != len(keys):
            raise ValueError("genesis: two validators share a public key")
        if len({v.peer_id for v in self.validators}) != len(self.validators):
            raise ValueError("genesis: two validators share a peer id")
        if self.slot_sec <= 0:
            raise ValueError("genesis: slot_sec must be positive")
        if self.directors_per_slot < 1:
            raise ValueError("genesis: directors_per_slot must be at least 1")
        if self.evidence_lag < 1:
            raise ValueError("genesis: evidence_lag must be at least 1")
        if not 1 <= self.recipe_lag <= MAX_RECIPE_LAG:
            raise ValueError(f"genesis: recipe_lag must be between 1 and {MAX_RECIPE_LAG}")

    @property
    def chain_id(self) -> bytes:
        return sha256(
            canonical(
                [
                    b"icn-genesis",
                    [[v.peer_id, v.public_key, v.region, repr(float(v.reputation))] for v in self.validators],
                    repr(float(self.genesis_time)),
                    self.seed,
                    repr(float(self.slot_sec)),
                    self.directors_per_slot,
                    self.max_directors_per_region,
                    self.cooldown_slots,
                    self.evidence_lag,
                    self.recipe_lag,
                ]
            )
        )

    def validator(self, public_key: bytes) -> Validator | None:
        for v in self.validators:
            if v.public_key == public_key:
                return v
        return None

    # -- the slot clock (times are passed in: no clock is read here) --
    def slot_at(self, unix_time: float) -> int:
        """The slot running at `unix_time` (-1 before genesis)."""
        if unix_time < self.genesis_time:
            return -1
        return int((unix_time - self.genesis_time) // self.slot_sec)

    def slot_start(self, slot: int) -> float:
        return self.genesis_time + slot * self.slot_sec


def quorum(n: int) -> int:
    """Smallest vote count such that any two quorums share more than f = (n-1)//3 members.

    floor(2n/3) + 1: 3 of 4, 4 of 5, 5 of 7. Note that 3 of 5 would not be safe
    against one Byzantine director: two quorums of 3 in 5 may meet in that one
    director alone (see consensus/README.md).
    """
    return (2 * n) // 3 + 1


def max_faulty(n: int) -> int:
    return (n - 1) // 3
