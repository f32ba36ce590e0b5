"""The vote journal: a director's own messages and round state, durable before anything is sent.

The state machine records every announcement, proposal and vote it is about to
send here, and only then returns the message; the node's implementation must
make the record durable (write and fsync) before `record` returns. On restart
the state machine reads the journal back, so that, as in Tendermint, nothing a
correct director did before a crash is undone by the crash:

- it only ever repeats a vote, never casts a different one for a slot, round and step;
- it re-sends a journaled proposal byte for byte (its `data`), never re-signs one;
- its round never goes back: it resumes at the highest round it journaled;
- its lock and valid value never go back: each polka it acted on is journaled
  with the value itself (`step="polka"`, `data` = the value's canonical CBOR).
"""

from __future__ import annotations

from types import EllipsisType
from typing import Protocol

# (round, step, value_hash, data): round -1 for the announcement; data is the signed proposal for
# step "proposal", the value's CBOR for step "polka", and None otherwise.
JournalEntry = tuple[int, str, bytes | None, bytes | None]


class VoteJournal(Protocol):
    def recorded(self, slot: int, round_: int, step: str) -> bytes | None | EllipsisType:
        """The value hash recorded for (slot, round, step); `...` (Ellipsis) if none; None means nil."""

    def record(
        self, slot: int, round_: int, step: str, value_hash: bytes | None, data: bytes | None = None
    ) -> None:
        """Make the record durable. Must not return before it is. Recording the same again is a no-op."""

    def votes(self, slot: int) -> list[JournalEntry]:
        """Every (round, step, value_hash, data) recorded for `slot`."""


class MemoryJournal:
    """In-memory journal (tests, simnet observers); the node supplies a durable one."""

    def __init__(self) -> None:
        self._votes: dict[tuple[int, int, str], tuple[bytes | None, bytes | None]] = {}

    def recorded(self, slot: int, round_: int, step: str) -> bytes | None | EllipsisType:
        held = self._votes.get((slot, round_, step))
        return ... if held is None else held[0]

    def record(
        self, slot: int, round_: int, step: str, value_hash: bytes | None, data: bytes | None = None
    ) -> None:
        key = (slot, round_, step)
        if key in self._votes:
            if self._votes[key][0] != value_hash:
                raise ValueError(f"journal already holds a different {step} for slot {slot} round {round_}")
            return
        self._votes[key] = (value_hash, data)

    def votes(self, slot: int) -> list[JournalEntry]:
        return sorted(
            ((r, s, v, d) for (sl, r, s), (v, d) in self._votes.items() if sl == slot),
            key=lambda e: (e[0], e[1]),
        )
