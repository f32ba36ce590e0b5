"""A js-libp2p peer (js-libp2p 3.3, @libp2p/gossipsub 17: `tests/js_peer/`) joins nodes running slots.

Gossip between implementations only works when both sides compute the same message
ids and keep the promises their IHAVEs make: py-libp2p's own cache broke that
(defect 19), and a js peer then scored these nodes down within seconds. So the
js peer must receive every certificate the nodes commit (byte for byte what they
store), its message must reach every node's validator, and neither side may ever
score the other below zero.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from consensus.certificate import Certificate
from network.topics import Topic
from tests.network import messages as m
from tests.node.conftest import cluster

pytestmark = [pytest.mark.trio, pytest.mark.slow]

JS_PEER = Path(__file__).resolve().parents[1] / "js_peer"
SLOTS = 3  # slots committed while the js peer watches


def _need_js() -> None:
    if shutil.which("node") is None or not (JS_PEER / "node_modules").is_dir():
        pytest.skip(f"no Node.js or no `npm ci --prefix {JS_PEER}` (.ci/run does both)")


class JsPeer:
    """The js process: JSON commands in on stdin, JSON events out on stdout."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    async def command(self, **cmd: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(cmd).encode() + b"\n")

    async def next_event(self, kind: str) -> dict[str, Any]:
        """Read events (keeping them all) until one of `kind` arrives."""
        assert self.process.stdout is not None
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                event = json.loads(line)
                self.events.append(event)
                if event["event"] == kind:
                    return event
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(f"the js peer exited; its last events: {self.events[-5:]}")
            self.buffer += chunk


@pytest.mark.parametrize("mesh", [True, False], ids=["in-mesh", "gossip-only"])
async def test_a_js_libp2p_peer_follows_the_chain_reaches_every_validator_and_is_never_scored_down(
    tmp_path: Path, node_engine: Any, mesh: bool
) -> None:
    """In the mesh, and kept out of every mesh (it prunes whoever grafts it), where all it gets comes
    by gossip repair: the nodes' IHAVE, its IWANT, and the promises those make."""
    _need_js()
    async with cluster(tmp_path, node_engine, n=4) as c:
        nodes = [n for n in c.nodes if n is not None]
        chain = nodes[0].chain_id
        topics = [t.name_for(chain) for t in (Topic.CERTIFICATES, Topic.RECIPES, Topic.VOTES)]
        config = {
            "bootstrap": [str(n.net.addrs()[0]) for n in nodes],  # type: ignore[union-attr]
            "topics": topics,
            "heartbeat_ms": 250,  # the nodes' heartbeat in these tests
            "mesh": mesh,
        }
        process = await trio.lowlevel.open_process(
            ["node", str(JS_PEER / "peer.mjs"), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        js = JsPeer(process)
        try:
            with trio.fail_after(30):
                up = await js.next_event("up")
            js_id = up["peer_id"]
            assert not [e for e in js.events if e["event"] == "error"], js.events
            first = (
                max((max(n.ledger.recent, default=-1) for n in nodes), default=-1) + 1
            )  # certified from now on
            lowest_js_score, lowest_py_score = 0.0, 0.0

            async def scores() -> None:
                nonlocal lowest_js_score, lowest_py_score
                await js.command(cmd="scores")
                seen = await js.next_event("scores")
                lowest_js_score = min([lowest_js_score, *seen["scores"].values()])
                for n in nodes:
                    peer = next(p for p in n.net.connected_peers() if str(p) == js_id)  # type: ignore[union-attr]
                    lowest_py_score = min(lowest_py_score, n.net.router.scorer.score(peer, topics))  # type: ignore[union-attr]

            recipe = m.recipe("Greetings from a js-libp2p peer.")
            accepted = [n.gossip.validators.stats.accepted["recipes"] for n in nodes]  # type: ignore[union-attr]
            with trio.fail_after(20):  # every node knows the js peer's topics, then it publishes
                while not all(_knows(n, js_id, topics) for n in nodes) or (
                    mesh and not await _meshed(js, topics[1])
                ):
                    await trio.sleep(0.5)
            await js.command(cmd="publish", topic=topics[1], data=recipe.hex())
            published = await js.next_event("published")
            assert published["recipients"], "the js peer had no recipient for its message"
            with trio.fail_after(4 * SLOTS + 20):
                while not all(len(_certified(n, first)) >= SLOTS for n in nodes):
                    await scores()
                    await trio.sleep(1.0)
            await scores()
            # every certificate the nodes committed while the js peer watched reaches it (by gossip
            # repair a heartbeat or two later, when it is out of the meshes)
            committed = sorted(set.intersection(*(_certified(n, first) for n in nodes)))
            with trio.move_on_after(10):
                while not set(committed) <= set(_certificates(js, topics[0])):
                    await scores()
                    await trio.sleep(0.5)
            missing = set(committed) - set(_certificates(js, topics[0]))
            assert not missing, f"slots {sorted(missing)}: no certificate reached the js peer " + (
                f"(lowest scores: the js peer gave {lowest_js_score:.1f}, the nodes gave {lowest_py_score:.1f})"
            )
            # every node's validator saw the js peer's message and accepted it
            now = [n.gossip.validators.stats.accepted["recipes"] for n in nodes]  # type: ignore[union-attr]
            assert all(after > before for after, before in zip(now, accepted, strict=True)), (accepted, now)
            # neither side scored the other down
            assert lowest_js_score >= 0 and lowest_py_score >= 0, (lowest_js_score, lowest_py_score)
            # byte for byte what the nodes store
            for slot, received in _certificates(js, topics[0]).items():
                stored = {n.storage.certificate_bytes(slot) for n in nodes}
                assert received <= stored, f"slot {slot}: the js peer got bytes no node stores"
        finally:
            await js.command(cmd="stop")
            with trio.move_on_after(10):
                await process.wait()
            process.kill()
        assert process.returncode == 0


def _certificates(js: JsPeer, topic: str) -> dict[int, set[bytes]]:
    """slot -> the certificate messages the js peer received for it."""
    by_slot: dict[int, set[bytes]] = {}
    for e in js.events:
        if e["event"] == "message" and e["topic"] == topic:
            data = bytes.fromhex(e["data"])
            by_slot.setdefault(Certificate.decode(data).slot, set()).add(data)
    return by_slot


def _certified(node: Any, first: int) -> set[int]:
    return {s for s in node.ledger.recent if s >= first}


def _knows(node: Any, js_id: str, topics: list[str]) -> bool:
    return all(js_id in {str(p) for p in node.net.pubsub.peer_topics.get(t, ())} for t in topics)


async def _meshed(js: JsPeer, topic: str) -> bool:
    await js.command(cmd="scores")
    return bool((await js.next_event("scores"))["mesh"][topic])
