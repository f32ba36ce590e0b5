"""Run a scenario: start one OS process per node, play the fault timeline, stop everything, collect.

The harness is the only owner of the processes it starts: whatever happens
(an exception, Ctrl-C, a failed assertion in a caller), `run` ends with every
process it started stopped: SIGCONT for paused ones, SIGINT for a clean
shutdown, SIGKILL for any that outlive the grace period.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from simnet import control
from simnet.layout import Layout, build, set_genesis
from simnet.scenario import FaultEvent, RecipeSubmission, Scenario

log = logging.getLogger(__name__)

GENESIS_DELAY_SEC = 3.0  # from "every engine is ready" to slot 0: time to open hosts and connect
ENGINE_READY_TIMEOUT_SEC = 900.0


def stop_grace(n: int) -> float:
    """How long a clean shutdown may take: n processes share the cores while they close."""
    return 10.0 + 1.0 * n


@dataclass
class NodeProcess:
    index: int
    behaviour: str | None
    proc: subprocess.Popen | None = None
    starts: int = 0
    killed_by_scenario: bool = False
    paused: bool = False
    exit_codes: list[int] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0
    cpu_sec: float = 0.0


@dataclass
class RunResult:
    layout: Layout
    processes: list[NodeProcess]
    started_at: float
    ended_at: float
    events: list[dict]


class Harness:
    def __init__(self, scenario: Scenario, out_dir: Path, *, cache_dir: Path | None = None) -> None:
        self.scenario = scenario
        self.out = Path(out_dir)
        self.cache_dir = cache_dir or Path.home() / ".cache" / "icn" / "tiny"
        self.procs = [NodeProcess(i, scenario.byzantine.get(i)) for i in range(scenario.nodes)]
        self.links: dict[tuple[int, int], dict] = {}
        self.events: list[dict] = []
        self.layout: Layout | None = None

    # -- the run ----------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        sc = self.scenario
        started = time.time()
        self.layout = build(sc, self.out, 0.0, self.cache_dir)
        try:
            for p in self.procs:
                self._start(p)
            self._wait_for_engines()
            genesis = time.time() + GENESIS_DELAY_SEC
            set_genesis(self.layout, genesis)
            for files in self.layout.nodes:
                files.go.write_text(str(genesis))
            self._event("genesis", list(range(sc.nodes)), genesis_time=round(genesis, 3))
            viewer = f"http://127.0.0.1:{self.layout.nodes[0].public_port}/"
            print(f"watch the channel while it runs: {viewer} (node 0's viewer)", flush=True)
            timeline = sorted(
                [(genesis + f.at_slot * sc.slot_sec, "fault", f) for f in sc.faults]
                + [(genesis + r.at_slot * sc.slot_sec, "recipe", r) for r in sc.recipes],
                key=lambda e: e[0],
            )
            # the last slot's media must arrive before it ends; a second of slack for the last writes
            end = genesis + sc.slots * sc.slot_sec + 1.0
            for at, kind, what in timeline:
                self._wait_until(at)
                self._fault(what) if kind == "fault" else self._submit(what)
            self._wait_until(end)
        finally:
            self._stop_all()
        return RunResult(self.layout, self.procs, started, time.time(), self.events)

    def _wait_for_engines(self) -> None:
        deadline = time.time() + ENGINE_READY_TIMEOUT_SEC
        while not all(f.engine_ready.exists() for f in self.layout.nodes):
            dead = [p.index for p in self.procs if p.proc is not None and p.proc.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"node processes {dead} exited while loading their engines (see their logs)"
                )
            if time.time() > deadline:
                raise RuntimeError(f"node engines not ready after {ENGINE_READY_TIMEOUT_SEC:.0f} s")
            self._sample()
            time.sleep(0.2)

    def _wait_until(self, t: float) -> None:
        while (left := t - time.time()) > 0:
            self._sample()
            time.sleep(min(left, 0.5))

    def _sample(self) -> None:
        """Track each live process's peak memory (RSS and proportional share) and CPU time."""
        for p in self.procs:
            if p.proc is None or p.proc.poll() is not None:
                continue
            try:
                rollup = Path(f"/proc/{p.proc.pid}/smaps_rollup").read_text()
                fields = {
                    ln.split(":")[0]: int(ln.split()[1])
                    for ln in rollup.splitlines()[1:]
                    if ln.endswith("kB")
                }
                p.peak_rss_mb = max(p.peak_rss_mb, fields.get("Rss", 0) / 1024)
                p.peak_pss_mb = max(p.peak_pss_mb, fields.get("Pss", 0) / 1024)
                stat = Path(f"/proc/{p.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                p.cpu_sec = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError, IndexError):
                continue

    # -- processes ----------------------------------------------------------------------------------------
    def _start(self, p: NodeProcess) -> None:
        files = self.layout.nodes[p.index]
        args = [sys.executable, "-m", "simnet.worker", str(files.config), "--control", str(files.control)]
        if p.behaviour:
            args += ["--behaviour", p.behaviour]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        log_file = open(files.config.with_name(f"log-{p.starts}.jsonl"), "w")  # noqa: SIM115 - owned by the process
        p.proc = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log_file.close()
        p.starts += 1
        p.killed_by_scenario = False
        self._event("start", [p.index])

    def _signal(self, p: NodeProcess, sig: signal.Signals) -> None:
        if p.proc is not None and p.proc.poll() is None:
            os.kill(p.proc.pid, sig)

    def _stop_all(self) -> None:
        for p in self.procs:
            if p.paused:
                self._signal(p, signal.SIGCONT)
                p.paused = False
            self._signal(p, signal.SIGINT)
        stopped_at = time.time()
        deadline = stopped_at + stop_grace(len(self.procs))
        self._event("stop", [p.index for p in self.procs], grace_sec=stop_grace(len(self.procs)))
        for p in self.procs:
            if p.proc is None:
                continue
            try:
                p.proc.wait(timeout=max(0.1, deadline - time.time()))
                self._event(
                    "exited", [p.index], code=p.proc.returncode, after_sec=round(time.time() - stopped_at, 2)
                )
            except subprocess.TimeoutExpired:
                self._signal(p, signal.SIGKILL)
                p.proc.wait()
                self._event("killed after the grace period", [p.index])
            p.exit_codes.append(p.proc.returncode)

    # -- the timeline -----------------------------------------------------------------------------------
    def _fault(self, f: FaultEvent) -> None:
        peers = f.peers or tuple(i for i in range(self.scenario.nodes) if i not in f.nodes)
        if f.action == "crash":
            for i in f.nodes:
                p = self.procs[i]
                self._signal(p, signal.SIGKILL)
                if p.proc is not None:
                    p.proc.wait()
                    p.exit_codes.append(p.proc.returncode)
                p.killed_by_scenario = True
        elif f.action == "restart":
            for i in f.nodes:
                self._start(self.procs[i])
        elif f.action in ("pause", "resume"):
            for i in f.nodes:
                self._signal(self.procs[i], signal.SIGSTOP if f.action == "pause" else signal.SIGCONT)
                self.procs[i].paused = f.action == "pause"
        elif f.action == "heal":
            for key, link in self.links.items():
                if key[0] in f.nodes or key[1] in f.nodes:
                    link["partitioned"] = False
            self._write_controls()
        else:  # delay, loss, partition: set on every link between `nodes` and `peers`
            for a in f.nodes:
                for b in peers:
                    link = self.links.setdefault(
                        (min(a, b), max(a, b)), {"delay_sec": 0.0, "loss": 0.0, "partitioned": False}
                    )
                    if f.action == "partition":
                        link["partitioned"] = True
                    elif f.action == "delay":
                        link["delay_sec"] = f.delay_sec
                    else:
                        link["loss"] = f.loss
            self._write_controls()
        self._event(
            f.action, list(f.nodes), peers=list(peers) if f.action in ("delay", "loss", "partition") else None
        )

    def _write_controls(self) -> None:
        nodes = self.layout.nodes
        for files in nodes:
            links = {}
            for (a, b), link in self.links.items():
                if files.index in (a, b):
                    other = b if files.index == a else a
                    links[nodes[other].peer_id] = dict(link)
            control.write_links(files.control, links)

    def _submit(self, r: RecipeSubmission) -> None:
        body = json.dumps(
            {
                "audio_track": {"script": r.script, "voice_id": r.voice_id},
                "visual_track": {"prompt": r.prompt},
            }
        ).encode()
        url = f"http://127.0.0.1:{self.layout.nodes[r.node].http_port}/recipes"
        try:
            req = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=5) as response:
                ok = response.status == 202
        except OSError as exc:
            log.warning("recipe submission to node %d failed: %s", r.node, exc)
            ok = False
        self._event("recipe", [r.node], accepted=ok)

    def _event(self, what: str, nodes: list[int], **extra: object) -> None:
        entry = {"t": round(time.time(), 3), "event": what, "nodes": nodes}
        entry.update({k: v for k, v in extra.items() if v is not None})
        self.events.append(entry)
        log.info("simnet: %s", entry)
