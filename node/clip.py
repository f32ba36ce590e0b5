"""Each committed slot's CLIP agreement: how close every director's output came to the canonical one.

Directors announce signed CLIP embeddings (ViT-B-32 and ViT-L-14) of what they
made; consensus accepts a proposal only from directors whose embeddings agree
within the cosine thresholds. Every node sees those announcements on the votes
topic, already checked (a director of that slot, a valid signature), so every
node can say, for the schedule, how each director's embedding compares with
the canonical output's: the figures behind the agreement, not a claim.

The canonical embedding is what the certified round's proposer announced, when
its content hash is the certificate's media (else the first such director in
seat order). Announcements wait here only until their slot's
certificate settles them into a few numbers per director; the embeddings
themselves (kilobytes each) are never stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.certificate import Certificate
from consensus.messages import Announce, cosine

KEEP_SLOTS = 4  # announcements wait this many slots for their certificate


@dataclass(frozen=True)
class ClipScore:
    """One director's announced output against the canonical one (cosines None without a reference)."""

    director: bytes
    matched: bool  # announced the very file the certificate names
    cosine_b: float | None
    cosine_l: float | None
    self_check: bool


class Announcements:
    """The first announcement of each director of the last few slots; one owner: the node's trio thread."""

    def __init__(self, keep_slots: int = KEEP_SLOTS) -> None:
        self._keep = keep_slots
        self._slots: dict[int, dict[bytes, Announce]] = {}

    def record(self, msg: Announce) -> None:
        """Keep `msg` if it is its director's first for its slot and the slot is recent."""
        newest = max(self._slots, default=msg.slot)
        if msg.slot <= newest - self._keep:
            return
        self._slots.setdefault(msg.slot, {}).setdefault(msg.signer, msg)
        for old in [s for s in self._slots if s <= max(self._slots) - self._keep]:
            del self._slots[old]

    def settle(self, cert: Certificate, directors: Sequence[bytes]) -> list[ClipScore]:
        """The slot's scores against its certificate's media; its announcements are then dropped."""
        held = self._slots.pop(cert.slot, {})
        seats = list(directors)
        proposer = seats[cert.round % len(seats)] if seats else b""
        order = [proposer, *seats]
        canonical = [held[d] for d in order if d in held and held[d].content_hash == cert.value.candidate]
        ref = canonical[0] if canonical else None
        return [
            ClipScore(
                director=signer,
                matched=a.content_hash == cert.value.candidate,
                cosine_b=None if ref is None else round(cosine(a.embedding_b, ref.embedding_b), 4),
                cosine_l=None if ref is None else round(cosine(a.embedding_l, ref.embedding_l), 4),
                self_check=a.self_check,
            )
            for signer, a in sorted(held.items())
        ]
