"""The public face in a process of its own, at a lower CPU priority than the node.

Why: on a small machine a crowd of viewers, served from the node's own
process, takes the CPU and the GIL that the node's director work needs, and
the director misses its phase deadlines (measured: bench/RESULTS.md,
http_load). In a process of its own, niced, the operating system gives the
node the CPU first, and a viewer's request can never hold the node's event
loop.

The child reads what the node has already made durable: certificates, their
arrival times and CLIP scores from the node's SQLite database (a read-only
connection; WAL mode lets it read while the node writes), and media from the
content store. It keeps its own ledger, applying the stored certificates in
slot order, as the node does at restart. It changes nothing, and so takes no
recipes: those go to the operator face.

Protocol with the parent: the node's settings as one JSON line on stdin; the
child answers with one JSON line on stdout, `{"public_port": N}`, once it
listens; stdin then stays open, and its end (the node exited, however it
exited) ends the child. The node's `PublicFace` supervisor restarts a child
that dies, with a log line, waiting longer each time it dies young (up to a
minute): whatever a stranger does to the face, the node runs on. Only a face
that cannot start at all when the node starts (its address taken, say) stops
the node, as any other configuration fault does.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from consensus.ledger import Ledger
from network.media.store import MediaStore
from node import api, logs, web
from node.chain import apply_stored
from node.clock import WallClock
from node.playout import SegmentCache
from node.recipes import RecipeQueue, load_fallback
from node.settings import NodeSettings
from node.storage import Storage

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

REFRESH_SEC = 0.5  # how soon a stored certificate reaches the face
MAX_SETTINGS_BYTES = 1 << 20
START_TIMEOUT_SEC = 60.0  # imports and the ledger replay, on a slow machine
OWN_FILES = 64  # descriptors the face needs besides its connections: files served, SQLite, pipes, imports
# a child that ran this long is restarted after 1 s; one dying sooner waits longer each time
STABLE_SEC = 60.0
MAX_RESTART_DELAY_SEC = 60.0


class StoredChannel:
    """The channel as the node's storage holds it: what `node.api.Channel` asks, read-only."""

    def __init__(self, settings: NodeSettings) -> None:
        self.genesis = settings.chain.genesis()
        self.chain_id = self.genesis.chain_id
        self.ledger = Ledger(self.genesis)
        self.clock = WallClock()
        storage_dir = Path(settings.node.storage_dir)
        self.storage = Storage.reader(storage_dir / "node.sqlite", self.chain_id)
        self.media_store = MediaStore(
            storage_dir / "media", max_file_bytes=settings.network.media.max_file_bytes
        )
        self.segments = SegmentCache(storage_dir / "hls-public")  # its own: the node's face may remux too
        self.recipes = RecipeQueue(self.ledger, load_fallback(settings.node.fallback_recipe), 0)
        self.refresh()

    def refresh(self) -> int:
        """Apply the certificates stored since the last call, in slot order; how many."""
        return apply_stored(self.ledger, self.storage)

    def current_slot(self) -> int:
        return max(self.genesis.slot_at(self.clock.now()), 0)

    def media_path(self, slot: int) -> Path | None:
        return api.committed_media(self.ledger, self.media_store, slot)

    def status(self) -> dict[str, Any]:
        return {**api.chain_status(self), "face": "public, own process"}


async def _serve_child(settings: NodeSettings, stdin: trio.abc.ReceiveStream) -> None:
    channel = StoredChannel(settings)
    face = web.Face(metrics=None, intake=None, recipes_need_token=True)
    app = web.build_app(channel, face, settings.http, None)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(web.serve, app, settings.http.public_addr, settings.http)
        sys.stdout.write(json.dumps({"public_port": port}) + "\n")
        sys.stdout.flush()

        async def refresh() -> None:
            while True:
                await trio.sleep(REFRESH_SEC)
                channel.refresh()

        nursery.start_soon(refresh)
        while await stdin.receive_some(4096):  # the parent's end of the pipe closes: stop
            pass
        log.info("the node is gone; the public face stops")
        nursery.cancel_scope.cancel()


class _OncePer(logging.Filter):
    """Lets one record through per `seconds`: trio logs a refused accept every 0.1 s while the
    connection limit holds, which a flood of connections must not turn into a flood of log lines."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self._seconds = seconds
        self._next = 0.0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self._seconds
        if self.suppressed:
            record.msg = f"{record.msg} ({self.suppressed} more since the last such line)"
            self.suppressed = 0
        return True


def limit_connections(max_connections: int) -> int:
    """Cap this process's open descriptors at `max_connections` plus `OWN_FILES`; the new soft limit.

    Hypercorn has no connection limit of its own. Past this one, accept() fails with EMFILE and
    trio's accept loop waits and retries while new connections queue in the kernel. A crowd that
    takes every descriptor makes a media request fail (a 500: its file cannot be opened) until
    some connections close or time out; the face stays up, and the node, another process, keeps
    every descriptor it has."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = max_connections + OWN_FILES
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    logging.getLogger("trio.serve_listeners").addFilter(_OncePer(10.0))
    return soft


def child_main() -> None:
    """`python -m node.public_face`: read the settings, serve until stdin closes."""
    raw = sys.stdin.buffer.readline(MAX_SETTINGS_BYTES)
    settings = NodeSettings.model_validate_json(raw)
    logs.configure(settings.node.log_format, settings.node.log_level)
    logs.node_name.set("public-face")
    os.nice(settings.http.public_nice)
    limit_connections(settings.http.public_max_connections)

    async def main() -> None:
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        async with stdin:
            await _serve_child(settings, stdin)

    trio.run(main)


class FaceDidNotStart(RuntimeError):
    pass


class PublicFace:
    """The node's side: starts the child, learns its port, restarts it when it dies."""

    def __init__(self, settings: NodeSettings) -> None:
        self._payload = (settings.model_dump_json() + "\n").encode()
        self.port: int | None = None
        self.pid: int | None = None
        self.restarts = 0

    async def run(self, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        delay = 1.0
        first = True
        while True:
            started = time.monotonic()
            try:
                outcome = f"the public face exited with {await self._run_once(task_status)}"
            except FaceDidNotStart as exc:
                if first:
                    raise
                outcome = str(exc)
            first = False
            task_status = trio.TASK_STATUS_IGNORED  # reported once; a restart keeps the configured address
            if time.monotonic() - started >= STABLE_SEC:
                delay = 1.0
            self.restarts += 1
            log.error("%s; restarting it in %.0f s (restart %d)", outcome, delay, self.restarts)
            await trio.sleep(delay)
            delay = min(MAX_RESTART_DELAY_SEC, delay * 2)

    async def _run_once(self, task_status: TaskStatus[int]) -> int:
        """One child, from start to exit: its exit code. Raises `FaceDidNotStart` (outside the
        nursery, so the caller sees it bare) when it never reported a port."""
        command = [sys.executable, "-m", "node.public_face"]
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                lambda task_status: trio.run_process(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    check=False,
                    task_status=task_status,
                )
            )
            port = await self._await_port(proc)
            if port is None:
                proc.kill()
            else:
                self.port, self.pid = port, proc.pid
                log.info("public face serving on port %d (pid %d)", port, proc.pid)
                task_status.started(port)
            rc = await proc.wait()
        if port is None:
            raise FaceDidNotStart(f"the public face did not start (exit {rc}; its log is above)")
        return rc

    async def _await_port(self, proc: trio.Process) -> int | None:
        """Hand the child its settings and read the port it reports; None if it does not."""
        assert proc.stdin is not None and proc.stdout is not None
        line = b""
        with trio.move_on_after(START_TIMEOUT_SEC):
            try:
                await proc.stdin.send_all(self._payload)
                while not line.endswith(b"\n") and len(line) < 4096:
                    chunk = await proc.stdout.receive_some(4096)
                    if not chunk:
                        break
                    line += chunk
            except trio.BrokenResourceError:  # it died before it read its settings
                pass
        try:
            return int(json.loads(line)["public_port"])
        except (ValueError, KeyError, TypeError):
            return None


if __name__ == "__main__":
    child_main()
