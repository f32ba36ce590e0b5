"""Benchmark: the Twins harness over many seeded executions (issue 23's 100,000-execution run).

Runs `tests/consensus/twins.py` for seeds [start, start + executions) in worker
processes and counts, per check, the executions that violated it, plus
decisions, restarts and the rounds reached. Every violation is listed with its
seed, which reproduces it alone: `run(TwinsScenario.from_seed(SEED))`.

    python bench/twins.py [--executions 100000] [--start 0] [--workers N] [--json bench/results/twins.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.consensus.twins import TwinsScenario, run  # noqa: E402

CHUNK = 500


def _chunk(bounds: tuple[int, int]) -> dict:
    counts: collections.Counter[str] = collections.Counter()
    found: list[tuple[int, str]] = []
    for seed in range(*bounds):
        out = run(TwinsScenario.from_seed(seed))
        counts["executions"] += 1
        counts["all_honest_decided"] += len(out.decisions) == 4
        counts["restarts"] += out.restarts
        counts["starved"] += out.scenario.starve_decisions
        counts[f"max_round_{min(out.max_round, 10)}"] += 1
        for v in out.violations:
            counts["violation:" + v.split(":")[0].split(" ")[0]] += 1
            found.append((seed, v[:300]))
    return {"counts": counts, "found": found}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "twins.json")
    args = parser.parse_args()
    bounds = [
        (s, min(s + CHUNK, args.start + args.executions))
        for s in range(args.start, args.start + args.executions, CHUNK)
    ]
    started = time.perf_counter()
    total: collections.Counter[str] = collections.Counter()
    found: list[tuple[int, str]] = []
    with multiprocessing.Pool(args.workers) as pool:
        for part in pool.imap_unordered(_chunk, bounds):
            total.update(part["counts"])
            found += part["found"]
    wall = time.perf_counter() - started
    violations = {k: v for k, v in total.items() if k.startswith("violation:")}
    print("| seeds | executions | violations | all honest decided | restarts | wall s | workers |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.start}..{args.start + args.executions - 1} | {total['executions']} | {sum(violations.values())} "
        f"| {total['all_honest_decided']} | {total['restarts']} | {wall:.0f} | {args.workers} |"
    )
    for seed, text in sorted(found)[:20]:
        print(f"seed {seed}: {text}")
    record = {
        "bench": "twins",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "command": " ".join(sys.argv),
        "seeds": [args.start, args.start + args.executions],
        "counts": dict(sorted(total.items())),
        "violations": found[:1000],
        "wall_sec": round(wall, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
