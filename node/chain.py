"""The certificates this node holds: applying, storing and spreading them; evidence; catch-up.

Every certificate, whichever door it came through (this node's own agreement,
gossip, catch-up), goes through `commit`: verified against the ledger's
directors for its slot, stored, counted, announced to waiters (`decided`), and
gossiped on unless it came from catch-up. The evidence pool lives here too,
because certificates are what empties it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Protocol

import trio
from libp2p.peer.id import ID

from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.ledger import Ledger, LedgerError
from consensus.messages import DecodeError, sha256
from network.topics import Topic
from node.clip import Announcements
from node.metrics import NodeMetrics
from node.ports import Publisher, publish_own
from node.recipes import RecipeQueue
from node.storage import Storage

log = logging.getLogger(__name__)


class CertificateSource(Protocol):
    """Where catch-up asks: connected peers, and a fetch of certificates from one of them."""

    def connected_peers(self) -> list[ID]: ...

    async def fetch(self, peer: ID, start: int, count: int) -> Sequence[bytes]: ...

    def penalize(self, peer: ID, reason: str) -> None: ...


# slots between stored checkpoints: a restart replays at most this many beyond the ledger's window
CHECKPOINT_EVERY = 128


def apply_stored(ledger: Ledger, storage: Storage) -> int:
    """Apply the stored certificates after the ledger's newest, in slot order; how many.

    An empty ledger starts from the newest stored checkpoint, if any, and the
    window of certificates before it (what `Ledger.recipe` and the live window
    read), so a node that ran for months restarts in constant time. The node
    does this once at start; the public face's process, reading the same
    database, does it again and again to follow the node."""
    start = 0 if ledger.head is None else ledger.head + 1
    checkpoint = storage.latest_checkpoint() if ledger.head is None else None
    if checkpoint is not None:
        try:
            ledger.load(checkpoint)
            start = max(0, checkpoint.slot - ledger.keep_slots + 1)
        except LedgerError as exc:  # written by this node, so damage or a bug: genesis still works
            log.error(
                "stored checkpoint at slot %d not loaded (%s): replaying from genesis", checkpoint.slot, exc
            )
    applied = 0
    for cert in storage.certificates(from_slot=start):
        try:
            ledger.apply(cert)
        except LedgerError as exc:  # applied before it was stored: a bug, or a damaged database
            log.error("stored certificate for slot %d not applied: %s", cert.slot, exc)
            break
        applied += 1
    held = None if checkpoint is None else ledger.certificate(checkpoint.slot)
    if checkpoint is not None and held is not None and held.hash != checkpoint.head:
        log.error("stored checkpoint at slot %d names another head certificate", checkpoint.slot)
    return applied


class ChainKeeper:
    def __init__(
        self,
        ledger: Ledger,
        storage: Storage,
        recipes: RecipeQueue,
        metrics: NodeMetrics,
        wall: Callable[[], float],
        *,
        catch_up_batch: int,
        announcements: Announcements | None = None,
    ) -> None:
        self.ledger = ledger
        self.announcements = announcements or Announcements()
        self._storage = storage
        self._recipes = recipes
        self._metrics = metrics
        self._wall = wall
        self._batch = catch_up_batch
        self.evidence_pool: dict[bytes, Evidence] = {e.hash: e for e in storage.evidence()}
        self._decided: dict[int, trio.Event] = {}
        self._catch_up_wanted = trio.Event()
        self.gossip: Publisher | None = None  # set once the host is up; nothing is published before
        self._checkpointed = -CHECKPOINT_EVERY  # slot of the newest stored checkpoint

    def restore(self) -> None:
        """Rebuild the ledger from stored certificates, in slot order."""
        apply_stored(self.ledger, self._storage)
        stored = self._storage.latest_checkpoint()
        self._checkpointed = stored.slot if stored is not None else self._checkpointed
        last = self._storage.last_certified_slot()
        if last is not None:
            self._metrics.last_certified_slot.set(last)

    def decided(self, slot: int) -> trio.Event:
        """Set once a certificate for `slot` is held, from any source.

        Only waited-for slots have an event, so catching up a day of slots leaves
        no event per slot behind."""
        event = self._decided.get(slot)
        if event is None:
            event = self._decided[slot] = trio.Event()
            if self.ledger.certificate(slot) is not None:
                event.set()
        return event

    def forget_before(self, oldest: int) -> None:
        for old in [s for s in self._decided if s < oldest]:
            del self._decided[old]

    async def _publish(self, topic: Topic, data: bytes) -> None:
        if self.gossip is not None:
            await publish_own(self.gossip, topic, data)

    async def commit(self, cert: Certificate, source: str) -> bool:
        """Apply, store and spread a certificate; False if it does not fit the ledger (yet)."""
        if self.ledger.certificate(cert.slot) is not None:
            return True
        if cert.slot < self.ledger.floor and (old := self._storage.certificate_bytes(cert.slot)) is not None:
            if Certificate.decode(old).value.hash != cert.value.hash:  # two quorums: over f faulty
                log.error("a second certificate for old slot %d from %s: safety failure", cert.slot, source)
            return True
        try:
            self.ledger.apply(cert)
        except LedgerError as exc:
            log.warning("certificate for slot %d from %s not applied: %s", cert.slot, source, exc)
            self.want_catch_up()
            return False
        self._storage.put_certificate(cert, self._wall())
        self._storage.put_clip_scores(
            cert.slot, self.announcements.settle(cert, self.ledger.directors(cert.slot))
        )
        self._metrics.certificates.labels(source).inc()
        head = self.ledger.head
        if head is not None:
            self._metrics.last_certified_slot.set(head)
            if cert.slot == head and head >= self._checkpointed + CHECKPOINT_EVERY:
                checkpoint = self.ledger.checkpoint()
                if checkpoint is not None:
                    self._storage.put_checkpoint(checkpoint)
                    self._checkpointed = head
        for data in cert.value.evidence:
            self.evidence_pool.pop(sha256(data), None)
        if cert.value.next_recipe is not None:
            self._recipes.committed(cert.value.next_recipe)
        if (waiter := self._decided.get(cert.slot)) is not None:
            waiter.set()
        if source != "catch-up":
            await self._publish(Topic.CERTIFICATES, cert.encode())
        log.info("slot %d certified (round %d, from %s)", cert.slot, cert.round, source)
        return True

    async def take_evidence(self, ev: Evidence, *, publish: bool) -> None:
        if ev.hash in self.evidence_pool:
            return
        self.evidence_pool[ev.hash] = ev
        self._storage.put_evidence(ev)
        self._metrics.evidence.inc()
        log.warning("evidence: director %s equivocated in slot %d", ev.signer.hex()[:12], ev.slot)
        if publish:
            await self._publish(Topic.EVIDENCE, ev.encode())

    # -- catching up ----------------------------------------------------------------------------------
    def want_catch_up(self) -> None:
        self._catch_up_wanted.set()

    @property
    def catch_up_pending(self) -> bool:
        """A catch-up was asked for and has not started yet."""
        return self._catch_up_wanted.is_set()

    async def catch_up_loop(self, source: CertificateSource) -> None:
        while True:
            await self._catch_up_wanted.wait()
            self._catch_up_wanted = trio.Event()
            await self.catch_up(source)

    async def catch_up(self, source: CertificateSource) -> int:
        """Ask connected peers for certificates after our newest; apply those that verify, in order."""
        applied = 0
        peers = source.connected_peers()
        random.shuffle(peers)
        for peer in peers[:3]:
            start = 0 if self.ledger.head is None else self.ledger.head + 1
            try:
                batch = await source.fetch(peer, start, self._batch)
            except Exception as exc:  # that peer could not help; ask the next
                log.debug("catch-up from %s failed: %s", peer, exc)
                continue
            for data in batch:
                try:
                    cert = Certificate.decode(data)
                except DecodeError:
                    source.penalize(peer, "bad_certificate")
                    break
                if await self.commit(cert, "catch-up"):
                    applied += 1
                else:
                    break
            if len(batch) < self._batch:
                break
        return applied
