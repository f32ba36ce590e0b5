"""The node's face: the status document, the metrics computed at scrape time, the HTTP routes.

Routes: GET /metrics (Prometheus text), GET /status (JSON), POST /recipes (a
recipe as JSON, checked by the one network rule and published before it is
queued). The server itself, with its bounds, is `node.http`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.metrics_core import Metric

from generation.errors import RecipeError
from generation.recipe import network_recipe
from node.http import Handler, Response
from node.metrics import NodeMetrics, counter, gauge

if TYPE_CHECKING:
    from generation.pipeline import VortexPipeline
    from network.gossip import Gossip
    from network.host import NetworkHost
    from network.media.transfer import MediaService
    from node.node import Node


def status(node: Node) -> dict[str, Any]:
    slot = node.current_slot()
    last = max(node.ledger.certificates, default=None)
    cert = node.ledger.certificates.get(last) if last is not None else None
    directors = node.ledger.directors(slot)
    return {
        "peer_id": str(node.identity.peer_id),
        "public_key": node.identity.public_key.hex(),
        "chain_id": node.chain_id.hex(),
        "slot": slot,
        "role": "director" if node.identity.public_key in directors else "observer",
        "directors": [d.hex() for d in directors],
        "peers": len(node.net.connected_peers()) if node.net else 0,
        "last_certificate": None
        if cert is None
        else {
            "slot": cert.slot,
            "round": cert.round,
            "hash": cert.hash.hex(),
            "media": cert.value.candidate.hex(),
        },
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
            "icn_media_bytes_served", "Media bytes served to peers", [],
            [([], media.server.stats.bytes_served)],
        )  # fmt: skip
        if engine is not None:
            from generation.utils.memory import get_vram_stats

            vram = get_vram_stats(engine.device)
            yield gauge("icn_vram_allocated_gb", "Engine device memory allocated", vram["allocated_gb"])
            yield gauge("icn_vram_reserved_gb", "Engine device memory reserved", vram["reserved_gb"])

    metrics.watch(live)


def routes(node: Node) -> Handler:
    async def handle(method: str, path: str, body: bytes) -> Response:
        if path == "/metrics" and method == "GET":
            return Response(200, node.metrics.render(), "text/plain; version=0.0.4")
        if path == "/status" and method == "GET":
            return Response.json(200, status(node))
        if path == "/recipes":
            if method != "POST":
                return Response.json(405, {"error": "POST a recipe as JSON"})
            try:
                recipe = network_recipe(body)
            except RecipeError as exc:
                return Response.json(400, {"error": str(exc)})
            try:
                key = await node.submit_recipe(recipe)
            except ValueError as exc:  # the gossip checks refused it (e.g. too large once framed)
                return Response.json(400, {"error": str(exc)})
            return Response.json(202, {"queued": key.hex(), "pending": len(node.recipes)})
        return Response.json(404, {"error": f"no route {method} {path}"})

    return handle
