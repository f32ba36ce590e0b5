"""Real nodes (tiny engine, short slots) on loopback, in one trio process."""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from network.identity import Identity, write_key_file
from node.node import Node
from node.settings import NodeSettings
from simnet.layout import free_ports
from tests.conftest import tiny_settings
from tests.network.conftest import identity

# A 4 s slot: the engine has until 2.0 s, agreement until 3.2 s, media until the end.
SHORT_SLOT = {"generation_end": 1.6, "verification_end": 2.0, "agreement_end": 3.2}
# tiny CLIP models have random weights: their prompt self-check says nothing, so it is not required
SHORT_TIMEOUTS = {
    "timeout_propose": 0.6, "timeout_prevote": 0.3, "timeout_precommit": 0.3, "timeout_delta": 0.1,
    "require_self_check": False,
}  # fmt: skip


def node_config(
    i: int, n: int, ports: list[int], root: Path, genesis_time: float, *, slot_sec: float = 4.0, **extra: Any
) -> dict:
    """The TOML-shaped table for node i of n (every node bootstraps to every other)."""
    return {
        "node": {
            "key_file": str(root / f"n{i}.key"),
            "storage_dir": str(root / f"n{i}"),
            "http_addr": "127.0.0.1:0",
        },
        # the public face in the node's process: tests reach into it (`test_public_face` runs it apart)
        "http": {"public_addr": "127.0.0.1:0", "public_process": False, **extra.pop("http", {})},
        "chain": {
            "genesis_time": genesis_time,
            "seed": "node-tests",
            "slot_sec": slot_sec,
            "directors_per_slot": min(5, n),
            "validators": [
                {"public_key": identity(j).public_key.hex(), "region": f"r{j % 3}", "reputation": 1.0}
                for j in range(n)
            ],
        },
        "slot": dict(SHORT_SLOT),
        "agreement": dict(SHORT_TIMEOUTS),
        "network": {
            "listen": [f"/ip4/127.0.0.1/tcp/{ports[i]}"],
            "bootstrap": [
                f"/ip4/127.0.0.1/tcp/{ports[j]}/p2p/{identity(j).peer_id}" for j in range(n) if j != i
            ],
            "gossip": {"heartbeat_sec": 0.25},
            "reconnect": {"initial_backoff_sec": 0.2, "max_backoff_sec": 1.0},
        },
        **extra,
    }


@dataclass
class Cluster:
    nodes: list[Node | None]
    configs: list[NodeSettings]
    scopes: list[trio.CancelScope] = field(default_factory=list)
    nursery: trio.Nursery | None = None
    engine: Any = None

    def kill(self, i: int) -> None:
        self.scopes[i].cancel()
        self.nodes[i] = None

    async def start(self, i: int) -> Node:
        node, scope = await self.nursery.start(functools.partial(_run_node, self.configs[i], self.engine, i))
        self.nodes[i] = node
        self.scopes[i] = scope
        return node


async def _run_node(settings: NodeSettings, engine: Any, i: int, *, task_status) -> None:
    with trio.CancelScope() as scope:
        node = Node(settings, engine=engine, identity=identity(i), name=f"n{i}")
        await node.run(task_status=_Started(task_status, node, scope))


class _Started:
    """Passes (node, scope) to `nursery.start` once the node reports it is up."""

    def __init__(self, status, node: Node, scope: trio.CancelScope) -> None:
        self._status, self._node, self._scope = status, node, scope

    def started(self, value: Any = None) -> None:
        self._status.started((self._node, self._scope))


@asynccontextmanager
async def cluster(
    root: Path, engine: Any, n: int = 5, *, start_in: float = 2.0, slot_sec: float = 4.0, **extra: Any
) -> AsyncIterator[Cluster]:
    ports = free_ports(n)
    genesis = time.time() + start_in
    configs = [
        NodeSettings.from_mapping(
            node_config(i, n, ports, root, genesis, slot_sec=slot_sec, **extra), origin=f"n{i}"
        )
        for i in range(n)
    ]
    c = Cluster([None] * n, configs, [trio.CancelScope() for _ in range(n)], engine=engine)
    async with trio.open_nursery() as nursery:
        c.nursery = nursery
        for i in range(n):
            await c.start(i)
        yield c
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="session")
def node_engine(tiny_cache: Path):
    """One tiny engine shared by the in-process nodes (its slot lock serialises them)."""
    from generation.pipeline import VortexPipeline

    # the actor held still: these tests are about the slot lifecycle, and several nodes share one
    # engine inside short slots; LivePortrait runs in the simnet's node processes and its own tests
    return VortexPipeline(settings=tiny_settings(tiny_cache, speech__source="none", warp__model="still"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_node_config(
    root: Path, tiny_cache: Path, start_in: float = 10.0, engine: dict | None = None
) -> tuple[Path, Identity, int, int]:
    """A one-validator chain with 3 s slots for an `icn-node run` process: (config, identity, http, p2p).
    `engine`: overrides of the tiny engine (default: no speech, the actor held still)."""
    ident = write_key_file(root / "node.key")
    http, p2p = _free_port(), _free_port()
    (root / "node.toml").write_text(
        f"""
[node]
key_file = "node.key"
http_addr = "127.0.0.1:{http}"
generation_config = "engine.yaml"
[chain]
genesis_time = {time.time() + start_in:.3f}
slot_sec = 3.0
directors_per_slot = 1
[[chain.validators]]
public_key = "{ident.public_key.hex()}"
region = "eu"
[slot]
generation_end = 1.2
verification_end = 1.5
agreement_end = 2.4
[agreement]
timeout_propose = 0.5
require_self_check = false
[network]
listen = ["/ip4/127.0.0.1/tcp/{p2p}"]
[http]
public_addr = "127.0.0.1:0"
"""
    )
    overrides = engine if engine is not None else {"speech__source": "none", "warp__model": "still"}
    settings = tiny_settings(tiny_cache, **overrides)
    (root / "engine.yaml").write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    return root / "node.toml", ident, http, p2p


@asynccontextmanager
async def playing_node(root: Path, engine: Any, *, slots: int = 1) -> AsyncIterator[Node]:
    """A one-node chain whose public face is up, once it holds the media of `slots` committed slots."""
    async with cluster(root, engine, n=1, http={"public_addr": "127.0.0.1:0"}) as c:
        node = c.nodes[0]
        assert node is not None and node.public_port
        with trio.fail_after(60):
            while sum(1 for s in node.ledger.recent if node.media_path(s)) < slots:
                await trio.sleep(0.2)
        yield node
