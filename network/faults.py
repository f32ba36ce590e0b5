"""An in-process fault layer: per-link delay, loss and partition, below every protocol.

Faults apply to the bytes a host writes on an authenticated connection (after
Noise, before yamux), so gossip, media transfer and anything else on that
connection see them alike, and nothing above this layer knows they exist.
A link is a pair of peer ids and is symmetric; one `FaultPlan` is shared by all
hosts of a process (tests, single-process simnets), or each node process holds
its own and the simnet sets both ends.

What each fault means on a reliable byte stream, as TCP makes it:
- delay: bytes arrive `delay_sec` later; order and throughput are kept.
- loss: a lost segment is resent after a retransmission timeout (200 ms,
  doubling while losses repeat), so loss shows as stalls, never as corruption.
  Messages are lost outright only when a connection dies, as on a real network.
- partition: bytes wait until the link heals (up to a bounded backlog, then the
  writer blocks as on a full TCP window), and new connections between the two
  sides fail at the upgrade.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, replace
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.transport.exceptions import SecurityUpgradeFailure
from libp2p.transport.upgrader import TransportUpgrader

log = logging.getLogger(__name__)

RETRANSMIT_TIMEOUT_SEC = 0.2
MAX_BACKOFF_DOUBLINGS = 5
BACKLOG_WRITES = 4096


@dataclass(frozen=True)
class LinkFault:
    delay_sec: float = 0.0
    loss: float = 0.0  # probability that a write's segment is lost once
    partitioned: bool = False

    def __post_init__(self) -> None:
        if not (self.delay_sec >= 0 and self.delay_sec < 3600):
            raise ValueError(f"delay_sec must be in [0, 3600), got {self.delay_sec}")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {self.loss}")


NO_FAULT = LinkFault()


def _link_key(a: ID | bytes, b: ID | bytes) -> frozenset[bytes]:
    return frozenset(
        (bytes(a.to_bytes() if isinstance(a, ID) else a), bytes(b.to_bytes() if isinstance(b, ID) else b))
    )


class FaultPlan:
    """The faults in force now, per link; changes take effect on bytes not yet delivered."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._links: dict[frozenset[bytes], LinkFault] = {}
        self._changed = trio.Event()

    # -- reading ---------------------------------------------------------------------------------
    def link(self, a: ID | bytes, b: ID | bytes) -> LinkFault:
        return self._links.get(_link_key(a, b), NO_FAULT)

    def rng_for(self, a: ID | bytes, b: ID | bytes) -> random.Random:
        """A per-link generator: the same seed gives the same losses on the same link."""
        key = b"".join(sorted(_link_key(a, b)))
        return random.Random(int.from_bytes(hashlib.sha256(self.seed.to_bytes(8, "big") + key).digest()[:8]))

    async def wait_changed(self) -> None:
        await self._changed.wait()

    # -- changing --------------------------------------------------------------------------------
    def set_link(self, a: ID | bytes, b: ID | bytes, **fault: Any) -> None:
        current = self.link(a, b)
        self._store(a, b, replace(current, **fault))

    def partition(self, side_a: list[ID], side_b: list[ID]) -> None:
        for a in side_a:
            for b in side_b:
                self.set_link(a, b, partitioned=True)

    def heal(self) -> None:
        """End every partition; delays and losses stay."""
        for key, fault in list(self._links.items()):
            self._links[key] = replace(fault, partitioned=False)
        self._notify()

    def clear(self) -> None:
        self._links.clear()
        self._notify()

    def _store(self, a: ID | bytes, b: ID | bytes, fault: LinkFault) -> None:
        key = _link_key(a, b)
        if fault == NO_FAULT:
            self._links.pop(key, None)
        else:
            self._links[key] = fault
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class FaultyConn:
    """A secured connection whose writes pass through the plan on their way out.

    Writes are queued with their send time and a pump task (in the host's
    nursery) delivers them in order once each is due and its link is not
    partitioned. Everything else is the wrapped connection's.
    """

    def __init__(self, inner: Any, plan: FaultPlan, nursery: trio.Nursery) -> None:
        self._inner = inner
        self._plan = plan
        self._local = inner.get_local_peer()
        self._remote = inner.get_remote_peer()
        self._rng = plan.rng_for(self._local, self._remote)
        self._send, self._receive = trio.open_memory_channel[tuple[float, bytes]](BACKLOG_WRITES)
        self._failed: BaseException | None = None
        nursery.start_soon(self._pump)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def write(self, data: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        await self._send.send((trio.current_time(), bytes(data)))

    async def read(self, n: int | None = None) -> bytes:
        return await self._inner.read(n)

    async def close(self) -> None:
        self._send.close()
        await self._inner.close()

    def _loss_delay(self, loss: float) -> float:
        extra, timeout = 0.0, RETRANSMIT_TIMEOUT_SEC
        for _ in range(MAX_BACKOFF_DOUBLINGS):
            if self._rng.random() >= loss:
                break
            extra += timeout
            timeout *= 2
        return extra

    async def _pump(self) -> None:
        last_due = 0.0
        try:
            async with self._receive:
                async for sent_at, data in self._receive:
                    while (fault := self._plan.link(self._local, self._remote)).partitioned:
                        await self._plan.wait_changed()
                    due = max(last_due, sent_at + fault.delay_sec + self._loss_delay(fault.loss))
                    last_due = due
                    await trio.sleep_until(due)
                    await self._inner.write(data)
        except Exception as exc:  # the connection died under us: later writes raise it
            self._failed = exc
            log.debug("faulty link %s -> %s closed: %s", self._local, self._remote, exc)


class FaultyUpgrader(TransportUpgrader):
    """The swarm's upgrader, with every secured connection wrapped in a `FaultyConn`."""

    def __init__(self, inner: TransportUpgrader, plan: FaultPlan, nursery: trio.Nursery) -> None:
        self.__dict__.update(inner.__dict__)
        self._plan = plan
        self._nursery = nursery

    async def upgrade_security(self, raw_conn: Any, is_initiator: bool, peer_id: ID | None = None) -> Any:
        conn = await super().upgrade_security(raw_conn, is_initiator, peer_id)
        if self._plan.link(conn.get_local_peer(), conn.get_remote_peer()).partitioned:
            await conn.close()
            raise SecurityUpgradeFailure("link is partitioned (fault layer)")
        return FaultyConn(conn, self._plan, self._nursery)


def install(swarm: Any, plan: FaultPlan, nursery: trio.Nursery) -> None:
    """Route a swarm's new connections through the plan (existing ones are not touched)."""
    if not isinstance(swarm.upgrader, FaultyUpgrader):
        swarm.upgrader = FaultyUpgrader(swarm.upgrader, plan, nursery)
