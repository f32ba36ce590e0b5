"""The simnet on a Ray cluster (`icn-node simnet SCENARIO --ray [ADDRESS]`): each node a Ray actor.

A node is long-lived state that the fault timeline addresses by name (its key,
database, host and trio loop), which is what a Ray actor is. Each actor is its
own OS process on the machine Ray places it on (SPREAD over the cluster); it
runs the same node as the process backend (`simnet.worker.serve`) on a trio
loop in one thread of that process, and the harness drives it by method calls:

- `endpoint`: the machine's address, three ports free there, the actor's pid;
- `load`: write the node's key and config under a folder on that machine and
  load the engine; `go`: the config with the genesis, then the node runs;
- `set_links`: link faults, applied to the node's `FaultPlan` inside its loop;
- `submit`: a recipe POSTed to the node's operator face on that machine's loopback;
- `stats`: memory and CPU of the actor's process; `stop`: a clean shutdown.

A crash is `ray.kill` (the process dies as under SIGKILL); a restart is a new
actor pinned to the same machine, which finds the database where the first
left it. Pause and resume are SIGSTOP and SIGCONT from a task pinned to the
actor's machine (a stopped process takes no method call). A node whose loop
fails exits its process with status 1 after logging the traceback: the harness
then finds the actor dead and counts a crash, never a silent zombie. At the end
a task on each node's machine packs its folder (logs, database, media) and the
harness unpacks it into the output folder, where the report reads it as it
reads the process backend's.

Every machine of the cluster needs this project installed as on the driver
(`pip install -e ".[cluster]"`, same Python); Ray ships no code here.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import tarfile
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import ray
import trio
import yaml
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from network.faults import FaultPlan, LinkFault
from simnet import control
from simnet.harness import NodeProcess
from simnet.layout import Endpoint, Layout, build, engine_settings, free_ports
from simnet.processes import WORKER_ENV, post_recipe, usage
from simnet.scenario import Scenario

log = logging.getLogger(__name__)

NODE_START_TIMEOUT_SEC = 120.0  # from `go` to a node whose host is up
CALL_TIMEOUT_SEC = 30.0  # a quick method call (links, a recipe, a signal)
DEFAULT_CACHE = "~/.cache/icn/tiny"  # tiny weights, built once per machine


def _folder(run: str, index: int) -> Path:
    """Node `index`'s folder on whichever machine runs it: under that machine's temporary folder."""
    return Path(tempfile.gettempdir()) / "icn-simnet-ray" / run / f"node-{index:02d}"


def _die(what: str) -> NoReturn:
    """Fail loudly: the traceback into the node's log and Ray's log of this worker, then exit 1, so
    that the actor is dead (the harness counts a crash) rather than alive with no node inside."""
    log.critical("%s:\n%s", what, traceback.format_exc())
    traceback.print_exc()
    os._exit(1)


@ray.remote(num_cpus=0)
def _send_signal(pid: int, sig: int) -> None:
    os.kill(pid, sig)


@ray.remote(num_cpus=0)
def _pack(run: str, index: int) -> bytes:
    """Node `index`'s folder as a gzipped tar (logs, database, media), for the harness's report."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(_folder(run, index), arcname=".")
    return buffer.getvalue()


class NodeInActor:
    """One simnet node in the process of a Ray actor (see the module's docstring); `NodeActor` is
    this class made an actor. No method may be `async`: see `_serve`."""

    def __init__(self, run: str, index: int, cache_dir: str | None) -> None:
        self.folder = _folder(run, index)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index = index
        self.cache_dir = Path(os.path.expanduser(cache_dir or DEFAULT_CACHE))
        self.plan = FaultPlan()
        self.applied: set[str] = set()
        self.loaded: tuple[Any, Any, Any] | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.stopping: trio.Event | None = None
        self.started = threading.Event()
        self.thread: threading.Thread | None = None

    def endpoint(self, host: str | None) -> dict[str, Any]:
        """Where this node will listen: `host` (loopback, for a Ray started here), else the address
        Ray knows this machine by, which the other machines reach."""
        host = host or ray.util.get_node_ip_address()
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": host,
            "pid": os.getpid(),
            "ports": free_ports(3, host),
        }

    def load(self, config: bytes, key: bytes, starts: int) -> None:
        try:
            self._load(config, key, starts)
        except BaseException:
            _die(f"node {self.index} failed to load")

    def _load(self, config: bytes, key: bytes, starts: int) -> None:
        from simnet.worker import load

        engine_file = self.folder.parent / "engine.yaml"
        tmp = engine_file.with_name(f"engine.yaml.{os.getpid()}")  # actors on one machine share it
        tmp.write_text(yaml.safe_dump(engine_settings(self.cache_dir)))
        tmp.replace(engine_file)
        (self.folder / "node.toml").write_bytes(config)
        key_file = self.folder / "node.key"
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        stream = open(self.folder / f"log-{starts}.jsonl", "w", buffering=1)  # noqa: SIM115 - for the life of the process
        self.loaded = load(self.folder / "node.toml", stream)

    def go(self, config: bytes, behaviour: str | None) -> str:
        """Run the node with `config` (genesis fixed); return its peer id once its host is up."""
        try:
            return self._go(config, behaviour)
        except BaseException:
            _die(f"node {self.index} failed to start")

    def _go(self, config: bytes, behaviour: str | None) -> str:
        from node.settings import NodeSettings

        assert self.loaded is not None, "go before load"
        (self.folder / "node.toml").write_bytes(config)
        settings = NodeSettings.load(self.folder / "node.toml")
        _, identity, engine = self.loaded
        self.thread = threading.Thread(
            target=self._loop, args=(settings, engine, identity, behaviour), name="node", daemon=True
        )
        self.thread.start()
        if not self.started.wait(NODE_START_TIMEOUT_SEC):
            raise RuntimeError(f"node {self.index} not up {NODE_START_TIMEOUT_SEC:.0f} s after go")
        return str(identity.peer_id)

    def _loop(self, settings: Any, engine: Any, identity: Any, behaviour: str | None) -> None:
        try:
            trio.run(_serve, self, settings, engine, identity, behaviour)
        except BaseException:
            _die(f"node {self.index} failed")

    def set_links(self, links: dict[str, dict]) -> None:
        assert self.loaded is not None and self.token is not None, "links before the node runs"
        me = self.loaded[1].peer_id
        faults = {peer: LinkFault(**fault) for peer, fault in links.items()}

        def apply() -> None:
            self.applied = control.apply(self.plan, me, faults, self.applied)

        trio.from_thread.run_sync(apply, trio_token=self.token)

    def submit(self, http_port: int, body: bytes) -> bool:
        return post_recipe(http_port, body)

    def stats(self) -> tuple[float, float, float] | None:
        return usage(os.getpid())

    def stop(self, timeout: float) -> int:
        """Shut the node down cleanly; 0 once its loop has ended."""
        if self.thread is None or self.token is None or self.stopping is None:
            return 0
        trio.from_thread.run_sync(self.stopping.set, trio_token=self.token)
        self.thread.join(timeout)
        return 0 if not self.thread.is_alive() else 1


NodeActor = ray.remote(num_cpus=0, max_restarts=0)(NodeInActor)


async def _serve(actor: Any, settings: Any, engine: Any, identity: Any, behaviour: str | None) -> None:
    """The node's trio loop in its actor's thread, until the actor's `stop`.

    Outside the class on purpose: Ray makes an actor with any `async def` method an asyncio actor
    that runs up to 1,000 calls at once, and this one relies on its calls running one at a time,
    in order (a restart queues `load`, then `go`, then `set_links`)."""
    from simnet.worker import serve

    actor.token = trio.lowlevel.current_trio_token()
    actor.stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, settings, engine, identity, behaviour, actor.plan, actor.folder.name)
        actor.started.set()
        await actor.stopping.wait()
        nursery.cancel_scope.cancel()


@dataclass
class _Placed:
    actor: Any
    node_id: str
    endpoint: Any  # the actor's `endpoint()`, or the ref of it (a restarted actor answers later)

    def pid(self) -> int:
        if not isinstance(self.endpoint, dict):
            self.endpoint = ray.get(self.endpoint, timeout=NODE_START_TIMEOUT_SEC)
        return int(self.endpoint["pid"])


class RayNodes:
    """Nodes as Ray actors: what `simnet.harness.Backend` asks, through method calls and tasks."""

    name = "ray"

    def __init__(self, address: str | None, cache_dir: str | None = None, cpus_per_node: float = 0.0) -> None:
        self.address = address
        self.cache_dir = cache_dir
        self.cpus = cpus_per_node
        self.layout: Layout | None = None
        self.run_name = ""
        self.placed: dict[int, _Placed] = {}
        self.pending: dict[int, Any] = {}  # index -> the ref of its load (then its go)
        self.stats_refs: dict[int, Any] = {}
        self.links: dict[int, dict[str, dict]] = {}
        self.behaviours: dict[int, str | None] = {}
        self.released = False
        self.we_started_ray = False
        self.host: str | None = None

    # -- placing -------------------------------------------------------------------------------------
    def prepare(self, scenario: Scenario, out: Path) -> Layout:
        if not ray.is_initialized():
            connect(self.address)
            self.we_started_ray = True
        # a Ray started for this run lives on this machine only: its nodes stay on loopback
        self.host = "127.0.0.1" if self.we_started_ray and self.address is None else None
        self.run_name = f"{out.name}-{int(time.time())}"
        self.behaviours = {i: scenario.byzantine.get(i) for i in range(scenario.nodes)}
        actors = [self._actor(i, None) for i in range(scenario.nodes)]
        ends = ray.get([a.endpoint.remote(self.host) for a in actors], timeout=NODE_START_TIMEOUT_SEC)
        for i, (actor, end) in enumerate(zip(actors, ends, strict=True)):
            self.placed[i] = _Placed(actor, end["node_id"], end)
        self.layout = build(
            scenario,
            out,
            0.0,
            Path(os.path.expanduser(self.cache_dir or DEFAULT_CACHE)),
            endpoints=[Endpoint(e["host"], *e["ports"]) for e in ends],
        )
        machines = len({e["node_id"] for e in ends})
        log.info("simnet on ray: %d nodes on %d machines", scenario.nodes, machines)
        return self.layout

    def _actor(self, index: int, node_id: str | None) -> Any:
        strategy: Any = "SPREAD" if node_id is None else NodeAffinitySchedulingStrategy(node_id, soft=False)
        return NodeActor.options(
            num_cpus=self.cpus,
            scheduling_strategy=strategy,
            runtime_env={"env_vars": dict(WORKER_ENV)},
        ).remote(self.run_name, index, self.cache_dir)

    # -- the Backend -----------------------------------------------------------------------------------
    def start(self, p: NodeProcess) -> None:
        assert self.layout is not None
        placed = self.placed[p.index]
        if p.starts > 0:  # a restart: a new actor on the machine that holds the node's database
            actor = self._actor(p.index, placed.node_id)
            placed = self.placed[p.index] = _Placed(actor, placed.node_id, actor.endpoint.remote(self.host))
        files = self.layout.nodes[p.index]
        key = files.config.with_name("node.key").read_bytes()
        ref = placed.actor.load.remote(files.config.read_bytes(), key, p.starts)
        if self.released:
            ref = self._go(p.index)
        self.pending[p.index] = ref

    def _go(self, index: int) -> Any:
        assert self.layout is not None
        placed = self.placed[index]
        ref = placed.actor.go.remote(self.layout.nodes[index].config.read_bytes(), self.behaviours[index])
        if self.links.get(index):
            placed.actor.set_links.remote(self.links[index])
        return ref

    def loading(self) -> bool:
        refs = list(self.pending.values())
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for i, ref in list(self.pending.items()):
            if ref in done:
                try:
                    ray.get(ref)
                except RayError as exc:
                    raise RuntimeError(f"node {i} failed while loading its engine: {exc}") from exc
        return len(done) < len(refs)

    def release(self, genesis: float) -> None:
        self.released = True
        refs = {i: self._go(i) for i in self.placed}
        for i, ref in refs.items():
            try:
                ray.get(ref, timeout=NODE_START_TIMEOUT_SEC)
            except (RayError, GetTimeoutError) as exc:
                raise RuntimeError(f"node {i} did not start: {exc}") from exc

    def kill(self, p: NodeProcess) -> None:
        ray.kill(self.placed[p.index].actor, no_restart=True)
        self.stats_refs.pop(p.index, None)
        p.exit_codes.append(-signal.SIGKILL)

    def pause(self, p: NodeProcess, paused: bool) -> None:
        placed = self.placed[p.index]
        sig = signal.SIGSTOP if paused else signal.SIGCONT
        task = _send_signal.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(placed.node_id, soft=False)
        )
        ray.get(task.remote(placed.pid(), int(sig)), timeout=CALL_TIMEOUT_SEC)

    def set_links(self, index: int, links: dict[str, dict]) -> None:
        self.links[index] = links
        self.placed[index].actor.set_links.remote(links)  # queued behind a restart's load and go

    def submit(self, index: int, body: bytes) -> bool:
        assert self.layout is not None
        ref = self.placed[index].actor.submit.remote(self.layout.nodes[index].http_port, body)
        try:
            return bool(ray.get(ref, timeout=CALL_TIMEOUT_SEC))
        except (RayError, GetTimeoutError) as exc:
            raise OSError(f"ray: {exc}") from exc

    def sample(self, processes: list[NodeProcess]) -> None:
        """One stats call in flight per running node; those answered raise its peaks."""
        for p in processes:
            ref = self.stats_refs.get(p.index)
            if ref is not None:
                done, _ = ray.wait([ref], timeout=0)
                if not done:
                    continue
                del self.stats_refs[p.index]
                try:
                    u = ray.get(ref)
                except RayError:
                    u = None
                if u is not None:
                    p.record(*u)
            if not p.killed_by_scenario and not p.paused:
                self.stats_refs[p.index] = self.placed[p.index].actor.stats.remote()

    def stop(self, processes: list[NodeProcess], grace: float) -> list[tuple[int, str, dict]]:
        by_index = {p.index: p for p in processes}
        for p in processes:
            if p.paused:
                self.pause(p, False)
        stopped_at = time.time()
        refs = {
            p.index: self.placed[p.index].actor.stop.remote(grace)
            for p in processes
            if not p.killed_by_scenario
        }
        events: list[tuple[int, str, dict]] = []
        for i, ref in refs.items():
            try:
                code = int(ray.get(ref, timeout=max(0.1, stopped_at + grace - time.time())))
                events.append((i, "exited", {"code": code, "after_sec": round(time.time() - stopped_at, 2)}))
            except GetTimeoutError:
                ray.kill(self.placed[i].actor, no_restart=True)
                code = -signal.SIGKILL
                events.append((i, "killed after the grace period", {}))
            except RayActorError as exc:  # the node's loop failed and its process exited 1
                code = 1
                events.append((i, "exited", {"code": code, "died": str(exc)[:500]}))
            by_index[i].exit_codes.append(code)
        return events

    def support(self) -> dict[str, dict[str, float]]:
        return {}  # Ray's own processes are not counted: each actor's process is

    def collect(self) -> None:
        """Unpack each node's folder from its machine into the output folder; then let Ray go."""
        assert self.layout is not None
        try:
            refs = {
                i: _pack.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(placed.node_id, soft=False)
                ).remote(self.run_name, i)
                for i, placed in self.placed.items()
            }
            for i, ref in refs.items():
                data = ray.get(ref, timeout=300)
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                    tar.extractall(self.layout.nodes[i].config.parent, filter="data")
        finally:
            for placed in self.placed.values():
                ray.kill(placed.actor, no_restart=True)
            if self.we_started_ray:
                ray.shutdown()


def connect(address: str | None) -> None:
    """Join the cluster at `address` ("auto": the one this machine belongs to), or start Ray here.

    A local instance keeps its object store small (the simnet moves a few megabytes of logs and
    databases through it, nothing more) and runs no dashboard."""
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024 * 1024)
