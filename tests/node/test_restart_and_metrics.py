"""A director killed mid-slot rejoins without double-voting; metrics and status over HTTP."""

from __future__ import annotations

import pytest
import trio

from consensus.evidence import Evidence
from tests.network.conftest import identity
from tests.node.conftest import cluster

pytestmark = [pytest.mark.trio, pytest.mark.slow]


async def _http(port: int, request: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request (Host and Connection: close added), read until the server closes."""
    request = request.replace(b"\r\n", b"\r\nHost: node\r\nConnection: close\r\n", 1)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_a_director_killed_mid_slot_restarts_from_its_journal_without_double_voting(
    tmp_path, node_engine
) -> None:
    async with cluster(tmp_path, node_engine) as c:
        victim = c.nodes[2]
        # wait until it has voted in some slot's agreement, then kill it at once
        with trio.fail_after(30):
            while not any(victim.storage.votes(s) for s in range(0, 20) if s in victim.records):
                await trio.sleep(0.02)
        voted_slot = max(s for s in victim.records if victim.storage.votes(s))
        before = victim.storage.votes(voted_slot)
        c.kill(2)
        await trio.sleep(0.5)
        restarted = await c.start(2)  # same storage directory, same key
        assert restarted.storage.votes(voted_slot)[: len(before)] == before
        with trio.fail_after(40):
            while len(restarted.ledger.recent) < voted_slot + 3:
                await trio.sleep(0.1)
        # it caught up and agrees with the others, and nobody holds evidence against it
        other = c.nodes[0]
        for s, cert in restarted.ledger.recent.items():
            if s in other.ledger.recent:
                assert other.ledger.recent[s].value.hash == cert.value.hash
        for n in c.nodes:
            culprits = {Evidence.decode(e.encode()).signer for e in n.chain.evidence_pool.values()}
            assert identity(2).public_key not in culprits
        assert restarted.storage.votes(voted_slot)[: len(before)] == before


async def test_metrics_status_and_recipe_submission_over_http(tmp_path, node_engine) -> None:
    async with cluster(tmp_path, node_engine, n=3) as c:
        node = c.nodes[0]
        with trio.fail_after(30):
            while len(node.ledger.recent) < 1:
                await trio.sleep(0.1)
        status, body = await _http(node.http_port, b"GET /metrics HTTP/1.1\r\n\r\n")
        text = body.decode()
        assert status == 200
        for name in (
            'icn_slots_total{outcome="committed",role="director"}',
            "icn_phase_seconds_bucket",
            "icn_peers 2.0",
            'icn_messages_accepted_total{topic="votes"}',
            "icn_media_bytes_served_total",
            "icn_stream_handler_failures_total",
            "icn_early_votes_dropped_total",
            "icn_vram_allocated_gb",
            "icn_last_certified_slot",
        ):
            assert name in text, name
        status, body = await _http(node.http_port, b"GET /status HTTP/1.1\r\n\r\n")
        import json

        info = json.loads(body)
        assert status == 200 and info["peers"] == 2 and info["last_certificate"]["slot"] >= 0
        recipe = b'{"audio_track": {"script": "Next up: news.", "voice_id": "beth"}, "visual_track": {"prompt": "a studio"}}'
        status, body = await _http(
            node.http_port, b"POST /recipes HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(recipe), recipe)
        )
        assert status == 202, body
        status, body = await _http(
            node.http_port, b"POST /recipes HTTP/1.1\r\nContent-Length: 5\r\n\r\n{bad}"
        )
        assert status == 400 and b"not valid JSON" in body
        status, _ = await _http(node.http_port, b"GET /nowhere HTTP/1.1\r\n\r\n")
        assert status == 404
        # the submitted recipe travels to the other nodes and is committed as a later slot's recipe
        with trio.fail_after(30):
            while not any(
                b"Next up: news." in (cert.value.next_recipe or b"") for cert in node.ledger.recent.values()
            ):
                await trio.sleep(0.1)
        # and leaves every node's queue once that certificate reaches it
        with trio.fail_after(10):
            while any(len(n.recipes) for n in c.nodes):
                await trio.sleep(0.1)
