"""The node's face: the status document, the metrics computed at scrape time, the HTTP routes.

Routes: GET /metrics (Prometheus text), GET /status (JSON), POST /recipes (a
recipe as JSON, checked by the one network rule and published before it is
queued). The server and its routes, with their bounds, are `node.web`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.metrics_core import Metric

from network.identity import peer_id_of
from node.metrics import NodeMetrics, counter, gauge

if TYPE_CHECKING:
    from consensus.ledger import Ledger
    from consensus.membership import Genesis
    from generation.pipeline import VortexPipeline
    from network.gossip import Gossip
    from network.host import NetworkHost
    from network.media.store import MediaStore
    from network.media.transfer import MediaService
    from node.clock import WallClock
    from node.node import Node
    from node.playout import SegmentCache
    from node.recipes import RecipeQueue
    from node.slot_driver import SlotDrivers
    from node.storage import Storage


class Channel(Protocol):
    """What the public face reads: the running node, or the public face's own process reading
    the node's storage (`node.public_face.StoredChannel`)."""

    genesis: Genesis
    chain_id: bytes
    ledger: Ledger
    recipes: RecipeQueue
    storage: Storage
    segments: SegmentCache
    clock: WallClock

    def current_slot(self) -> int: ...

    def media_path(self, slot: int) -> Path | None: ...

    def status(self) -> dict[str, Any]: ...


def committed_media(ledger: Ledger, store: MediaStore, slot: int) -> Path | None:
    """The committed MP4 of `slot`, if the store holds it."""
    cert = ledger.certificate(slot)
    if cert is None or not store.has(cert.value.candidate):
        return None
    return store.path(cert.value.candidate)


def chain_status(channel: Channel) -> dict[str, Any]:
    """The chain as this node holds it: what both faces' /status say."""
    slot = channel.current_slot()
    last = channel.ledger.head
    cert = channel.ledger.certificate(last) if last is not None else None
    return {
        "chain_id": channel.chain_id.hex(),
        "slot": slot,
        "directors": [d.hex() for d in channel.ledger.directors(slot)],
        "last_certificate": None
        if cert is None
        else {
            "slot": cert.slot,
            "round": cert.round,
            "hash": cert.hash.hex(),
            "media": cert.value.candidate.hex(),
        },
    }


def status(node: Node) -> dict[str, Any]:
    """The chain, and the node's own state: its role, peers, queue, recent slots and engine."""
    chain = chain_status(node)
    return {
        "peer_id": str(node.identity.peer_id),
        "public_key": node.identity.public_key.hex(),
        **chain,
        "role": "director" if node.identity.public_key.hex() in chain["directors"] else "observer",
        "peers": len(node.net.connected_peers()) if node.net else 0,
        "pending_recipes": len(node.recipes),
        "recent_slots": {
            s: {"role": r.role, "outcome": r.outcome, "phases": r.phases, "missed": r.missed}
            for s, r in sorted(node.records.items())[-5:]
        },
        "engine": node.engine.sources if node.engine is not None else None,
    }


def watch_metrics(
    metrics: NodeMetrics,
    net: NetworkHost,
    gossip: Gossip,
    media: MediaService,
    drivers: SlotDrivers,
    engine: VortexPipeline | None,
) -> None:
    def live() -> Iterator[Metric]:
        yield gauge("icn_peers", "Connected peers", len(net.connected_peers()))
        stats = gossip.validators.stats
        yield counter(
            "icn_messages_accepted", "Gossip messages accepted by topic", ["topic"],
            [([t], n) for t, n in stats.accepted.items()],
        )  # fmt: skip
        yield counter(
            "icn_messages_rejected", "Gossip messages rejected by topic and reason", ["topic", "reason"],
            [([t, r], n) for (t, r), n in stats.rejected.items()],
        )  # fmt: skip
        yield counter(
            "icn_stream_handler_failures", "Inbound streams whose handler failed (reset; the node goes on)",
            ["protocol", "kind"], [(list(key), n) for key, n in net.stats.handler_failures.items()],
        )  # fmt: skip
        yield counter(
            "icn_media_bytes_served", "Media bytes served to peers", [],
            [([], media.server.stats.bytes_served)],
        )  # fmt: skip
        yield counter(
            "icn_early_votes_dropped", "Votes for a slot not started here, dropped past the per-slot bound", [],
            [([], drivers.early_dropped)],
        )  # fmt: skip
        if engine is not None:
            from generation.utils.memory import get_vram_stats

            vram = get_vram_stats(engine.device)
            yield gauge("icn_vram_allocated_gb", "Engine device memory allocated", vram["allocated_gb"])
            yield gauge("icn_vram_reserved_gb", "Engine device memory reserved", vram["reserved_gb"])

    metrics.watch(live)


def schedule(node: Channel, count: int) -> dict[str, Any]:
    """The last `count` slots up to the current one (what played, who directed, and the proof), and the
    slots coming up whose recipe a certificate has already fixed (recipe_lag slots ahead at most)."""
    now = node.current_slot()
    first = max(0, now - count + 1)
    arrivals = node.storage.certificate_arrivals(first)
    clip = node.storage.clip_scores(first)
    slots = []
    for slot in range(now, first - 1, -1):
        cert = node.ledger.certificate(slot)
        start = node.genesis.slot_start(slot)
        entry = _programme(node, slot)
        entry["committed"] = cert is not None
        if cert is not None:
            entry.update(
                round=cert.round,
                certificate=cert.hash.hex(),
                media=cert.value.candidate.hex(),
                committed_after_sec=round(arrivals[slot] - start, 3) if slot in arrivals else None,
                held=node.media_path(slot) is not None,
                mp4=f"/slots/{slot}.mp4",
                cert=f"/slots/{slot}.cert",
                clip=[
                    {
                        "director": str(peer_id_of(c.director)),
                        "matched": c.matched,
                        "cosine_b": c.cosine_b,
                        "cosine_l": c.cosine_l,
                        "self_check": c.self_check,
                    }
                    for c in clip.get(slot, [])
                ],
            )
        slots.append(entry)
    coming_up = [
        _programme(node, slot)
        for slot in range(now + 1, now + node.genesis.recipe_lag + 1)
        if node.ledger.recipe_settled(slot)
    ]
    return {
        "chain_id": node.chain_id.hex(),
        "now": node.clock.now(),
        "genesis_time": node.genesis.genesis_time,
        "slot": now,
        "slot_sec": node.genesis.slot_sec,
        "slots": slots,
        "coming_up": coming_up,
    }


def _programme(node: Channel, slot: int) -> dict[str, Any]:
    """When a slot starts, who directs it and what it plays (the fallback where no certificate fixed it)."""
    recipe, note = node.recipes.recipe_for(slot)
    return {
        "slot": slot,
        "starts_at": node.genesis.slot_start(slot),
        "directors": [str(peer_id_of(d)) for d in node.ledger.directors(slot)],
        "recipe": {
            "script": recipe.audio_track.script,
            "prompt": recipe.visual_track.prompt,
            "voice": recipe.audio_track.voice_id,
            "fallback": note is not None,
        },
    }
