"""One simnet node as an OS process: `python -m simnet.worker CONFIG [--behaviour B] [--control FILE]`.

It is the production node (`node.node.Node`), built from the config the
harness wrote, with a fault plan that follows the control file; a Byzantine
behaviour, when given, is a `simnet.byzantine.Byzantine` handed to the node as
its `Behaviour`, with its extra traffic run beside the node. It loads its
engine, writes `engine-ready`, waits for the harness's `go` (the config then
holds the genesis time), writes `ready` once its host is up, and stops cleanly
on SIGINT.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import trio

from network.faults import FaultPlan
from network.identity import Identity, load_key_file
from node import logs
from node.engine import build_engine, freeze_resident_heap
from node.node import Node
from node.settings import NodeSettings
from simnet import control
from simnet.byzantine import Byzantine
from simnet.scenario import BEHAVIOURS

if TYPE_CHECKING:
    from generation.pipeline import VortexPipeline


async def serve(
    settings: NodeSettings,
    engine: VortexPipeline,
    identity: Identity,
    behaviour: str | None,
    plan: FaultPlan,
    name: str,
    *,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one simnet node, and a Byzantine behaviour's extra traffic beside it, until cancelled.

    Shared by the process worker below and the Ray actor (`simnet.ray_nodes`): the two backends
    differ in how they start, stop and fault a node, never in the node they run.
    """
    liar = Byzantine(behaviour, identity, settings.chain.genesis().chain_id) if behaviour else None
    node = Node(settings, engine=engine, identity=identity, faults=plan, name=name, behaviour=liar)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        if liar is not None and node.net is not None:
            nursery.start_soon(liar.run_beside, node.net, node.genesis.slot_sec)
        task_status.started(node)


def load(
    config: Path, log_stream: TextIO | None = None, engine: VortexPipeline | None = None
) -> tuple[NodeSettings, Identity, VortexPipeline]:
    """A node's settings, key and engine, with its logs configured. The engine is built here (its
    heap frozen) unless given: a process forked from the fork server inherits one."""
    settings = NodeSettings.load(config)
    identity = load_key_file(settings.node.key_file)
    logs.configure(settings.node.log_format, settings.node.log_level, stream=log_stream)
    if engine is None:
        engine = build_engine(settings.generation)
        freeze_resident_heap()
    return settings, identity, engine


async def _main(
    settings: NodeSettings,
    engine: VortexPipeline,
    identity: Identity,
    behaviour: str | None,
    control_file: Path,
    ready: Path,
) -> None:
    plan = FaultPlan()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, settings, engine, identity, behaviour, plan, control_file.parent.name)
            nursery.start_soon(control.follow, control_file, plan, identity.peer_id)
            ready.write_text(str(identity.peer_id))
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def run(config: Path, control_file: Path, behaviour: str | None, engine: VortexPipeline | None = None) -> int:
    """The node process's life: load (the engine too, unless the fork server built it), say ready,
    wait for the genesis, run until SIGINT."""
    settings, identity, engine = load(config, engine=engine)
    config.with_name("engine-ready").write_text("")
    while not config.with_name("go").exists():  # the harness fixes the genesis once all are ready
        time.sleep(0.1)
    settings = NodeSettings.load(config)
    ready = config.with_name("ready")
    trio.run(functools.partial(_main, settings, engine, identity, behaviour, control_file, ready))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--behaviour", choices=BEHAVIOURS)
    parser.add_argument("--control", required=True)
    args = parser.parse_args(argv)
    return run(Path(args.config), Path(args.control), args.behaviour)


if __name__ == "__main__":
    sys.exit(main())
