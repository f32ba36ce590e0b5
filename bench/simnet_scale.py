"""How many real nodes one 2-core machine carries: the largest simnet that commits 3 consecutive slots.

For each node count (one OS process per node, tiny CPU engine, 5 directors a
slot, the default simnet slot of 8 s), run 3 slots and record whether 3
consecutive slots committed with every invariant kept, the wall time, peak
memory per node process (RSS, and PSS: the proportional share, since the
torch/CUDA libraries' pages are shared between the processes; with the fork
server, each node's share of the server's too), and CPU seconds per node (the
fork server's spread over the nodes), and the start-up: from the harness's start to the genesis (every
engine loaded; with `--ray`, starting the local Ray instance too). Sizes are
tried in order; the run stops at the first failure or when the next size would
not fit in memory.

    python bench/simnet_scale.py --sizes 5 10 15 20 25
    python bench/simnet_scale.py --no-fork-server --sizes 5 10 15   # each process from nothing
    python bench/simnet_scale.py --ray --sizes 5 10 15 20 25   # each node a Ray actor, local Ray
    python bench/simnet_scale.py --media --sizes 20 --slot-sec 8   # and every node gets every slot's media in time
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import write_json  # noqa: E402

from simnet.harness import Backend, Harness  # noqa: E402
from simnet.processes import Processes  # noqa: E402
from simnet.report import build_report  # noqa: E402
from simnet.scenario import Scenario  # noqa: E402


def consecutive_committed(report) -> int:
    best = run = 0
    for s in report.slots:
        run = run + 1 if s["committed"] else 0
        best = max(best, run)
    return best


def passed(row: dict, args: argparse.Namespace) -> bool:
    committed = row["consecutive_committed"] >= args.slots and row["invariants_ok"]
    return committed and (row["media_everywhere_in_slot"] or not args.media)


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 15, 20, 25])
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--slot-sec", type=float, default=Scenario.model_fields["slot_sec"].default)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "icn" / "tiny"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "simnet_scale.json"))
    parser.add_argument("--ray", action="store_true", help="the Ray backend on a new local instance per size")
    parser.add_argument(
        "--no-fork-server", action="store_true", help="node processes started from nothing, not forked"
    )
    parser.add_argument(
        "--media",
        action="store_true",
        help="a size passes only if every node holds every committed slot's media before that slot ends",
    )
    args = parser.parse_args()
    rows, pss_per_node = [], 0.0
    for n in args.sizes:
        if pss_per_node and n * pss_per_node > 0.9 * mem_available_mb():
            print(
                f"{n} nodes: skipped, about {n * pss_per_node:.0f} MB needed, {mem_available_mb():.0f} MB available"
            )
            break
        sc = Scenario.model_validate(
            {
                "name": f"scale-{n}",
                "nodes": n,
                "slots": args.slots,
                "slot_sec": args.slot_sec,
                "expect": {"media_everywhere": args.media},
            }
        )
        with tempfile.TemporaryDirectory(prefix=f"simnet-scale-{n}-") as out:
            backend: Backend = Processes(Path(args.cache_dir), fork_server=not args.no_fork_server)
            if args.ray:
                from simnet.ray_nodes import RayNodes

                backend = RayNodes(None, cache_dir=args.cache_dir)
            result = Harness(sc, Path(out), cache_dir=Path(args.cache_dir), backend=backend).run()
            report = build_report(result)
        genesis = next(e["t"] for e in result.events if e["event"] == "genesis")
        nodes = report.nodes
        server = report.support.get("fork_server", {"peak_rss_mb": 0.0, "peak_pss_mb": 0.0, "cpu_sec": 0.0})
        # per node: its own peak, plus its share of the fork server's (which holds the shared pages)
        pss_per_node = max(x["peak_pss_mb"] for x in nodes) + server["peak_pss_mb"] / n
        row = {
            "nodes": n,
            "consecutive_committed": consecutive_committed(report),
            "invariants_ok": report.ok,
            "invariants": {name: v["detail"] for name, v in report.invariants.items() if not v["ok"]},
            "wall_sec": report.wall_sec,
            "startup_sec": round(genesis - result.started_at, 1),
            "peak_rss_mb_per_node": max(x["peak_rss_mb"] for x in nodes),
            "peak_pss_mb_per_node": pss_per_node,
            "peak_pss_mb_total": round(sum(x["peak_pss_mb"] for x in nodes) + server["peak_pss_mb"], 1),
            "cpu_sec_per_node": round((sum(x["cpu_sec"] for x in nodes) + server["cpu_sec"]) / n, 1),
            "backend": report.backend,
            "fork_server": server if report.support else None,
            "media_nodes_per_slot": [len(s["media_at_sec"]) for s in report.slots],
            # nodes holding a committed slot's media before that slot ended
            "media_in_slot_per_slot": [
                sum(1 for t in s["media_at_sec"].values() if t is not None and t <= args.slot_sec)
                for s in report.slots
                if s["committed"]
            ],
            "certificate_at_sec": [s["certificate_at_sec"] for s in report.slots],
        }
        row["media_everywhere_in_slot"] = len(row["media_in_slot_per_slot"]) == len(report.slots) and all(
            m == n for m in row["media_in_slot_per_slot"]
        )
        rows.append(row)
        print(
            f"{n:>3} nodes: {row['consecutive_committed']} consecutive slots committed, invariants "
            f"{'ok' if report.ok else 'BROKEN'}, wall {row['wall_sec']:.0f} s (start-up {row['startup_sec']:.0f} s), peak per node RSS "
            f"{row['peak_rss_mb_per_node']:.0f} MB / PSS {pss_per_node:.0f} MB (total PSS {row['peak_pss_mb_total']:.0f} MB), "
            f"CPU {row['cpu_sec_per_node']:.0f} s per node, media within the slot on "
            f"{row['media_in_slot_per_slot']} nodes"
        )
        if not passed(row, args):
            break
    passing = [r["nodes"] for r in rows if passed(r, args)]
    largest = max(passing, default=None)
    print(
        f"\nlargest node count committing {args.slots} consecutive slots at {args.slot_sec:g} s slots: {largest}"
    )
    write_json(
        {
            "machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "memory_available_mb": round(mem_available_mb()),
            },
            "config": vars(args),
            "largest_passing": largest,
            "results": rows,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
