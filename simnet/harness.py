"""Run a scenario: start every node, play the fault timeline, stop everything, collect.

Where the nodes run is a `Backend`: OS processes on this machine
(`simnet.processes`, the default) or Ray actors on a cluster
(`simnet.ray_nodes`). The harness owns the timeline and the record of each
node; the backend owns the processes. Whatever happens (an exception,
Ctrl-C, a failed assertion in a caller), `run` ends with every node stopped:
paused ones resumed, a clean shutdown asked, a kill for any that outlive the
grace period, and the nodes' files brought back for the report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from simnet.layout import Layout, set_genesis
from simnet.scenario import FaultEvent, RecipeSubmission, Scenario

log = logging.getLogger(__name__)

GENESIS_DELAY_SEC = 3.0  # from "every engine is ready" to slot 0: time to open hosts and connect
ENGINE_READY_TIMEOUT_SEC = 900.0
DEFAULT_CACHE = Path.home() / ".cache" / "icn" / "tiny"  # the tiny weights, built once per machine


def stop_grace(n: int) -> float:
    """How long a clean shutdown may take: n processes share the cores while they close."""
    return 10.0 + 1.0 * n


@dataclass
class NodeProcess:
    """What the run did to one node and what it cost, whichever backend ran it."""

    index: int
    behaviour: str | None
    starts: int = 0
    killed_by_scenario: bool = False
    paused: bool = False
    exit_codes: list[int] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0
    cpu_sec: float = 0.0

    def record(self, rss_mb: float, pss_mb: float, cpu_sec: float) -> None:
        """One sample of the node's process: raise the peaks, take its CPU time so far."""
        self.peak_rss_mb, self.peak_pss_mb = max(self.peak_rss_mb, rss_mb), max(self.peak_pss_mb, pss_mb)
        self.cpu_sec = cpu_sec


@dataclass
class RunResult:
    layout: Layout
    processes: list[NodeProcess]
    started_at: float
    ended_at: float
    events: list[dict]
    backend: str = "process"
    support: dict[str, dict[str, float]] = field(default_factory=dict)  # e.g. the fork server's cost


class Backend(Protocol):
    """Where the nodes run. Every method returns promptly: starting a node queues its engine load."""

    name: str

    def prepare(self, scenario: Scenario, out: Path) -> Layout:
        """Place the nodes, and write their keys and configs under `out` (genesis not yet fixed)."""
        ...

    def start(self, p: NodeProcess) -> None:
        """Start node `p` (again, after a kill): it loads its engine, then runs once released."""
        ...

    def loading(self) -> bool:
        """True while an engine is still loading; raises when a node died doing so."""
        ...

    def release(self, genesis: float) -> None:
        """The genesis is fixed in every config: every loaded node starts its host."""
        ...

    def kill(self, p: NodeProcess) -> None:
        """Kill node `p` at once (a crash, as SIGKILL) and record its exit code."""
        ...

    def pause(self, p: NodeProcess, paused: bool) -> None: ...

    def set_links(self, index: int, links: dict[str, dict]) -> None:
        """Node `index`'s link faults, by peer id, from now on (also across its restarts)."""
        ...

    def submit(self, index: int, body: bytes) -> bool: ...

    def sample(self, processes: list[NodeProcess]) -> None:
        """Raise each live node's peak memory and set its CPU time."""
        ...

    def stop(self, processes: list[NodeProcess], grace: float) -> list[tuple[int, str, dict]]:
        """Stop every node (clean shutdown, kill after `grace`), record exit codes; say what happened."""
        ...

    def collect(self) -> None:
        """Bring the nodes' logs and databases into the output folder, for the report."""
        ...

    def support(self) -> dict[str, dict[str, float]]:
        """Peak memory and CPU of what runs beside the nodes on their behalf (a fork server)."""
        ...


class Harness:
    def __init__(
        self,
        scenario: Scenario,
        out_dir: Path,
        *,
        cache_dir: Path | None = None,
        backend: Backend | None = None,
    ) -> None:
        from simnet.processes import Processes

        self.scenario = scenario
        self.out = Path(out_dir)
        self.cache_dir = cache_dir or DEFAULT_CACHE
        self.backend: Backend = backend or Processes(self.cache_dir)
        self.procs = [NodeProcess(i, scenario.byzantine.get(i)) for i in range(scenario.nodes)]
        self.links: dict[tuple[int, int], dict] = {}
        self.events: list[dict] = []
        self.layout: Layout | None = None

    # -- the run ----------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        sc = self.scenario
        started = time.time()
        try:
            self.layout = self.backend.prepare(sc, self.out)
            for p in self.procs:
                self._start(p)
            self._wait_for_engines()
            genesis = time.time() + GENESIS_DELAY_SEC
            set_genesis(self.layout, genesis)
            self.backend.release(genesis)
            self._event("genesis", list(range(sc.nodes)), genesis_time=round(genesis, 3))
            first = self.layout.nodes[0]
            viewer = f"http://{first.host}:{first.public_port}/"
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
            if self.layout is not None:
                self._stop_all()
                self.backend.collect()
        assert self.layout is not None
        return RunResult(
            self.layout,
            self.procs,
            started,
            time.time(),
            self.events,
            self.backend.name,
            self.backend.support(),
        )

    def _wait_for_engines(self) -> None:
        deadline = time.time() + ENGINE_READY_TIMEOUT_SEC
        while self.backend.loading():
            if time.time() > deadline:
                raise RuntimeError(f"node engines not ready after {ENGINE_READY_TIMEOUT_SEC:.0f} s")
            self.backend.sample(self.procs)
            time.sleep(0.2)

    def _wait_until(self, t: float) -> None:
        while (left := t - time.time()) > 0:
            self.backend.sample(self.procs)
            time.sleep(min(left, 0.5))

    # -- nodes ------------------------------------------------------------------------------------------
    def _start(self, p: NodeProcess) -> None:
        self.backend.start(p)
        p.starts += 1
        p.killed_by_scenario = False
        self._event("start", [p.index])

    def _stop_all(self) -> None:
        grace = stop_grace(len(self.procs))
        self._event("stop", [p.index for p in self.procs], grace_sec=grace)
        for index, what, extra in self.backend.stop(self.procs, grace):
            self._event(what, [index], **extra)
        for p in self.procs:
            p.paused = False

    # -- the timeline -----------------------------------------------------------------------------------
    def _fault(self, f: FaultEvent) -> None:
        peers = f.peers or tuple(i for i in range(self.scenario.nodes) if i not in f.nodes)
        if f.action == "crash":
            for i in f.nodes:
                self.backend.kill(self.procs[i])
                self.procs[i].killed_by_scenario = True
        elif f.action == "restart":
            for i in f.nodes:
                self._start(self.procs[i])
        elif f.action in ("pause", "resume"):
            for i in f.nodes:
                self.procs[i].paused = f.action == "pause"
                self.backend.pause(self.procs[i], self.procs[i].paused)
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
        assert self.layout is not None
        nodes = self.layout.nodes
        for files in nodes:
            links = {}
            for (a, b), link in self.links.items():
                if files.index in (a, b):
                    other = b if files.index == a else a
                    links[nodes[other].peer_id] = dict(link)
            self.backend.set_links(files.index, links)

    def _submit(self, r: RecipeSubmission) -> None:
        from simnet.processes import recipe_body

        try:
            ok = self.backend.submit(r.node, recipe_body(r.script, r.voice_id, r.prompt))
        except OSError as exc:
            log.warning("recipe submission to node %d failed: %s", r.node, exc)
            ok = False
        self._event("recipe", [r.node], accepted=ok)

    def _event(self, what: str, nodes: list[int], **extra: object) -> None:
        entry = {"t": round(time.time(), 3), "event": what, "nodes": nodes}
        entry.update({k: v for k, v in extra.items() if v is not None})
        self.events.append(entry)
        log.info("simnet: %s", entry)
