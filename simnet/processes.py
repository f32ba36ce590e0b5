"""The default backend: each node an OS process on this machine.

Node processes are forked from the fork server (`simnet.zygote`: torch imported
and the engine built once, pages shared), or with `fork_server=False` each is
`python -m simnet.worker` started from nothing. The harness tells the backend
what to do (start, kill, pause, set links, stop); it owns the process handles
and the files through which a running worker is steered: `go` (the genesis is
fixed), `engine-ready`, and the control file of link faults (`simnet.control`).
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
from pathlib import Path

from simnet import control
from simnet.harness import NodeProcess
from simnet.layout import Layout, build
from simnet.scenario import Scenario
from simnet.zygote import ForkedProcess, ForkServer

ENGINE_BUILD_TIMEOUT_SEC = 600.0

log = logging.getLogger(__name__)

# one thread of maths per node: N processes share the machine's cores
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def usage(pid: int) -> tuple[float, float, float] | None:
    """(RSS MB, PSS MB, CPU seconds) of a live process, from /proc; None when it is gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        fields = {ln.split(":")[0]: int(ln.split()[1]) for ln in rollup.splitlines()[1:] if ln.endswith("kB")}
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return fields.get("Rss", 0) / 1024, fields.get("Pss", 0) / 1024, cpu


def recipe_body(script: str, voice_id: str, prompt: str) -> bytes:
    """What the harness POSTs to a node's `/recipes`."""
    recipe = {"audio_track": {"script": script, "voice_id": voice_id}, "visual_track": {"prompt": prompt}}
    return json.dumps(recipe).encode()


def post_recipe(http_port: int, body: bytes) -> bool:
    """POST a recipe to the operator face on this machine's loopback; True when it was accepted."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/recipes",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as response:
        return bool(response.status == 202)


class Processes:
    """Node processes on this machine; what `simnet.harness.Backend` asks, through signals and files."""

    name = "process"

    def __init__(self, cache_dir: Path, *, fork_server: bool = True) -> None:
        self.cache_dir = cache_dir
        self.layout: Layout | None = None
        self.procs: dict[int, subprocess.Popen | ForkedProcess] = {}
        self.use_fork_server = fork_server
        self.fork_server: ForkServer | None = None
        # the fork server's own peak memory and CPU: shared by the nodes forked from it
        self.server_usage = {"peak_rss_mb": 0.0, "peak_pss_mb": 0.0, "cpu_sec": 0.0}

    def prepare(self, scenario: Scenario, out: Path) -> Layout:
        self.layout = build(scenario, out, 0.0, self.cache_dir)
        if self.use_fork_server:
            self.name = "process (fork server)"
            env = {**os.environ, **WORKER_ENV}
            self.fork_server = ForkServer(out / "engine.yaml", out / "fork-server.log", env)
        return self.layout

    def start(self, p: NodeProcess) -> None:
        assert self.layout is not None
        files = self.layout.nodes[p.index]
        args = [sys.executable, "-m", "simnet.worker", str(files.config), "--control", str(files.control)]
        if p.behaviour:
            args += ["--behaviour", p.behaviour]
        log = files.config.with_name(f"log-{p.starts}.jsonl")
        if self.fork_server is not None:
            self.procs[p.index] = self.fork_server.start(
                files.config, files.control, p.behaviour, log, ENGINE_BUILD_TIMEOUT_SEC
            )
            return
        log_file = open(log, "w")  # noqa: SIM115 - owned by the process
        self.procs[p.index] = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **WORKER_ENV},
            start_new_session=True,
        )
        log_file.close()

    def loading(self) -> bool:
        assert self.layout is not None
        dead = [i for i, proc in self.procs.items() if proc.poll() is not None]
        if dead:
            raise RuntimeError(f"node processes {dead} exited while loading their engines (see their logs)")
        return not all(f.engine_ready.exists() for f in self.layout.nodes)

    def release(self, genesis: float) -> None:
        assert self.layout is not None
        for files in self.layout.nodes:
            files.go.write_text(str(genesis))

    def kill(self, p: NodeProcess) -> None:
        proc = self.procs.get(p.index)
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()
            p.exit_codes.append(proc.returncode)

    def pause(self, p: NodeProcess, paused: bool) -> None:
        self._signal(p.index, signal.SIGSTOP if paused else signal.SIGCONT)

    def set_links(self, index: int, links: dict[str, dict]) -> None:
        assert self.layout is not None
        control.write_links(self.layout.nodes[index].control, links)

    def submit(self, index: int, body: bytes) -> bool:
        assert self.layout is not None
        return post_recipe(self.layout.nodes[index].http_port, body)

    def sample(self, processes: list[NodeProcess]) -> None:
        if self.fork_server is not None and (u := usage(self.fork_server.proc.pid)) is not None:
            server = self.server_usage
            server["peak_rss_mb"] = max(server["peak_rss_mb"], u[0])
            server["peak_pss_mb"] = max(server["peak_pss_mb"], u[1])
            server["cpu_sec"] = u[2]
        for p in processes:
            proc = self.procs.get(p.index)
            if proc is None or proc.poll() is not None or (u := usage(proc.pid)) is None:
                continue
            p.record(*u)

    def stop(self, processes: list[NodeProcess], grace: float) -> list[tuple[int, str, dict]]:
        events: list[tuple[int, str, dict]] = []
        for p in processes:
            if p.paused:
                self._signal(p.index, signal.SIGCONT)
            self._signal(p.index, signal.SIGINT)
        stopped_at = time.time()
        deadline = stopped_at + grace
        for p in processes:
            proc = self.procs.get(p.index)
            if proc is None or p.killed_by_scenario:  # a crash's exit code is recorded by `kill`
                continue
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
                after = round(time.time() - stopped_at, 2)
                events.append((p.index, "exited", {"code": proc.returncode, "after_sec": after}))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                events.append((p.index, "killed after the grace period", {}))
            p.exit_codes.append(proc.returncode)
        return events

    def collect(self) -> None:
        """Nothing to bring back (every node wrote under the output folder); the fork server exits."""
        if self.fork_server is not None:
            self.fork_server.close()

    def support(self) -> dict[str, dict[str, float]]:
        """What the run cost beside the node processes (the fork server), for the report."""
        return {"fork_server": dict(self.server_usage)} if self.fork_server is not None else {}

    def _signal(self, index: int, sig: signal.Signals) -> None:
        proc = self.procs.get(index)
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)
