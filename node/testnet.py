"""`icn-node testnet`: the folders of a whole network, one per node, for several machines.

Operators who want a network of their own (a lab, a staging network, a demo across a
few hosts) need what `cometbft testnet` gives: every node's key, one `[chain]` table
naming every validator, and each node's listen, bootstrap and HTTP addresses filled
in for the host it will run on. Hand-editing N configs to agree on one genesis is
where such networks go wrong, so this writes them from one description.

Nodes go to the hosts in turn (node k to host k mod H); the j-th node on a host takes
the base ports plus j. A node on a loopback host listens on that address; on any
other host it listens on every interface, as peers on other machines must reach it,
and the others dial the host's address. The operator and public HTTP faces stay on
loopback: exposing them is the operator's choice (`[http].public_addr`).

With `--seed` the keys and API tokens derive from it, so the same command with the
same `--genesis-time` writes the same bytes again: such a network's keys are exactly
as secret as its seed, which suits test networks and nothing else. Without it they
are random. Every config is rendered from the typed settings (`node.template`),
so what a node reads is what the settings model validates.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from generation.config import GenerationSettings
from network.identity import Identity, write_key_file
from network.settings import NetworkSettings
from node.settings import (
    AgreementSection,
    ChainSection,
    HttpSection,
    NodeSection,
    NodeSettings,
    SlotSection,
    ValidatorEntry,
)
from node.template import render

MAX_VALIDATORS = 100
MAX_OBSERVERS = 1000
MAX_BOOTSTRAP = 16  # peers each node dials first; the mesh finds the rest through them
MANIFEST = "testnet.json"  # marks a folder this command wrote, so --force only ever replaces one of those


class TestnetError(ValueError):
    """A testnet description that cannot be written; the message says what to change."""

    __test__ = False  # a name pytest would otherwise try to collect


@dataclass(frozen=True)
class TestnetPlan:
    """What `icn-node testnet` was asked for."""

    __test__ = False
    validators: int
    observers: int
    hosts: tuple[str, ...]
    regions: tuple[str, ...] = ()  # round-robin over validators; empty: each validator's host
    seed: str | None = None  # derive keys and tokens from it (reproducible, as secret as the seed)
    chain_seed: str = "icn-testnet"
    genesis_time: float | None = None  # None: now + start_in
    start_in: float = 300.0
    slot_sec: float = 45.0
    engine: str = "default"  # or "tiny": the CPU engine at toy sizes, for machines without CUDA
    p2p_port: int = 4001
    http_port: int = 9464
    public_port: int = 8080

    def check(self) -> None:
        if not 1 <= self.validators <= MAX_VALIDATORS:
            raise TestnetError(f"--validators must be 1..{MAX_VALIDATORS}")
        if not 0 <= self.observers <= MAX_OBSERVERS:
            raise TestnetError(f"--observers must be 0..{MAX_OBSERVERS}")
        if not self.hosts:
            raise TestnetError("--hosts names no host")
        for host in self.hosts:
            _ip(host)
        per_host = -(-(self.validators + self.observers) // len(self.hosts))
        for name, base in (("p2p", self.p2p_port), ("http", self.http_port), ("public", self.public_port)):
            if base < 1 or base + per_host - 1 > 65535:
                raise TestnetError(
                    f"--{name}-port {base}: the {per_host} nodes of a host need ports up to 65535"
                )
        ranges = sorted(
            (base, base + per_host - 1) for base in (self.p2p_port, self.http_port, self.public_port)
        )
        if any(a[1] >= b[0] for a, b in zip(ranges, ranges[1:], strict=False)):
            raise TestnetError("the p2p, http and public port ranges overlap; move one base port")
        if self.engine not in ("default", "tiny"):
            raise TestnetError(f"--engine {self.engine!r}: default or tiny")
        for region in self.regions:
            if not 1 <= len(region) <= 64:
                raise TestnetError(f"region {region!r}: 1..64 characters")


@dataclass(frozen=True)
class PlannedNode:
    index: int
    validator: bool
    host: str
    slot_on_host: int  # j: the base ports plus j
    identity: Identity
    token: str

    @property
    def name(self) -> str:
        return f"node{self.index}"


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Hosts are IP addresses: a name would need a DNS lookup that libp2p's dialer here does not do."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise TestnetError(f"host {host!r} is not an IP address (give each machine's address)") from None


def _addr(host: str, port: int) -> str:
    ip = _ip(host)
    return f"/ip{ip.version}/{ip.compressed}/tcp/{port}"


def _derived(seed: str, what: str, index: int) -> bytes:
    return hashlib.sha256(f"icn-testnet/{seed}/{what}/{index}".encode()).digest()


def plan_nodes(plan: TestnetPlan) -> list[PlannedNode]:
    plan.check()
    total = plan.validators + plan.observers
    nodes = []
    for k in range(total):
        if plan.seed is None:
            identity, token = Identity.generate(), os.urandom(32).hex()
        else:
            identity, token = Identity(_derived(plan.seed, "key", k)), _derived(plan.seed, "token", k).hex()
        host = plan.hosts[k % len(plan.hosts)]
        nodes.append(PlannedNode(k, k < plan.validators, host, k // len(plan.hosts), identity, token))
    return nodes


def node_settings(
    plan: TestnetPlan, nodes: Sequence[PlannedNode], me: PlannedNode, genesis: float
) -> NodeSettings:
    """One node's settings: the shared chain, and addresses for its host."""
    validators = [n for n in nodes if n.validator]
    regions = plan.regions or tuple(n.host for n in validators)
    ip = _ip(me.host)
    listen_ip = ip.compressed if ip.is_loopback else ("0.0.0.0" if ip.version == 4 else "::")
    peers = [n for n in validators if n is not me][:MAX_BOOTSTRAP]
    generation, agreement = GenerationSettings(), AgreementSection()
    if plan.engine == "tiny":
        generation = GenerationSettings.packaged("tiny")
        agreement = AgreementSection(require_self_check=False)  # the tiny CLIP's weights are random
    network = NetworkSettings(
        listen=(f"/ip{ip.version}/{listen_ip}/tcp/{plan.p2p_port + me.slot_on_host}",),
        bootstrap=tuple(
            f"{_addr(p.host, plan.p2p_port + p.slot_on_host)}/p2p/{p.identity.peer_id}" for p in peers
        ),
    )
    return NodeSettings(
        node=NodeSection(key_file="node.key", http_addr=f"127.0.0.1:{plan.http_port + me.slot_on_host}"),
        http=HttpSection(
            token_file="api.token", public_addr=f"127.0.0.1:{plan.public_port + me.slot_on_host}"
        ),
        chain=ChainSection(
            genesis_time=genesis,
            seed=plan.chain_seed,
            slot_sec=plan.slot_sec,
            directors_per_slot=min(5, len(validators)),
            validators=tuple(
                ValidatorEntry(
                    public_key=v.identity.public_key.hex(), region=regions[i % len(regions)], reputation=1.0
                )
                for i, v in enumerate(validators)
            ),
        ),
        slot=SlotSection.scaled(plan.slot_sec),
        agreement=agreement,
        network=network,
        generation=generation,
    )


def write_testnet(plan: TestnetPlan, out: Path, *, force: bool = False) -> list[PlannedNode]:
    """Write DIR/nodeK/{node.toml,node.key,api.token} for every node, DIR/README.md and DIR/testnet.json."""
    nodes = plan_nodes(plan)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise TestnetError(f"{out} is not empty; pass --force to replace a testnet written there")
        if not (out / MANIFEST).is_file():
            raise TestnetError(f"{out} holds no {MANIFEST}: not a testnet folder, so --force leaves it alone")
        shutil.rmtree(out)
    genesis = (
        plan.genesis_time if plan.genesis_time is not None else float(round(time.time() + plan.start_in))
    )
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for me in nodes:
        folder = out / me.name
        folder.mkdir()
        settings = node_settings(plan, nodes, me, genesis)
        notes = {"chain": "Written by `icn-node testnet`: every node of this network has this [chain] table."}
        (folder / "node.toml").write_text(render(settings, config_name="node.toml", notes=notes))
        write_key_file(folder / "node.key", me.identity)
        fd = os.open(folder / "api.token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(me.token + "\n")
        manifest.append(
            {
                "node": me.name,
                "role": "validator" if me.validator else "observer",
                "host": me.host,
                "peer_id": str(me.identity.peer_id),
                "public_key": me.identity.public_key.hex(),
                "p2p": settings.network.listen[0],
                "http": settings.node.http_addr,
                "public": settings.http.public_addr,
            }
        )
    (out / MANIFEST).write_text(json.dumps({"genesis_time": genesis, "nodes": manifest}, indent=2) + "\n")
    (out / "README.md").write_text(_readme(genesis, manifest))
    return nodes


def _readme(genesis: float, manifest: list[dict[str, str]]) -> str:
    lines = [
        "# An ICN testnet, written by `icn-node testnet`",
        "",
        f"Slot 0 starts at Unix time {genesis:.0f}. Copy each node's folder to its host (keep `node.key`",
        "and `api.token` at mode 0600) and start every node before then, from the folder that holds",
        "this file; a late node catches up.",
        "",
        "| node | role | host | start it with |",
        "| --- | --- | --- | --- |",
    ]
    for entry in manifest:
        command = f"icn-node run --config {entry['node']}/node.toml"
        lines.append(f"| {entry['node']} | {entry['role']} | {entry['host']} | `{command}` |")
    return "\n".join(lines) + "\n"
