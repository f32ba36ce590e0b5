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


MAX_CATCH_UP_BATCHES = 32  # per call: 2,048 certificates (a day of 45 s slots) at the default batch
NO_PEERS_RETRY_SEC = 0.5  # a wanted catch-up with nobody connected is tried again this often
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
        self.synced = -1  # every certificate the peers had up to here is held (see `catch_up`)

    def restore(self) -> None:
        """Rebuild the ledger from stored certificates, in slot order."""
        apply_stored(self.ledger, self._storage)
        self.synced = -1 if self.ledger.head is None else self.ledger.head
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
        if cert.slot == self.synced + 1:
            self.synced = cert.slot
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
        """Catch up whenever asked to; with nobody connected, as soon as somebody is.

        A node that restarts asks at its first slot's start, usually before its
        peers have reconnected; waiting for the next slot's start would leave it
        a slot behind (without the certificates that fix the coming recipes and
        elections) for no reason."""
        while True:
            await self._catch_up_wanted.wait()
            if not source.connected_peers():
                await trio.sleep(NO_PEERS_RETRY_SEC)
                continue  # still wanted
            self._catch_up_wanted = trio.Event()
            await self.catch_up(source)

    async def catch_up(self, source: CertificateSource) -> int:
        """Ask connected peers for the certificates after `synced`, a batch at a time; apply those that
        verify, in order; how many.

        `synced` and not the ledger's head: after a long absence the first
        certificate gossiped moves the head past the gap, and the gap (a day of
        certificates, the evidence among them) must still be fetched. At most
        MAX_CATCH_UP_BATCHES batches a call, so one call is bounded; the next
        slot's call goes on. A peer whose answer does not fit (garbage, a
        certificate before what was asked, one that fails to verify) is left
        for the next."""
        applied = batches = 0
        peers = source.connected_peers()
        random.shuffle(peers)
        for peer in peers[:3]:
            while batches < MAX_CATCH_UP_BATCHES:
                batches += 1
                start = self.synced + 1
                try:
                    batch = await source.fetch(peer, start, self._batch)
                except Exception as exc:  # that peer could not help; ask the next
                    log.debug("catch-up from %s failed: %s", peer, exc)
                    break
                fitted = await self._apply_batch(peer, source, start, batch)
                applied += fitted
                if fitted < len(batch):
                    break
                if len(batch) < self._batch:  # that peer holds nothing later: synced as far as we hold
                    self.synced = max(self.synced, -1 if self.ledger.head is None else self.ledger.head)
                    return applied
        return applied

    async def _apply_batch(
        self, peer: ID, source: CertificateSource, start: int, batch: Sequence[bytes]
    ) -> int:
        """Commit a catch-up batch in order, moving `synced`; how many fitted before the first that did not."""
        fitted = 0
        for data in batch:
            try:
                cert = Certificate.decode(data)
            except DecodeError:
                source.penalize(peer, "bad_certificate")
                return fitted
            if cert.slot < start or not await self.commit(cert, "catch-up"):
                return fitted
            start = cert.slot + 1
            self.synced = max(self.synced, cert.slot)
            fitted += 1
        return fitted
