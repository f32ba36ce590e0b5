"""Structured logs with the slot and phase on every line.

The slot and phase live in context variables: trio copies the context into
every task it starts, so a task spawned while slot 12's agreement runs logs
`slot=12 phase=agreement` without passing anything around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

current_slot: contextvars.ContextVar[int | None] = contextvars.ContextVar("slot", default=None)
current_phase: contextvars.ContextVar[str] = contextvars.ContextVar("phase", default="-")
node_name: contextvars.ContextVar[str] = contextvars.ContextVar("node", default="-")


@contextmanager
def in_phase(slot: int | None, phase: str) -> Iterator[None]:
    slot_token, phase_token = current_slot.set(slot), current_phase.set(phase)
    try:
        yield
    finally:
        current_phase.reset(phase_token)
        current_slot.reset(slot_token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        slot = current_slot.get()
        record.slot = "-" if slot is None else slot
        record.phase = current_phase.get()
        record.node = node_name.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "node": getattr(record, "node", "-"),
            "slot": getattr(record, "slot", "-"),
            "phase": getattr(record, "phase", "-"),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


TEXT_FORMAT = "%(asctime)s %(levelname)s node=%(node)s slot=%(slot)s phase=%(phase)s %(name)s: %(message)s"


def configure(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Install the context filter and formatter on the root logger (idempotent).

    `stream` (default stderr) is where the lines go: a process that hosts a node beside other
    work (the simnet's Ray actor) gives the node's own log file."""
    root = logging.getLogger()
    root.setLevel(level)
    handler = next((h for h in root.handlers if getattr(h, "_icn", False)), None)
    if handler is None:
        handler = logging.StreamHandler(stream)
        handler._icn = True  # type: ignore[attr-defined]
        handler.addFilter(ContextFilter())
        root.addHandler(handler)
    elif stream is not None and isinstance(handler, logging.StreamHandler):
        handler.setStream(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.Formatter.converter = time.gmtime
    # py-libp2p logs expected events (a dial to a peer still starting, a refused GRAFT) as
    # warnings and errors; the node logs what it does about them itself
    logging.getLogger("libp2p").setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)
