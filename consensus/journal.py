"""The vote journal: a director's own votes, durable before they are sent.

The state machine records every proposal and vote it is about to sign here and
only then returns the message to send; the node's implementation must make the
record durable (write and fsync) before it returns. On restart the state machine
reads the journal back, so it can only ever repeat a vote, never cast a
different one for the same slot, round and step.
"""

from __future__ import annotations

from typing import Protocol


class VoteJournal(Protocol):
    def recorded(self, slot: int, round_: int, step: str) -> bytes | None | type[...]:
        """The value hash recorded for (slot, round, step); `...` (Ellipsis) if none; None means nil."""

    def record(self, slot: int, round_: int, step: str, value_hash: bytes | None) -> None:
        """Make the vote durable. Must not return before it is."""

    def votes(self, slot: int) -> list[tuple[int, str, bytes | None]]:
        """Every (round, step, value_hash) recorded for `slot`."""


class MemoryJournal:
    """In-memory journal (tests, simnet observers); the node supplies a durable one."""

    def __init__(self) -> None:
        self._votes: dict[tuple[int, int, str], bytes | None] = {}

    def recorded(self, slot: int, round_: int, step: str) -> bytes | None | type[...]:
        return self._votes.get((slot, round_, step), ...)

    def record(self, slot: int, round_: int, step: str, value_hash: bytes | None) -> None:
        key = (slot, round_, step)
        if key in self._votes and self._votes[key] != value_hash:
            raise ValueError(f"journal already holds a different {step} for slot {slot} round {round_}")
        self._votes[key] = value_hash

    def votes(self, slot: int) -> list[tuple[int, str, bytes | None]]:
        return sorted((r, s, v) for (sl, r, s), v in self._votes.items() if sl == slot)
