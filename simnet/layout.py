"""Everything a simnet's nodes need on disk: keys, ports, one TOML config each, the engine's YAML.

Keys come from the scenario's seed, so a scenario run twice elects the same
directors. The genesis time is written last (`set_genesis`), when every node's
engine is loaded: on two cores twenty engines take minutes to load, and a chain
that starts before its nodes are up measures only the start-up. The engine is the tiny CPU profile with smaller buffers and no
speech model (the speech model costs 0.4 s of CPU per second of audio, which
twenty processes on two cores cannot afford), so one node process stays well
under 1 GB; the slot plan is the seed's scaled to `slot_sec`.
"""

from __future__ import annotations

import hashlib
import random
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml

from generation.config import GenerationSettings
from network.identity import Identity, write_key_file
from simnet.scenario import Scenario

# The seed's plan as fractions of a 45 s slot: generation 15, verification 17, agreement 30.
PLAN = {"generation_end": 15 / 45, "verification_end": 17 / 45, "agreement_end": 30 / 45}


def identity(scenario: Scenario, i: int) -> Identity:
    return Identity(hashlib.sha256(b"simnet/%d/%d" % (scenario.seed, i)).digest())


LOWEST_PORT = 10_000  # below it, well-known and registered services


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outbound connections' source ports (Linux; the usual default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports that are free on `host` now, outside the ephemeral range.

    Not from the ephemeral range (what binding port 0 gives): between this pick and the
    node's own bind, any outbound connection on the machine may take such a port as its
    source port, and the node then fails with "Address already in use" (one node of a
    35-node simnet did). Outside it, only another listener can take it.
    """
    low, high = ephemeral_range()
    pool = [p for p in range(LOWEST_PORT, 65536) if not low <= p <= high]
    random.SystemRandom().shuffle(pool)
    held: list[socket.socket] = []
    try:
        for port in pool:
            if len(held) == n:
                break
            sock = socket.socket()
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        if len(held) < n:
            raise RuntimeError(f"only {len(held)} of {n} ports free on {host} outside {low}-{high}")
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def engine_settings(cache_dir: Path) -> dict:
    data = GenerationSettings.packaged("tiny").model_dump(mode="json")
    data["models"]["cache_dir"] = str(cache_dir)
    data["speech"]["source"] = "none"
    data["buffers"]["video"]["frames"] = 24  # one second at 24 fps: smaller media to move
    data["device"]["name"] = "cpu"
    return data


@dataclass(frozen=True)
class Endpoint:
    """Where a node listens: its machine's address and three ports free there (p2p, operator, public)."""

    host: str
    p2p_port: int
    http_port: int
    public_port: int


def local_endpoints(n: int) -> list[Endpoint]:
    ports = free_ports(3 * n)  # one call: three calls could hand out one port twice
    p2p, http, public = ports[:n], ports[n : 2 * n], ports[2 * n :]
    return [Endpoint("127.0.0.1", p2p[i], http[i], public[i]) for i in range(n)]


@dataclass
class NodeFiles:
    index: int
    identity: Identity
    config: Path
    control: Path
    storage: Path
    p2p_port: int
    http_port: int
    public_port: int  # the viewer, playlist and media
    table: dict
    host: str = "127.0.0.1"  # the machine's address its peers dial; the operator face stays on loopback

    @property
    def go(self) -> Path:
        """Written by the harness once every node's engine is ready; the node then starts."""
        return self.config.with_name("go")

    @property
    def engine_ready(self) -> Path:
        return self.config.with_name("engine-ready")

    @property
    def peer_id(self) -> str:
        return str(self.identity.peer_id)


@dataclass
class Layout:
    root: Path
    scenario: Scenario
    genesis_time: float
    nodes: list[NodeFiles]


def bootstrap_of(i: int, n: int) -> list[int]:
    """Each node dials the next three (a ring with chords): about six peers, near the mesh degree."""
    return sorted({(i + k) % n for k in (1, 2, 3)} - {i})


def build(
    scenario: Scenario,
    root: Path,
    genesis_time: float,
    cache_dir: Path,
    endpoints: list[Endpoint] | None = None,
) -> Layout:
    """Write every node's files under `root`. `endpoints` (default: free loopback ports here) are
    where each node listens: a backend that places nodes on other machines passes theirs."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "engine.yaml").write_text(yaml.safe_dump(engine_settings(cache_dir)))
    n = scenario.nodes
    ends = endpoints if endpoints is not None else local_endpoints(n)
    if len(ends) != n:
        raise ValueError(f"{len(ends)} endpoints for {n} nodes")
    ids = [identity(scenario, i) for i in range(n)]
    regions = max(3, -(-scenario.directors_per_slot // 2))  # enough regions for the 2-per-region cap
    validators = [
        {"public_key": ids[i].public_key.hex(), "region": f"region-{i % regions}", "reputation": 1.0}
        for i in range(n)
    ]
    s = scenario.slot_sec
    nodes = []
    for i in range(n):
        folder = root / f"node-{i:02d}"
        folder.mkdir(exist_ok=True)
        key = folder / "node.key"
        if not key.exists():
            write_key_file(key, ids[i])
        config = {
            "node": {
                "key_file": "node.key",
                "storage_dir": "data",
                "http_addr": f"127.0.0.1:{ends[i].http_port}",
                "generation_config": "../engine.yaml",
                "log_format": "json",
            },
            # the face in each node's process: a second process per node would halve how many nodes fit
            "http": {"public_addr": f"{ends[i].host}:{ends[i].public_port}", "public_process": False},
            "chain": {
                "genesis_time": genesis_time,
                "seed": f"simnet-{scenario.name}-{scenario.seed}",
                "slot_sec": s,
                "directors_per_slot": min(scenario.directors_per_slot, n),
                "validators": validators,
            },
            "slot": {k: round(v * s, 3) for k, v in PLAN.items()},
            "agreement": {
                # a proposal crosses several hops of busy processes: wait a good share of the
                # 13/45 agreement window for it before prevoting nil
                "timeout_propose": round(0.12 * s, 3),
                "timeout_prevote": round(0.04 * s, 3),
                "timeout_precommit": round(0.04 * s, 3),
                "timeout_delta": round(0.02 * s, 3),
                "require_self_check": False,  # tiny CLIP has random weights: its verdict means nothing
            },
            "network": {
                "listen": [f"/ip4/{ends[i].host}/tcp/{ends[i].p2p_port}"],
                "bootstrap": [
                    f"/ip4/{ends[j].host}/tcp/{ends[j].p2p_port}/p2p/{ids[j].peer_id}"
                    for j in bootstrap_of(i, n)
                ],
                "gossip": {"heartbeat_sec": 0.5},
                "reconnect": {"initial_backoff_sec": 0.25, "max_backoff_sec": 2.0},
                "media": {"request_timeout_sec": round(0.15 * s, 3)},
            },
        }
        path = folder / "node.toml"
        path.write_text(_toml(config))
        nodes.append(
            NodeFiles(
                i,
                ids[i],
                path,
                folder / "control.json",
                folder / "data",
                ends[i].p2p_port,
                ends[i].http_port,
                ends[i].public_port,
                config,
                ends[i].host,
            )
        )
    return Layout(root, scenario, genesis_time, nodes)


def set_genesis(layout: Layout, genesis_time: float) -> None:
    """Fix the chain's start in every config, once the harness knows when all nodes are ready."""
    layout.genesis_time = genesis_time
    for files in layout.nodes:
        files.table["chain"]["genesis_time"] = genesis_time
        tmp = files.config.with_name("node.toml.tmp")
        tmp.write_text(_toml(files.table))
        tmp.replace(files.config)


def _toml(data: dict, prefix: str = "") -> str:
    """A small TOML writer for the configs above (tables, arrays of tables, scalars, lists)."""
    lines, tables = [], []
    for key, value in data.items():
        if (
            isinstance(value, dict)
            or isinstance(value, list)
            and value
            and all(isinstance(v, dict) for v in value)
        ):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_scalar(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in tables:
        name = f"{prefix}{key}"
        if isinstance(value, list):
            for item in value:
                out += f"\n[[{name}]]\n" + _toml(item, f"{name}.")
        else:
            out += f"\n[{name}]\n" + _toml(value, f"{name}.")
    return out


def _scalar(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
