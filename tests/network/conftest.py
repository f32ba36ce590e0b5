"""Real py-libp2p hosts on loopback, many per trio process, with a fixed validator set."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from network.faults import FaultPlan
from network.gossip import Gossip
from network.host import NetworkHost, open_host
from network.identity import Identity
from network.settings import GossipSettings, MediaSettings, NetworkSettings, ReconnectSettings

CHAIN = hashlib.sha256(b"icn-network-tests").digest()


def identity(i: int) -> Identity:
    return Identity(hashlib.sha256(b"network-test-key-%d" % i).digest())


def settings(**gossip: object) -> NetworkSettings:
    media = gossip.pop("media", MediaSettings())
    gossip = {"heartbeat_sec": 0.25, "degree": 4, "degree_low": 3, "degree_high": 8, **gossip}
    return NetworkSettings(
        listen=("/ip4/127.0.0.1/tcp/0",),
        gossip=GossipSettings(**gossip),
        media=media,
        reconnect=ReconnectSettings(initial_backoff_sec=0.1, max_backoff_sec=1.0, dial_timeout_sec=3.0),
    )


@dataclass
class Context:
    """A ValidationContext: every test host is a director of every slot."""

    directors_keys: tuple[bytes, ...]
    slot: int = 10
    chain_id: bytes = CHAIN

    def current_slot(self) -> int:
        return self.slot

    def directors(self, slot: int) -> tuple[bytes, ...] | None:
        return self.directors_keys


@dataclass
class Swarm:
    hosts: list[NetworkHost]
    context: Context
    gossips: list[Gossip] = field(default_factory=list)
    scopes: list[trio.CancelScope] = field(default_factory=list)

    def kill(self, i: int) -> None:
        """Stop host i at once, as a crashed process would vanish (its task is cancelled)."""
        self.scopes[i].cancel()


async def _run_host(ident: Identity, cfg: NetworkSettings, faults: FaultPlan | None, *, task_status) -> None:
    with trio.CancelScope() as scope:
        async with open_host(ident, cfg, faults=faults) as host:
            task_status.started((host, scope))
            await trio.sleep_forever()


@asynccontextmanager
async def swarm(
    n: int,
    *,
    faults: FaultPlan | None = None,
    topology: str | list[tuple[int, int]] = "full",
    plain: frozenset[int] = frozenset(),
    directors: int | None = None,
    net_settings: Callable[[int], NetworkSettings] | None = None,
) -> AsyncIterator[Swarm]:
    """n hosts, each in a task of its own; `plain` hosts run no validators (they can lie)."""
    ids = [identity(i) for i in range(n)]
    context = Context(tuple(ids[i].public_key for i in range(directors or n)))
    async with trio.open_nursery() as nursery:
        sw = Swarm([], context)
        for i in range(n):
            cfg = net_settings(i) if net_settings else settings()
            host, scope = await nursery.start(functools.partial(_run_host, ids[i], cfg, faults))
            sw.hosts.append(host)
            sw.scopes.append(scope)
        for i, host in enumerate(sw.hosts):
            g = Gossip(host, context)
            if i not in plain:
                await g.start()
            sw.gossips.append(g)
        await connect(sw.hosts, topology)
        yield sw
        nursery.cancel_scope.cancel()


async def connect(hosts: list[NetworkHost], topology: str | list[tuple[int, int]]) -> None:
    n = len(hosts)
    if topology == "full":
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    elif topology == "ring":
        pairs = [(i, (i + 1) % n) for i in range(n)]
    else:
        pairs = list(topology)
    for i, j in pairs:
        await hosts[i].connect(hosts[j].addrs()[0], keep=False)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(interval)


async def meshes_formed(sw: Swarm, topic_name: str, minimum: int = 1, *, both_ways: bool = True) -> None:
    """Every host has `minimum` mesh peers, and (`both_ways`) each of its mesh peers has it back.

    A mesh link is one GRAFT, processed by the grafted side some time after the grafting side
    added it: until then a message the grafted side receives is not forwarded over that link,
    and no later IHAVE repairs it (gossip goes to non-mesh peers only), so a test that publishes
    before both ends agree can lose messages on a loaded machine. Counting mesh sizes alone let
    test_3's burst start while host 1 had host 0 in its mesh and host 2 only in host 2's.
    A test of a graph dense enough to prune and regraft by design passes `both_ways=False`.
    """
    by_id = {h.peer_id: h for h in sw.hosts}

    def formed() -> bool:
        for host in sw.hosts:
            mesh = host.router.mesh.get(topic_name, set())
            if len(mesh) < minimum:
                return False
            for peer in mesh if both_ways else ():
                other = by_id.get(peer)
                if other is not None and host.peer_id not in other.router.mesh.get(topic_name, ()):
                    return False
        return True

    await wait_for(formed, 15)
