"""Benchmark: the adversarial sweep of tests/consensus/ over many seeded executions (issue 20, item 5).

Runs `tests/consensus/harness.py` (one slot's agreement among 5 directors, at
most one Byzantine: equivocate, different_output, missing_candidate, silent,
replay; delays, drops, duplicates and reordering from the seed) for seeds
[start, start + executions) in worker processes, and counts the executions
that violated safety, liveness or evidence (`harness.judge`, the rules the CI
sweep asserts over its 2,000 seeds). The Twins-style executions (a director's
key run as two twins, partitions, crash-restarts) are `bench/twins.py`.

    python bench/consensus_sweep.py [--executions 10000] [--start 0] [--workers N] [--json PATH]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import record_header, write_json  # noqa: E402
from tests.consensus.harness import Scenario, judge, run  # noqa: E402

CHUNK = 250
KINDS = ("safety", "liveness", "evidence")


def _chunk(bounds: tuple[int, int]) -> dict:
    counts: collections.Counter[str] = collections.Counter()
    found: list[tuple[int, str, str]] = []
    for seed in range(*bounds):
        sc = Scenario.from_seed(seed)
        out = run(sc)
        counts["executions"] += 1
        counts["timely"] += sc.timely
        counts[f"byzantine:{sc.byzantine or 'none'}"] += 1
        counts["some_decided"] += bool(out.decisions)
        counts["evidence_reports"] += sum(len(e) for e in out.evidence.values())
        for kind, problems in judge(out).items():
            counts[f"violations:{kind}"] += bool(problems)
            found += [(seed, kind, p) for p in problems]
    return {"counts": counts, "found": found}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "consensus_sweep.json")
    args = parser.parse_args()
    if args.executions < 1 or args.workers < 1:
        parser.error("--executions and --workers must be at least 1")
    end = args.start + args.executions
    bounds = [(s, min(s + CHUNK, end)) for s in range(args.start, end, CHUNK)]
    started = time.perf_counter()
    total: collections.Counter[str] = collections.Counter()
    found: list[tuple[int, str, str]] = []
    with multiprocessing.Pool(args.workers) as pool:
        for part in pool.imap_unordered(_chunk, bounds):
            total.update(part["counts"])
            found += part["found"]
    wall = time.perf_counter() - started
    print("| seeds | executions | timely | safety | liveness | evidence | wall s | workers |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.start}..{end - 1} | {total['executions']} | {total['timely']} | "
        + " | ".join(str(total[f"violations:{k}"]) for k in KINDS)
        + f" | {wall:.0f} | {args.workers} |"
    )
    for seed, kind, text in sorted(found)[:20]:
        print(f"seed {seed}: {kind}: {text}")
    write_json(
        {
            **record_header("consensus_sweep"),
            "seeds": [args.start, end],
            "workers": args.workers,
            "counts": dict(sorted(total.items())),
            "violations": [list(f) for f in sorted(found)[:1000]],
            "wall_sec": round(wall, 1),
        },
        args.json,
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
