"""Every check a message passes before it touches consensus state.

This is what the network's gossip validators run: decode (size limit, strict
types, canonical form, version), slot window (no stale or far-future slots),
signer is a director of that slot, a proposal comes from its round's proposer,
signature valid. Rejections are counted by reason and returned as None; nothing
here raises into the caller.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

from consensus.messages import MAX_MESSAGE_BYTES, DecodeError, Proposal, Signed, decode_signed

DirectorsOf = Callable[[int], Sequence[bytes] | None]


class MessageChecker:
    def __init__(
        self,
        chain_id: bytes,
        directors_of: DirectorsOf,
        *,
        past_slots: int = 1,
        future_slots: int = 1,
        max_bytes: int = MAX_MESSAGE_BYTES,
        cache_size: int = 4096,
    ) -> None:
        self.chain_id = chain_id
        self.directors_of = directors_of
        self.past_slots = past_slots
        self.future_slots = future_slots
        self.max_bytes = max_bytes
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self._verified: OrderedDict[bytes, Signed] = (
            OrderedDict()
        )  # same bytes from several peers: verify once
        self._cache_size = cache_size

    def check(self, data: bytes, current_slot: int) -> Signed | None:
        """The decoded message if it passes every check, else None (and the reason is counted)."""
        msg, _ = self.check_reason(data, current_slot)
        return msg

    def check_reason(self, data: bytes, current_slot: int) -> tuple[Signed | None, str | None]:
        """As `check`, with the rejection reason (None when accepted)."""
        reason = None
        msg = self._verified.get(data) if isinstance(data, bytes) else None
        if msg is None:
            try:
                msg = decode_signed(data, self.max_bytes)
            except DecodeError as exc:
                self.rejected[exc.reason] += 1
                return None, exc.reason
        if msg.slot < current_slot - self.past_slots:
            reason = "stale_slot"
        elif msg.slot > current_slot + self.future_slots:
            reason = "future_slot"
        else:
            directors = self.directors_of(msg.slot)
            if not directors:
                reason = "unknown_directors"
            elif msg.signer not in directors:
                reason = "not_a_director"
            elif isinstance(msg, Proposal) and msg.signer != directors[msg.round % len(directors)]:
                reason = "not_the_proposer"
            elif data not in self._verified and not msg.verify(self.chain_id):
                reason = "bad_signature"
        if reason is not None:
            self.rejected[reason] += 1
            return None, reason
        self._remember(data, msg)
        self.accepted += 1
        return msg, None

    def _remember(self, data: bytes, msg: Signed) -> None:
        self._verified[data] = msg
        self._verified.move_to_end(data)
        while len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
