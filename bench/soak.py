"""Benchmark: real nodes in one process over thousands of slots, with seeded faults (issue 20, item 4).

N nodes (tiny engine shared, the actor held still, no speech; real py-libp2p
over loopback; short real-time slots) run the chain while a generator seeded by
`--seed` perturbs them at slot boundaries, as CometBFT's e2e manifests do:

- crash: an honest node is stopped (its task cancelled) and restarted from its
  database 1-6 slots later (so restarts go through the stored checkpoint);
- partition: an honest node is cut off from every other for 1-4 slots;
- Byzantine: the last validator is a Byzantine director throughout, and each of
  its restarts draws a new lie (equivocate, different-output,
  missing-candidate, silent).
`--quiet-edges N` starts no fault in the first and last N slots, so the two
windows the flatness check compares carry the same load (the Byzantine
director lies in both). At most one honest node is out at a time: with 4 of 7 as directors a slot can
still fail when the Byzantine director sits beside it (counted, not a fault).

Every `--report-every` slots it records the process's RSS, open descriptors and
CPU per slot, the nodes' database and media bytes, and the slots certified;
the invariants are checked on every report and at the end: no two nodes hold
different certificates for a slot, every node's media stays within its
retention bound, every running node keeps up with the chain, and every task
ended only by cancellation (a crash in any node stops the benchmark).

    python bench/soak.py [--slots 2000] [--slot-sec 3] [--nodes 7] [--seed 1]
                         [--json bench/results/soak.json] [--plot bench/results/soak.png]
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from bench.common import record_header, write_json  # noqa: E402
from bench.sampler import Sampler  # noqa: E402
from network.faults import FaultPlan  # noqa: E402
from node.node import Node  # noqa: E402
from node.settings import NodeSettings  # noqa: E402
from simnet.byzantine import Byzantine  # noqa: E402
from simnet.layout import free_ports  # noqa: E402
from tests.conftest import tiny_settings  # noqa: E402
from tests.network.conftest import identity  # noqa: E402
from tests.node.conftest import node_config  # noqa: E402

LIES = ("equivocate", "different-output", "missing-candidate", "silent")
MEDIA_MAX_GB = 0.004  # per node: reached near slot 900 at 3 s slots, so the soak shows the bound holding
CERTIFICATES_KEEP = 1024  # the least the settings allow, so pruning runs from slot ~1,100 on
CERTIFICATES_SLACK = 512  # what pruning keeps beyond that: the ledger's window before a checkpoint, and a bit
P_CRASH = 0.03  # per slot boundary, when no honest node is out
P_PARTITION = 0.03


def slot_plan(slot_sec: float) -> tuple[dict, dict]:
    """The tests' 4 s slot plan and agreement timeouts, scaled to `slot_sec`."""
    k = slot_sec / 4.0
    plan = {"generation_end": 1.6 * k, "verification_end": 2.0 * k, "agreement_end": 3.2 * k}
    timeouts = {
        "timeout_propose": 0.6 * k, "timeout_prevote": 0.3 * k, "timeout_precommit": 0.3 * k,
        "timeout_delta": 0.1 * k, "require_self_check": False,
    }  # fmt: skip
    return plan, timeouts


@dataclass
class Soak:
    configs: list[NodeSettings]
    engine: Any
    plan: FaultPlan
    rng: random.Random
    byzantine: int
    nodes: list[Node | None] = field(default_factory=list)
    scopes: list[trio.CancelScope] = field(default_factory=list)
    nursery: trio.Nursery | None = None
    out: dict[int, tuple[str, int]] = field(default_factory=dict)  # node -> (crashed|partitioned, back at)
    events: list[dict] = field(default_factory=list)
    lie: str = ""
    quiet_from: int = 1 << 62  # no faults from this slot on: every node has time to catch up before the end
    faults_from: int = 0  # and none before this one: the first window measures the same load as the last

    async def start(self, i: int) -> None:
        assert self.nursery is not None
        behaviour = None
        if i == self.byzantine:
            self.lie = self.rng.choice(LIES)
            behaviour = Byzantine(self.lie, identity(i), self.configs[i].chain.genesis().chain_id)
        run = functools.partial(_run_node, self.configs[i], self.engine, self.plan, i, behaviour)
        node, scope = await self.nursery.start(run)
        self.nodes[i], self.scopes[i] = node, scope

    def crash(self, i: int) -> None:
        self.scopes[i].cancel()
        self.nodes[i] = None

    def peers(self) -> list:
        return [identity(i).peer_id for i in range(len(self.configs))]

    async def perturb(self, slot: int) -> None:
        """At a slot boundary: end the faults due now, then maybe start one."""
        for i, (kind, back) in list(self.out.items()):
            if slot < back and slot < self.quiet_from:
                continue
            del self.out[i]
            if kind == "crashed":
                await self.start(i)
            else:
                self.plan.heal()
            self.events.append({"slot": slot, "node": i, "event": f"{kind} ends"})
        honest_out = [i for i in self.out if i != self.byzantine]
        roll = self.rng.random()
        if (
            honest_out
            or roll >= P_CRASH + P_PARTITION + 0.01
            or not self.faults_from <= slot < self.quiet_from
        ):
            return
        if roll < 0.01 and self.byzantine not in self.out:  # the Byzantine node restarts with a new lie
            self.crash(self.byzantine)
            self.out[self.byzantine] = ("crashed", slot + 1)
            self.events.append({"slot": slot, "node": self.byzantine, "event": "crashed (new lie next)"})
            return
        victim = self.rng.choice([i for i in range(len(self.configs)) if i != self.byzantine])
        length = self.rng.randint(1, 6) if roll < 0.01 + P_CRASH else self.rng.randint(1, 4)
        if roll < 0.01 + P_CRASH:
            self.crash(victim)
            self.out[victim] = ("crashed", slot + length)
        else:
            peers = self.peers()
            self.plan.partition([peers[victim]], [p for j, p in enumerate(peers) if j != victim])
            self.out[victim] = ("partitioned", slot + length)
        self.events.append({"slot": slot, "node": victim, "event": self.out[victim][0], "slots": length})


async def _run_node(
    settings: NodeSettings, engine: Any, faults: FaultPlan, i: int, behaviour: Any, *, task_status
) -> None:
    with trio.CancelScope() as scope:
        node = Node(
            settings, engine=engine, identity=identity(i), name=f"n{i}", faults=faults, behaviour=behaviour
        )
        await node.run(task_status=_Started(task_status, node, scope))


class _Started:
    def __init__(self, status: Any, node: Node, scope: trio.CancelScope) -> None:
        self._status, self._node, self._scope = status, node, scope

    def started(self, value: Any = None) -> None:
        self._status.started((self._node, self._scope))


# -- measurements ---------------------------------------------------------------------------------------
def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_sec() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def census() -> collections.Counter[str]:
    """Live objects by type: what grows between two reports is where memory goes (slow: `--census`)."""
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


TCP_STATES = {"01": "established", "06": "time_wait", "08": "close_wait", "0A": "listen"}


def fd_kinds() -> dict[str, int]:
    """Open descriptors by kind, TCP sockets by state: a leak shows up as one kind that only grows."""
    states: dict[str, str] = {}
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            states[cols[9]] = "tcp_" + TCP_STATES.get(cols[3], cols[3])
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed between the listing and the read
        if target.startswith("socket:["):
            kinds[states.get(target[8:-1], "socket_other")] += 1
        elif target.startswith(("pipe:", "anon_inode:")):
            kinds[target.split("[")[0].rstrip(":")] += 1
        else:
            kinds["file" + (Path(target).suffix or "")] += 1
    return dict(sorted(kinds.items()))


def stored_chain(db: Path) -> dict[int, bytes]:
    """slot -> certified value hash, read from a node's database (read-only, beside its writer)."""
    from consensus.certificate import Certificate

    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {
            slot: Certificate.decode(data).value.hash
            for slot, data in con.execute("SELECT slot, data FROM certificates")
        }
    finally:
        con.close()


def check_safety(dirs: list[Path], seen: dict[int, bytes]) -> tuple[list[str], list[int]]:
    """Every slot two nodes (or one node and an earlier read) certified differently, and each node's
    certificate count; `seen` keeps each slot's value across calls, as pruning deletes old ones."""
    problems, stored = [], []
    for d in dirs:
        chain = stored_chain(d / "node.sqlite")
        stored.append(len(chain))
        for slot, value in chain.items():
            if seen.setdefault(slot, value) != value:
                problems.append(f"slot {slot}: two certified values ({d.name})")
    return problems, stored


async def soak(args: argparse.Namespace, root: Path) -> dict:
    from generation.pipeline import VortexPipeline

    n = args.nodes
    engine = VortexPipeline(
        settings=tiny_settings(root / "tiny-weights", speech__source="none", warp__model="still")
    )
    plan_, timeouts = slot_plan(args.slot_sec)
    ports = free_ports(n)
    genesis = time.time() + 3.0 + 1.0 * n
    storage = {
        "media_max_gb": MEDIA_MAX_GB,
        "media_keep_hours": 24.0,
        "journal_keep_slots": 100,
        "certificates_keep_slots": CERTIFICATES_KEEP,
        "prune_every_sec": 5.0,
    }
    configs = []
    for i in range(n):
        data = node_config(i, n, ports, root, genesis, slot_sec=args.slot_sec, storage=storage)
        data["chain"]["directors_per_slot"] = args.directors
        data["slot"], data["agreement"] = dict(plan_), dict(timeouts)
        configs.append(NodeSettings.from_mapping(data, origin=f"n{i}"))
    g = configs[0].chain.genesis()
    faults = FaultPlan(seed=args.seed)
    s = Soak(configs, engine, faults, random.Random(args.seed), byzantine=n - 1)
    s.quiet_from = args.slots - max(args.quiet_edges, min(10, args.slots // 4))
    s.faults_from = args.quiet_edges
    profiles = dict(args.profile)
    sampler: Sampler | None = None
    sampler_from = 0
    s.nodes, s.scopes = [None] * n, [trio.CancelScope() for _ in range(n)]
    dirs = [root / f"n{i}" for i in range(n)]
    rows: list[dict] = []
    problems: list[str] = []
    seen: dict[int, bytes] = {}  # slot -> certified value, as first read from any node
    async with trio.open_nursery() as nursery:
        s.nursery = nursery
        for i in range(n):
            await s.start(i)
        await trio.sleep(max(0.0, g.slot_start(0) - time.time()))
        last_cpu, last_slot = cpu_sec(), 0
        last_census = census() if args.census else None
        for slot in range(1, args.slots + 1):
            await trio.sleep(max(0.0, g.slot_start(slot) + 0.05 - time.time()))
            await s.perturb(slot)
            if sampler is not None and slot in profiles.values():
                sampler.stop()
                sampler.write(args.json.with_name(f"{args.json.stem}-profile-{sampler_from}-{slot}.txt"))
                sampler = None
            if slot in profiles:
                sampler, sampler_from = Sampler(), slot
                sampler.start()
            if slot % args.report_every and slot != args.slots:
                continue
            cpu = cpu_sec()
            unsafe, stored = check_safety(dirs, seen)
            problems += unsafe
            if max(stored) > CERTIFICATES_KEEP + CERTIFICATES_SLACK:
                problems.append(f"slot {slot}: a node stores {max(stored)} certificates, over its bound")
            running = [x for x in s.nodes if x is not None]
            heads = [x.ledger.head if x.ledger.head is not None else -1 for x in running]
            media = [dir_bytes(d / "media") for d in dirs]
            row = {
                "slot": slot,
                "rss_mib": round(rss_mib(), 1),
                "fds": len(os.listdir("/proc/self/fd")),
                "fd_kinds": fd_kinds(),
                "cpu_ms_per_slot": round(1000 * (cpu - last_cpu) / (slot - last_slot), 1),
                "db_mib": round(
                    sum(dir_bytes(d) - dir_bytes(d / "media") - dir_bytes(d / "hls") for d in dirs) / 2**20, 2
                ),
                "media_mib_max_node": round(max(media) / 2**20, 2),
                "certified_total": len(seen),
                "certs_stored_max": max(stored),
                "ledger_recent_max": max(len(x.ledger.recent) for x in running),
                "head_lag_max": (slot - 1) - min(heads),
                "out": {str(i): k for i, (k, _) in s.out.items()},
                "profiling": sampler is not None,
            }
            if last_census is not None:
                now_census = census()
                grown = now_census - last_census
                row["objects_grown"] = dict(grown.most_common(12))
                last_census = now_census
            if max(media) > MEDIA_MAX_GB * 1e9 * 1.5:
                problems.append(f"slot {slot}: a node holds {max(media)} media bytes, over its bound")
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            write_json({**record_header("soak (partial)"), "rows": rows, "events": s.events}, args.json)
            last_cpu, last_slot = cpu, slot
        ends = {i: x.ledger.head for i, x in enumerate(s.nodes) if x is not None and i not in s.out}
        newest = max((v for v in ends.values() if v is not None), default=-1)
        behind = {i: h for i, h in ends.items() if h is None or h < newest - 3}
        if behind:
            problems.append(f"nodes running at the end but behind the chain's head {newest}: {behind}")
        nursery.cancel_scope.cancel()
    unsafe, _ = check_safety(dirs, seen)
    problems += unsafe
    return {"rows": rows, "events": s.events, "certified": len(seen), "problems": problems}


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def summarise(rows: list[dict], window: int, every: int) -> dict[str, Any]:
    """The first and last `window` slots' RSS, CPU per slot and CPU per certified slot, and their change.

    CPU per slot follows how many slots certify (a slot that fails skips the
    encode, the media transfer and the certificate); per certified slot it does
    not, so the two together tell growth in work from a quieter window."""
    k = max(1, window // every)
    if len(rows) < 2 * k:
        return {}
    before = [{"slot": 0, "certified_total": 0}, *rows[:-1]]
    certified = [r["certified_total"] - p["certified_total"] for r, p in zip(rows, before, strict=True)]
    cpu_ms = [r["cpu_ms_per_slot"] * (r["slot"] - p["slot"]) for r, p in zip(rows, before, strict=True)]
    per_certified = {
        "first": sum(cpu_ms[:k]) / max(1, sum(certified[:k])),
        "last": sum(cpu_ms[-k:]) / max(1, sum(certified[-k:])),
    }
    out: dict[str, Any] = {}
    for key in ("rss_mib", "cpu_ms_per_slot"):
        a, b = _mean(rows[:k], key), _mean(rows[-k:], key)
        out[key] = {"first": round(a, 1), "last": round(b, 1), "change_pct": round(100 * (b - a) / a, 1)}
    a, b = per_certified["first"], per_certified["last"]
    out["cpu_ms_per_certified_slot"] = {
        "first": round(a, 1),
        "last": round(b, 1),
        "change_pct": round(100 * (b - a) / a, 1),
    }
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slots = [r["slot"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    series = [
        ("rss_mib", "RSS of the process (MiB)"),
        ("cpu_ms_per_slot", "CPU per slot, all nodes (ms)"),
        ("db_mib", "databases, all nodes (MiB)"),
        ("media_mib_max_node", "media on disk, largest node (MiB)"),
    ]
    for ax, (key, title) in zip(axes.flat, series, strict=True):
        ax.plot(slots, [r[key] for r in rows], marker=".")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(bottom=0)
    for ax in axes[1]:
        ax.set_xlabel("slot")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def _window(text: str) -> tuple[int, int]:
    a, sep, b = text.partition(":")
    if not (sep and a.isdigit() and b.isdigit() and 0 < int(a) < int(b)):
        raise argparse.ArgumentTypeError("FROM:TO, two slot numbers, FROM below TO")
    return int(a), int(b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=2000)
    parser.add_argument("--slot-sec", type=float, default=3.0)
    parser.add_argument("--nodes", type=int, default=7)
    parser.add_argument("--directors", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report-every", type=int, default=100)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--census", action="store_true", help="record which object types grow (slow)")
    parser.add_argument(
        "--quiet-edges", type=int, default=0, metavar="SLOTS",
        help="start no fault in the first and last SLOTS slots, so the first and last windows carry the "
        "same load and their CPU per slot compares work, not the fault schedule",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=_window, action="append", default=[], metavar="FROM:TO",
        help="sample every thread's stack between these slots into <json stem>-profile-FROM-TO.txt",
    )  # fmt: skip
    args = parser.parse_args()
    if (
        args.slots < 1
        or args.report_every < 1
        or not 5 <= args.nodes <= 20
        or not 4 <= args.directors <= args.nodes
    ):
        parser.error("--slots and --report-every at least 1, 5 to 20 --nodes, 4 to --nodes --directors")
    if not 0 <= args.quiet_edges <= args.slots // 4:
        parser.error("--quiet-edges in [0, --slots / 4]")
    if any(b > args.slots for _, b in args.profile):
        parser.error("--profile windows end by --slots")
    if not 1.0 <= args.slot_sec <= 60:
        parser.error("--slot-sec in [1, 60]")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="icn-soak-") as tmp:
        result = trio.run(soak, args, Path(tmp))
    rows = result["rows"]
    summary = summarise(rows, 200, args.report_every)
    print(
        "| slot | RSS MiB | fds | CPU ms/slot | DB MiB | media MiB (max node) | certified | recent max | head lag |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['slot']} | {r['rss_mib']} | {r['fds']} | {r['cpu_ms_per_slot']} | {r['db_mib']} "
            f"| {r['media_mib_max_node']} | {r['certified_total']} | {r['ledger_recent_max']} | {r['head_lag_max']} |"
        )
    print("summary:", summary, "problems:", result["problems"] or "none")
    write_json(
        {
            **record_header("soak"),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "wall_sec": round(time.perf_counter() - started, 1),
            "summary": summary,
            **result,
        },
        args.json,
    )
    if args.plot is not None:
        plot(rows, args.plot)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
