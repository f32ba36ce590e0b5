"""Benchmark: one node's public HTTP face under load, and its slots meanwhile.

Starts `icn-node init` + `icn-node run` (the tiny CPU engine, one validator,
`--slot-sec` slots) as a process, waits for a committed slot, then from this process drives
`--clients` keep-alive connections for `--seconds` each at: GET /status, and
GET of a slot's MP4 in 256 KiB Range requests. Reports requests per second, P50
and P99 latency, and the node's phase deadline misses and slot outcomes before
and during the load (a director serving viewers must still meet its deadlines).
The client shares the machine's cores with the node, so the figures are a
floor for what the node serves, not its ceiling.

    python bench/http_load.py [--clients 16] [--seconds 20] [--slot-sec 8] [--in-process]
        [--client-nice 0] [--json bench/results/http_load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record_header, start_cli_node, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RANGE = 256 * 1024


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        data: bytes = r.read()
        return data


def _metric(text: str, name: str, label: str = "") -> float:
    """The sum of a Prometheus metric's samples whose labels contain `label`."""
    total = 0.0
    for labels, value in re.findall(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M):
        if label in labels:
            total += float(value)
    return total


async def _client(
    port: int, path: str, size: int, until: float, latencies: list[float], errors: list[str]
) -> None:
    """Keep-alive requests until `until`; a connection the server closes (keep-alive limit) is reopened."""
    offset = 0
    while trio.current_time() < until:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        buffer = b""
        async with stream:
            while trio.current_time() < until:
                headers = f"GET {path} HTTP/1.1\r\nHost: bench\r\n"
                if size:
                    end = min(offset + RANGE, size) - 1
                    headers += f"Range: bytes={offset}-{end}\r\n"
                    offset = 0 if end + 1 >= size else end + 1
                started = trio.current_time()
                try:
                    await stream.send_all((headers + "\r\n").encode())
                    while b"\r\n\r\n" not in buffer:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            raise trio.BrokenResourceError("closed by the server")
                        buffer += chunk
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
                    while len(buffer) < length:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            raise trio.BrokenResourceError("closed by the server")
                        buffer += chunk
                except trio.BrokenResourceError:
                    break  # reconnect
                buffer = buffer[length:]
                latencies.append(trio.current_time() - started)
                if int(head.split(b" ")[1]) not in (200, 206):
                    errors.append(head.split(b"\r\n")[0].decode("latin-1"))


async def _load(port: int, path: str, size: int, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[str] = []
    until = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(_client, port, path, size, until, latencies, errors)
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
        "errors": len(errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--slot-sec", type=float, default=8.0, help="the node's slot length (phases scale)")
    parser.add_argument(
        "--in-process", action="store_true", help="serve the public face from the node's own process"
    )
    parser.add_argument(
        "--client-nice", type=int, default=0, help="nice this load client (it stands for viewers elsewhere)"
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "http_load.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="icn-http-load-"))
    log = open(work / "run.log", "w")  # noqa: SIM115 - handed to the process
    edits = {"public_process = true": "public_process = false"} if args.in_process else {}
    node = start_cli_node(work, ["--slot-sec", f"{args.slot_sec:g}", "--start-in", "20"], edits, log)
    os.nice(args.client_nice)  # only now: the node must not inherit it
    base = "http://127.0.0.1:8080"
    try:
        slot = None
        deadline = time.time() + 120
        while slot is None and time.time() < deadline:
            time.sleep(1)
            try:
                held = [s for s in json.loads(_get(base + "/schedule.json"))["slots"] if s.get("held")]
            except OSError:
                continue
            slot = held[0]["slot"] if held else None
        if slot is None:
            raise SystemExit(f"no slot committed; see {work / 'run.log'}")
        print(f"node log: {work / 'run.log'}")
        size = len(_get(f"{base}/slots/{slot}.mp4"))
        before = _get("http://127.0.0.1:9464/metrics").decode()
        results = {}
        for name, path, length in (("status", "/status", 0), ("slot_mp4_range", f"/slots/{slot}.mp4", size)):
            results[name] = trio.run(_load, 8080, path, length, args.clients, args.seconds)
        after = _get("http://127.0.0.1:9464/metrics").decode()
        slots = {
            "deadline_misses_during_load": _metric(after, "icn_phase_deadline_missed_total")
            - _metric(before, "icn_phase_deadline_missed_total"),
            "slots_during_load": _metric(after, "icn_slots_total") - _metric(before, "icn_slots_total"),
            "committed_during_load": _metric(after, "icn_slots_total", 'outcome="committed"')
            - _metric(before, "icn_slots_total", 'outcome="committed"'),
            "mp4_bytes": size,
        }
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
        log.close()
    print(f"| target | clients | requests/s | P50 ms | P99 ms | errors |  ({args.seconds:g} s each)")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {args.clients} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |")
    print(f"slots meanwhile: {slots}")
    record = {
        **record_header("http_load"),
        "slot_sec": args.slot_sec,
        "public_face": "in the node's process" if args.in_process else "own process (niced)",
        "client_nice": args.client_nice,
        "results": results,
        "slots": slots,
    }
    write_json(record, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
