"""Running a node as a program: until SIGINT or SIGTERM, then a bounded, clean shutdown.

A signal cancels the node's nursery: every task unwinds through its cancel
scopes, connections close, and the database closes in `Node.run`'s `finally`.
A model step already running in a worker thread cannot be interrupted; the
engine checks for cancellation between steps, so the thread returns after at
most one step and trio waits for it (threads are never abandoned).
"""

from __future__ import annotations

import logging
import signal

import trio

from generation.pipeline import VortexPipeline
from network.identity import Identity
from node.node import Node
from node.settings import NodeSettings

log = logging.getLogger(__name__)


async def run_until_signal(
    settings: NodeSettings, *, engine: VortexPipeline | None = None, identity: Identity | None = None
) -> None:
    node = Node(settings, engine=engine, identity=identity)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.run)

            async def on_signal() -> None:
                async for signum in signals:
                    log.info("%s: shutting down", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(on_signal)
