"""How the harness sets a running node's link faults: a JSON file the node's worker watches.

The harness writes `control.json` (to a temporary name, then renames it, so a
reader never sees half a file); the worker re-reads it when it changes and
applies it to its `FaultPlan`. A partition between A and B is written into both
A's and B's files, so each side holds back its own bytes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import trio
from libp2p.peer.id import ID

from network.faults import FaultPlan, LinkFault

log = logging.getLogger(__name__)


def write_links(path: Path, links: dict[str, dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"links": links}))
    os.replace(tmp, path)


def read_links(path: Path) -> dict[str, LinkFault]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {peer: LinkFault(**fault) for peer, fault in data.get("links", {}).items()}


def apply(plan: FaultPlan, me: ID, links: dict[str, LinkFault], applied: set[str]) -> set[str]:
    """Make `plan` hold exactly `links` (healing the links in `applied` that are gone); return the new set."""
    for peer in applied - set(links):
        plan.set_link(me, ID.from_base58(peer), delay_sec=0.0, loss=0.0, partitioned=False)
    for peer, fault in links.items():
        plan.set_link(
            me,
            ID.from_base58(peer),
            delay_sec=fault.delay_sec,
            loss=fault.loss,
            partitioned=fault.partitioned,
        )
    log.info("link faults now: %s", {p[-6:]: f for p, f in links.items()})
    return set(links)


async def follow(path: Path, plan: FaultPlan, me: ID, interval: float = 0.1) -> None:
    """Keep `plan` equal to the control file, for as long as the node runs."""
    seen: float | None = None
    applied: set[str] = set()
    while True:
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime != seen:
            seen = mtime
            try:
                applied = apply(plan, me, read_links(path), applied)
            except (ValueError, TypeError) as exc:
                log.error("control file %s unreadable: %s", path, exc)
        await trio.sleep(interval)
