"""Gossip latency, director all-to-all and media spread between real py-libp2p hosts on loopback.

Three measurements per network size, every node a real host (Noise, yamux,
gossipsub with this project's workarounds and validators):
  latency     a stream of ~3 KB signed announcements, published in turn by
              every node; latency = receive time - publish time, per receiver
  all-to-all  5 directors publish one ~5 KB announcement each at the same
              instant; time until every director holds the other four
  media       node 0 holds a 5 MB file and gossips that it has it; every
              node fetches it from the providers it has heard of and, once
              verified, announces itself if it knows fewer than
              `announce_below_holders` others that have it (as a node does);
              time until the last node has it

Sizes up to --inprocess-max run as hosts in one trio process; larger ones as
one OS process per node (the libp2p stack costs milliseconds of CPU per
message, so one process cannot carry 20 nodes on 2 cores).

    python bench/network_loopback.py                  # 5 and 10 in-process, 20 as processes
    python bench/network_loopback.py --sizes 3 --messages 10 --media-mb 1   # CI smoke
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import percentile, write_json  # noqa: E402

from consensus.messages import Announce, embedding_to_bytes  # noqa: E402
from network.gossip import Gossip  # noqa: E402
from network.host import open_host  # noqa: E402
from network.identity import Identity  # noqa: E402
from network.media.store import MediaStore  # noqa: E402
from network.media.transfer import MediaService  # noqa: E402
from network.settings import GossipSettings, MediaSettings, NetworkSettings  # noqa: E402
from network.topics import Topic  # noqa: E402
from simnet.layout import free_ports  # noqa: E402

CHAIN = hashlib.sha256(b"icn-network-bench").digest()
SLOT = 100
DIRECTORS = 5


def identity(i: int) -> Identity:
    return Identity(hashlib.sha256(b"bench-node-%d" % i).digest())


class Context:
    def __init__(self, n: int) -> None:
        self.chain_id = CHAIN
        self.keys = tuple(identity(i).public_key for i in range(n))

    def current_slot(self) -> int:
        return SLOT

    def directors(self, slot: int) -> tuple[bytes, ...]:
        return self.keys


def announcement(i: int, seq: int, dim: int) -> bytes:
    """A signed announce of about 8*dim bytes, unique per (node, seq)."""
    vec = [float((seq * 7919 + i * 104729 + k) % 1000) / 1000 for k in range(dim)]
    tag = hashlib.sha256(b"%d/%d" % (i, seq)).digest()
    return (
        Announce(SLOT, tag, embedding_to_bytes(vec), embedding_to_bytes(vec[::-1]), True, tag)
        .signed_by(identity(i).signer, CHAIN)
        .encode()
    )


def neighbours(i: int, n: int) -> list[int]:
    """A ring with chords: node i dials i+1..i+3, so every node has about 6 peers."""
    return sorted({(i + k) % n for k in (1, 2, 3)} - {i})


def media_bytes(mb: float) -> bytes:
    import random

    return random.Random(5).randbytes(int(mb * 1024 * 1024))


async def run_node(i: int, plan: dict, ports: list[int], out: dict) -> None:
    """One node's part in every phase; records what it saw in `out`."""
    n = plan["n"]
    cfg = NetworkSettings(
        listen=(f"/ip4/127.0.0.1/tcp/{ports[i]}",),
        gossip=GossipSettings(heartbeat_sec=1.0, degree=6, degree_low=4, degree_high=12),
        media=MediaSettings(**plan["media_settings"]),
    )
    out.update(index=i, received={}, published={}, media_done=None, media_from={}, bytes_served=0)
    async with open_host(identity(i), cfg) as host:
        gossip = Gossip(host, Context(n))
        await gossip.start()
        media = MediaService(host, MediaStore(Path(plan["dir"]) / f"store{i}"))
        for j in neighbours(i, n):
            addr = f"/ip4/127.0.0.1/tcp/{ports[j]}/p2p/{identity(j).peer_id}"
            with trio.move_on_after(plan["t0"] - time.time()):
                while not host.is_connected(identity(j).peer_id):
                    try:
                        await host.connect(addr, keep=True)
                    except Exception:
                        await trio.sleep(0.2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_record_votes, gossip, out)
            nursery.start_soon(_follow_media, gossip, media, host, out)
            await _sleep_until(plan["t_quiet"])
            out["cpu"] = {"quiet": time.process_time()}
            await _sleep_until(plan["t0"])
            out["cpu"]["t0"] = time.process_time()
            out["ready_peers"] = len(host.connected_peers())
            for k in range(plan["messages"]):  # phase 1: latency
                if k % n == i:
                    await _sleep_until(plan["t0"] + k * plan["interval"])
                    data = announcement(i, k, 384)
                    out["published"][hashlib.sha256(data).hexdigest()] = ["latency", time.time()]
                    await gossip.publish(Topic.VOTES, data)
            await _sleep_until(plan["t_latency_end"])
            out["cpu"]["latency_end"] = time.process_time()
            if i < min(DIRECTORS, n):  # phase 2: all-to-all among the directors
                await _sleep_until(plan["t1"])
                data = announcement(i, 10**6, 640)
                out["published"][hashlib.sha256(data).hexdigest()] = ["all_to_all", time.time()]
                out["a2a_size"] = len(data)
                await gossip.publish(Topic.VOTES, data)
            if i == 0:  # phase 3: media
                cid = media.store.add_bytes(media_bytes(plan["media_mb"]))
                await _sleep_until(plan["t2"])
                await gossip.publish(Topic.MEDIA_HAVE, media.have_message(cid))
            await _sleep_until(plan["t2"])
            out["cpu"]["t2"] = time.process_time()
            await _sleep_until(plan["t_end"])
            out["cpu"]["end"] = time.process_time()
            out["bytes_served"] = media.server.stats.bytes_served
            out["media_requests"] = dict(media.server.stats.requests)
            out["have_pushes"] = media.server.stats.have_pushes
            nursery.cancel_scope.cancel()


async def _sleep_until(t: float) -> None:
    await trio.sleep(max(0.0, t - time.time()))


async def _record_votes(gossip: Gossip, out: dict) -> None:
    async for msg in gossip.inbox(Topic.VOTES):
        out["received"][hashlib.sha256(msg.data).hexdigest()] = time.time()


async def _follow_media(gossip: Gossip, media: MediaService, host, out: dict) -> None:
    started = False
    async with trio.open_nursery() as nursery:
        async for msg in gossip.inbox(Topic.MEDIA_HAVE):
            media.add_provider(msg.message.cid, msg.origin, msg.message.addrs)
            if not started and not media.store.has(msg.message.cid):
                started = True
                nursery.start_soon(_fetch, gossip, media, msg.message.cid, out)


async def _fetch(gossip: Gossip, media: MediaService, cid: bytes, out: dict) -> None:
    for _attempt in range(5):
        begun = time.time()
        try:
            report = await media.fetch(cid)
            break
        except Exception as exc:  # recorded; retried with the providers learnt meanwhile
            out.setdefault("media_errors", []).append(f"{type(exc).__name__}: {exc}"[:300])
            await trio.sleep(0.5)
    else:
        return
    out["media_done"] = time.time()
    out["media_from"] = {str(p): b for p, b in report.bytes_from.items()}
    out["media_duplicate_bytes"] = report.duplicate_bytes
    out["media_failures"] = {str(p): why for p, why in report.failures.items()}
    out["media_events"] = [(round(begun + at, 4), peer, what) for at, peer, what in report.events]
    out["media_announced"] = media.worth_announcing(cid)  # as a node decides (node.propagation)
    if out["media_announced"]:
        await gossip.publish(Topic.MEDIA_HAVE, media.have_message(cid))


def make_plan(n: int, args: argparse.Namespace, workdir: str, startup: float) -> dict:
    """Phase times. Each node's CPU time is read at the marks: a quiet window (connected, nothing
    sent) as long as the latency phase comes first, so gossip CPU per message is net of idle cost."""
    latency_sec = args.messages * args.interval + 1.0
    t0 = time.time() + startup + latency_sec
    t1 = t0 + latency_sec + 1.0
    t2 = t1 + 3.0
    return dict(
        n=n, dir=workdir, messages=args.messages, interval=args.interval, media_mb=args.media_mb,
        media_settings=dict(args.media_setting),
        t_quiet=t0 - latency_sec, t0=t0, t_latency_end=t0 + latency_sec, t1=t1, t2=t2,
        t_end=t2 + args.media_timeout,
    )  # fmt: skip


def run_in_process(n: int, args: argparse.Namespace, holder: dict) -> list[dict]:
    with tempfile.TemporaryDirectory() as workdir:
        plan, ports = make_plan(n, args, workdir, startup=3.0 + 0.3 * n), free_ports(n)
        holder["plan"] = plan
        outs = [{} for _ in range(n)]

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(run_node, i, plan, ports, outs[i])

        trio.run(main)
        return outs


def run_as_processes(n: int, args: argparse.Namespace, holder: dict) -> list[dict]:
    with tempfile.TemporaryDirectory() as workdir:
        plan, ports = make_plan(n, args, workdir, startup=8.0 + 1.2 * n), free_ports(n)
        holder["plan"] = plan
        (Path(workdir) / "plan.json").write_text(json.dumps({"plan": plan, "ports": ports}))
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", workdir, str(i)]) for i in range(n)]
        try:
            for p in procs:
                p.wait(timeout=plan["t_end"] - time.time() + 60)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        outs = []
        for i in range(n):
            f = Path(workdir) / f"out{i}.json"
            outs.append(json.loads(f.read_text()) if f.exists() else {"index": i, "failed": True})
        return outs


def worker(workdir: str, i: int) -> None:
    spec = json.loads((Path(workdir) / "plan.json").read_text())
    out: dict = {}
    trio.run(run_node, i, spec["plan"], spec["ports"], out)
    (Path(workdir) / f"out{i}.json").write_text(json.dumps(out))


def summarise(n: int, mode: str, outs: list[dict], plan: dict) -> dict:
    published = {}  # message hash -> (kind, publisher, time)
    for o in outs:
        for h, (kind, t) in o.get("published", {}).items():
            published[h] = (kind, o["index"], t)
    latencies, missing = [], 0
    for o in outs:
        for h, (kind, publisher, sent) in published.items():
            if kind != "latency" or publisher == o.get("index"):
                continue
            if h in o.get("received", {}):
                latencies.append((o["received"][h] - sent) * 1000)
            else:
                missing += 1
    directors = min(DIRECTORS, n)
    a2a = {h: (p, t) for h, (kind, p, t) in published.items() if kind == "all_to_all"}
    a2a_done = []
    for o in outs[:directors]:
        others = [h for h, (p, _) in a2a.items() if p != o.get("index")]
        if len(others) == directors - 1 and all(h in o.get("received", {}) for h in others):
            a2a_done.append(max(o["received"][h] for h in others))
    a2a_ms = None
    if len(a2a) == directors and len(a2a_done) == directors:
        a2a_ms = round((max(a2a_done) - min(t for _, t in a2a.values())) * 1000, 1)
    media_done = [o["media_done"] for o in outs[1:] if o.get("media_done")]
    last = max(outs[1:], key=lambda o: o.get("media_done") or math.inf)
    index_of = {str(identity(i).peer_id): i for i in range(n)}
    served = [o.get("bytes_served", 0) for o in outs]
    cpu = [o["cpu"] for o in outs if len(o.get("cpu", {})) == 5]
    if mode == "one process":  # every host read the same process's clock: count it once
        cpu = cpu[:1]
    processes = 1 if mode == "one process" else n
    quiet = sum(c["t0"] - c["quiet"] for c in cpu)  # the same length as the latency phase
    latency_cpu = sum(c["latency_end"] - c["t0"] for c in cpu)
    media_window = plan["t_end"] - plan["t2"]
    media_cpu = sum(c["end"] - c["t2"] for c in cpu) - quiet * media_window / (plan["t0"] - plan["t_quiet"])
    return {
        "nodes": n,
        "mode": mode,
        "gossip_latency_ms": {
            "p50": round(percentile(latencies, 50), 2) if latencies else None,
            "p99": round(percentile(latencies, 99), 2) if latencies else None,
            "deliveries": len(latencies),
            "missing": missing,
        },
        "gossip_cpu_ms_per_delivery": round((latency_cpu - quiet) * 1000 / len(latencies), 2)
        if latencies and len(cpu) == processes
        else None,
        "idle_cpu_per_node_pct": round(quiet * 100 / (plan["t0"] - plan["t_quiet"]) / n, 2) if cpu else None,
        "all_to_all_directors": directors,
        "all_to_all_ms": a2a_ms,
        "all_to_all_message_bytes": outs[0].get("a2a_size"),
        "media_mb": plan["media_mb"],
        "media_spread_sec": round(max(media_done) - plan["t2"], 3) if len(media_done) == n - 1 else None,
        "media_nodes_done": len(media_done),
        "media_cpu_sec_all_nodes": round(media_cpu, 2) if len(cpu) == processes else None,
        "media_done_sec": sorted(round(t - plan["t2"], 3) for t in media_done),
        "bytes_served_by_node": [o.get("bytes_served", 0) for o in outs],
        "largest_upload_share": round(max(served) / sum(served), 3) if sum(served) else None,
        "duplicate_bytes": sum(o.get("media_duplicate_bytes", 0) for o in outs),
        "media_requests_served": dict(sum((Counter(o.get("media_requests", {})) for o in outs), Counter())),
        "have_pushes": sum(o.get("have_pushes", 0) for o in outs),
        "media_announcements": 1 + sum(1 for o in outs if o.get("media_announced")),  # node 0 and fetchers
        "media_errors": {o.get("index"): o["media_errors"] for o in outs if o.get("media_errors")},
        # what the last fetcher's download met: a tail has a cause (a busy or slow peer, a dial)
        "media_last_fetcher": {
            "index": last.get("index"),
            "bytes_from": {index_of.get(p, p): b for p, b in last.get("media_from", {}).items()},
            "failures": {index_of.get(p, p): why for p, why in last.get("media_failures", {}).items()},
            # its download's story: (seconds since the media phase began, peer index, what happened)
            "events": [
                (round(t - plan["t2"], 3), index_of.get(p, p), what)
                for t, p, what in last.get("media_events", [])
            ],
        },
        "failed_nodes": [o.get("index", i) for i, o in enumerate(outs) if o.get("failed")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--inprocess-max", type=int, default=10)
    parser.add_argument("--messages", type=int, default=60)
    # A slot carries ~20 director messages in 45 s; 4 per second is well above that and below
    # the point where 10 hosts sharing one process on 2 cores run out of CPU.
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between latency messages")
    parser.add_argument("--media-mb", type=float, default=5.0)
    parser.add_argument("--media-timeout", type=float, default=30.0)
    parser.add_argument(
        "--media-setting",
        action="append",
        default=[],
        type=lambda kv: (kv.split("=")[0], float(kv.split("=")[1])),
        metavar="KEY=VALUE",
        help="a [network.media] setting other than its default, e.g. max_uploads=8 (repeatable)",
    )
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "network_loopback.json"))
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.CRITICAL)  # dials to nodes still starting are expected to fail
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return
    rows = []
    for n in args.sizes:
        mode = "one process" if n <= args.inprocess_max else "process per node"
        runner = run_in_process if n <= args.inprocess_max else run_as_processes
        plan_holder: dict = {}
        outs = runner(n, args, plan_holder)
        rows.append(summarise(n, mode, outs, plan_holder["plan"]))
    print(f"{'nodes':>5} {'mode':<17} {'p50 ms':>8} {'p99 ms':>8} {'missing':>7} {'5-dir a2a ms':>12} "
          f"{'media s':>8} {'media done':>10}")  # fmt: skip
    for r in rows:
        lat = r["gossip_latency_ms"]
        print(
            f"{r['nodes']:>5} {r['mode']:<17} {lat['p50'] or float('nan'):>8.2f} {lat['p99'] or float('nan'):>8.2f} "
            f"{lat['missing']:>7} {r['all_to_all_ms'] or float('nan'):>12.1f} "
            f"{r['media_spread_sec'] or float('nan'):>8.2f} {r['media_nodes_done']:>4}/{r['nodes'] - 1}"
        )
    write_json(
        {
            "machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "config": {k: v for k, v in vars(args).items() if k != "worker"},
            "results": rows,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
