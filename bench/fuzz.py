"""Benchmark: every door fuzzed long (the CI run is `tests/test_fuzz.py`, short).

For each target of `tests/fuzz_targets.py`, runs hypothesis for `--examples`
generated inputs and records the inputs executed, the findings (the shrunk input
and the error), and the time taken, as a table and JSON.

    python bench/fuzz.py [--examples 20000] [--only recipe,gossip] [--json bench/results/fuzz.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.fuzz_targets import TARGETS  # noqa: E402


def fuzz(target, examples: int) -> dict:
    executed = 0

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def door(value) -> None:
        nonlocal executed
        executed += 1
        if target.needs_dir:
            with tempfile.TemporaryDirectory() as folder:
                target.run(value, folder)
        else:
            target.run(value)

    started = time.perf_counter()
    finding = None
    try:
        door()
    except Exception:
        finding = traceback.format_exc(limit=6)[-3000:]
    return {
        "target": target.name,
        "executions": executed,
        "finding": finding,
        "sec": round(time.perf_counter() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--only", default="")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "fuzz.json")
    args = parser.parse_args()
    chosen = [t for t in TARGETS if not args.only or t.name in args.only.split(",")]
    rows = [fuzz(t, args.examples) for t in chosen]
    print("| door | executions | findings | seconds |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['target']} | {r['executions']} | {0 if r['finding'] is None else 1} | {r['sec']} |")
    for r in rows:
        if r["finding"]:
            print(f"\n{r['target']}:\n{r['finding']}")
    record = {
        "bench": "fuzz",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "command": " ".join(sys.argv),
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 1 if any(r["finding"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
