"""Retention: what the node deletes so that its disk stays bounded over months.

A slot is 45 s, 1,920 a day, and each committed slot leaves an MP4 in the
media store and rows in the database. Every `[storage] prune_every_sec` the
node deletes:

- media that arrived more than `media_keep_hours` ago, and then the oldest
  media while the store holds more than `media_max_gb`;
- downloads left unfinished for an hour;
- the vote journal, slot outcomes, CLIP scores and evidence of slots more than
  `journal_keep_slots` old;
- certificates more than `certificates_keep_slots` old, except those that carry
  evidence and those the newest checkpoint restarts from (the ledger restarts
  from a checkpoint and the window before it; see node.chain).

Never deleted, whatever the settings say: the media of the slots the live
playlist can still serve, of the slot being agreed or fetched, and of the next
one (`protected_slots` back from the current slot). Deleting a file a viewer is
downloading is safe: the open file stays readable until it is closed.

The file-system walk and deletes run in a worker thread; the database is
touched only from the node's trio thread, its one writer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from consensus.ledger import Ledger
from network.media.store import MediaStore
from node.metrics import NodeMetrics
from node.settings import StorageSection
from node.storage import Storage

log = logging.getLogger(__name__)

STALE_PARTIAL_SEC = 3600.0
GB = 1 << 30


@dataclass(frozen=True)
class Pruned:
    removed: list[bytes]
    removed_bytes: int
    kept_bytes: int


def choose(
    files: list[tuple[bytes, int, float]], protected: set[bytes], now: float, keep_sec: float, max_bytes: int
) -> Pruned:
    """Which files go: too old, then the oldest while the rest exceeds `max_bytes`; never a protected one."""
    removed: list[bytes] = []
    removed_bytes = 0
    kept: list[tuple[bytes, int, float]] = []
    for cid, size, mtime in files:
        if cid not in protected and now - mtime > keep_sec:
            removed.append(cid)
            removed_bytes += size
        else:
            kept.append((cid, size, mtime))
    total = sum(size for _, size, _ in kept)
    for cid, size, _ in sorted(kept, key=lambda f: f[2]):
        if total <= max_bytes:
            break
        if cid in protected:
            continue
        removed.append(cid)
        removed_bytes += size
        total -= size
    return Pruned(removed, removed_bytes, total)


class Retention:
    def __init__(
        self,
        settings: StorageSection,
        store: MediaStore,
        storage: Storage,
        ledger: Ledger,
        metrics: NodeMetrics,
        current_slot: Callable[[], int],
        wall: Callable[[], float],
        *,
        protected_slots: int,
    ) -> None:
        self._settings = settings
        self._store = store
        self._storage = storage
        self._ledger = ledger
        self._metrics = metrics
        self._current_slot = current_slot
        self._wall = wall
        self._protected_slots = protected_slots

    def protected(self) -> set[bytes]:
        """The media the live window, the slot under way and the next one may still need."""
        now = self._current_slot()
        out = set()
        for slot in range(now - self._protected_slots, now + 2):
            cert = self._ledger.certificate(slot)
            if cert is not None:
                out.add(cert.value.candidate)
        return out

    async def prune_once(self) -> Pruned:
        s = self._settings
        protected = self.protected()
        now = self._wall()

        def walk_and_delete() -> tuple[Pruned, int]:
            pruned = choose(
                self._store.files(), protected, now, s.media_keep_hours * 3600, int(s.media_max_gb * GB)
            )
            for cid in pruned.removed:
                self._store.remove(cid)
            return pruned, self._store.remove_stale_partials(now - STALE_PARTIAL_SEC)

        pruned, partial_bytes = await trio.to_thread.run_sync(walk_and_delete)
        self._storage.forget_media(pruned.removed)
        rows = self._storage.prune_before(self._current_slot() - s.journal_keep_slots)
        rows += self._prune_certificates()
        m = self._metrics
        m.media_pruned_files.inc(len(pruned.removed))
        m.media_pruned_bytes.inc(pruned.removed_bytes + partial_bytes)
        m.media_bytes.set(pruned.kept_bytes)
        m.db_rows_pruned.inc(rows)
        m.db_bytes.set(self._storage.size_bytes())
        if pruned.removed or rows:
            log.info(
                "pruned %d media files (%.1f MB) and %d database rows; %.1f MB of media kept",
                len(pruned.removed), pruned.removed_bytes / 1e6, rows, pruned.kept_bytes / 1e6,
            )  # fmt: skip
        return pruned

    def _prune_certificates(self) -> int:
        """Certificates older than `certificates_keep_slots`, and never the window the newest stored
        checkpoint restarts from (none at all before the first checkpoint)."""
        checkpoint = self._storage.latest_checkpoint()
        if checkpoint is None:
            return 0
        horizon = min(
            self._current_slot() - self._settings.certificates_keep_slots,
            checkpoint.slot - self._ledger.keep_slots + 1,
        )
        return self._storage.prune_certificates(horizon) if horizon > 0 else 0

    async def run(self) -> None:
        while True:
            await self.prune_once()
            await trio.sleep(self._settings.prune_every_sec)
