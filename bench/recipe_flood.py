"""Benchmark: a flood of valid recipes against one node, and the node's memory meanwhile.

Starts `icn-node init` + `icn-node run` (tiny CPU engine, one validator) as a
process, with the recipe rate limit raised so that only the queue's own bound
stops the flood, then POSTs `--recipes` distinct valid recipes to the operator
face (loopback, no token) over one keep-alive connection. Every `--every`
recipes it reads the node's resident memory (VmRSS, /proc) and counts the
answers (202 queued, 429 refused). The flood must leave memory flat once the
queue is full: each accepted recipe is also published on gossip, so the
figure covers the gossip layer's caches too.

    python bench/recipe_flood.py [--recipes 40000] [--every 5000] [--json bench/results/recipe_flood.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record_header, start_cli_node, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", type=int, default=40_000)
    parser.add_argument("--every", type=int, default=5_000)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "recipe_flood.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="icn-recipe-flood-"))
    log = open(work / "run.log", "w")  # noqa: SIM115 - handed to the process
    unlimited = {"recipes_per_minute = 60": "recipes_per_minute = 100000"}  # only the queue's bound stops it
    node = start_cli_node(work, ["--start-in", "15"], unlimited, log)
    limit = int((work / "node.toml").read_text().split("recipe_queue = ")[1].split()[0])
    rows = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen("http://127.0.0.1:9464/status", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        time.sleep(5)  # the engine is loaded and the first slot under way
        codes: dict[int, int] = {}
        rows.append({"sent": 0, "rss_mib": round(rss_mib(node.pid), 1), "codes": {}})
        conn = http.client.HTTPConnection("127.0.0.1", 9464, timeout=10)
        started = time.monotonic()
        for i in range(1, args.recipes + 1):
            body = json.dumps(
                {
                    "audio_track": {"script": f"Bulletin {i}: the weather, sideways.", "voice_id": "morty"},
                    "visual_track": {"prompt": f"weather map number {i}"},
                }
            )
            try:
                conn.request("POST", "/recipes", body, {"content-type": "application/json"})
                response = conn.getresponse()
                response.read()
                codes[response.status] = codes.get(response.status, 0) + 1
            except (OSError, http.client.HTTPException):  # the server closed a kept-alive connection
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", 9464, timeout=10)
                codes[0] = codes.get(0, 0) + 1
            if i % args.every == 0:
                rows.append({"sent": i, "rss_mib": round(rss_mib(node.pid), 1), "codes": dict(codes)})
                print(rows[-1], flush=True)
        elapsed = time.monotonic() - started
        time.sleep(10)
        rows.append({"sent": args.recipes, "after_10_s": True, "rss_mib": round(rss_mib(node.pid), 1)})
        with urllib.request.urlopen("http://127.0.0.1:9464/status", timeout=5) as r:
            pending = json.loads(r.read())["pending_recipes"]
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
        log.close()
    print(f"| sent | node RSS MiB | 202 | 429 | other |  (queue limit {limit}; {elapsed:.0f} s)")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        c = row.get("codes", {})
        other = sum(v for k, v in c.items() if k not in (202, 429))
        print(f"| {row['sent']} | {row['rss_mib']} | {c.get(202, '')} | {c.get(429, '')} | {other} |")
    print(f"pending recipes at the end: {pending}")
    record = {
        **record_header("recipe_flood"),
        "queue_limit": limit,
        "seconds": round(elapsed, 1),
        "rows": rows,
        "pending_at_end": pending,
    }
    write_json(record, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
