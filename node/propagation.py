"""Getting a certified slot's media onto this node, and telling peers it is here.

Providers are learnt two ways: directors' signed announcements (votes topic)
name the content they made, and `media-have` gossip names nodes that hold it,
with addresses to dial: the first few to get it (`announce_below_holders`;
the rest serve their neighbours, whose downloads ask them anyway). A fetch is
retried, with a growing pause, until the caller's deadline: providers that are
not reachable yet become so as announcements arrive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from libp2p.peer.id import ID

from consensus.certificate import Certificate
from network.media.store import MediaStore
from network.media.transfer import FetchError, MediaService
from network.topics import Topic
from node.metrics import NodeMetrics
from node.ports import Publisher, publish_own
from node.storage import Storage

log = logging.getLogger(__name__)

MAX_ANNOUNCED_CONTENTS = 64  # content ids whose announcers are remembered


class MediaPropagation:
    def __init__(
        self,
        service: MediaService,
        store: MediaStore,
        storage: Storage,
        metrics: NodeMetrics,
        gossip: Publisher,
        slot_start: Callable[[int], float],
        wall: Callable[[], float],
    ) -> None:
        self.service = service
        self._store = store
        self._storage = storage
        self._metrics = metrics
        self._gossip = gossip
        self._slot_start = slot_start
        self._wall = wall
        self._announcers: dict[bytes, set[ID]] = {}  # content id -> peers that announced it

    def announced(self, cid: bytes, peer: ID) -> None:
        """A director said it made `cid`: a provider to ask first."""
        self._announcers.setdefault(cid, set()).add(peer)
        while len(self._announcers) > MAX_ANNOUNCED_CONTENTS:
            del self._announcers[next(iter(self._announcers))]

    async def ensure(self, cert: Certificate, detail: dict[str, Any] | None = None) -> None:
        """Hold the certificate's media (fetching until cancelled), then say so; notes go in `detail`."""
        notes: dict[str, Any] = {} if detail is None else detail
        cid = cert.value.candidate
        if not self._store.has(cid):
            attempt = 0
            while True:
                providers = sorted(self._announcers.get(cid, ()), key=str)
                try:
                    report = await self.service.fetch(cid, providers)
                    break
                except FetchError as exc:
                    attempt += 1
                    notes["media_error"] = str(exc)[:300]
                    log.info("slot %d media not fetched yet (attempt %d): %s", cert.slot, attempt, exc)
                    await trio.sleep(min(0.25 * attempt, 2.0))
            notes.pop("media_error", None)
            self._metrics.media_fetched_bytes.inc(sum(report.bytes_from.values()))
            self._storage.put_media(cid, cert.slot, report.path.stat().st_size, "fetched")
        notes["media"] = cid.hex()
        notes["media_at"] = round(self._wall() - self._slot_start(cert.slot), 3)
        if self.service.worth_announcing(cid, self._announcers.get(cid, ())):
            await publish_own(self._gossip, Topic.MEDIA_HAVE, self.service.have_message(cid))
            notes["media_announced"] = True
