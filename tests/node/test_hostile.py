"""A running `icn-node run` process under attack, and a node whose task crashes (issue 16).

Each attack is one an issue found stopping a node: a deeply nested recipe on the
recipes topic, the same over HTTP, an over-long or engine-invalid recipe, plus
garbage on every topic and every HTTP door. The node must answer each with a
counted rejection and keep committing slots, as a process, not only in-process.
A crashing task must stop the process loudly: traceback logged, non-zero exit.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trio

from consensus.messages import canonical
from network.host import open_host
from network.identity import Identity
from network.settings import NetworkSettings
from network.topics import Topic
from node.settings import NodeSettings
from tests.node.conftest import single_node_config

RECIPE = {
    "audio_track": {"script": "Hello.", "voice_id": "morty"},
    "visual_track": {"prompt": "a newsreader"},
}


def _http(url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(
        url, data=body, method="POST" if body is not None else "GET", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            status, data = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode("utf-8", "replace")


def _raw_http(port: int, request: bytes) -> bytes:
    """The raw answer; b"RESET" when the server closed while the request was still arriving."""
    chunks = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except ConnectionResetError:
        return b"".join(chunks) or b"RESET"
    return b"".join(chunks)


def _wait_for_certificate(http: int, proc: subprocess.Popen, after: int = -1, timeout: float = 90) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            status, info = _http(f"http://127.0.0.1:{http}/status")
            cert = info["last_certificate"] if isinstance(info, dict) else None
            if cert is not None and cert["slot"] > after:
                return cert["slot"]
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"no certificate after slot {after} (node alive: {proc.poll() is None})")


def _hostile_gossip() -> dict[Topic, list[bytes]]:
    nested = b"\x81" * 5000 + b"\x00"  # 5,000 nested CBOR arrays
    common = [nested, b"\xff" * 100, canonical([1]), canonical([1, "recipe"]), canonical(2**200), b""]
    recipes = [
        canonical([1, "recipe", b"[" * 5000]),  # the message that stopped every node
        canonical([1, "recipe", b'{"a":' * 2000]),
        canonical([1, "recipe", json.dumps({**RECIPE, "duration_sec": 1000}).encode()]),
        canonical(
            [1, "recipe", json.dumps(RECIPE).replace("}}", '}, "duration_sec": Infinity}', 1).encode()]
        ),
        canonical(
            [
                1,
                "recipe",
                json.dumps(
                    {**RECIPE, "audio_track": {**RECIPE["audio_track"], "speed": float("nan")}}
                ).encode(),
            ]
        ),
        canonical([1, "recipe", b"\xc3\x28"]),  # not UTF-8
        canonical([1, "recipe", 5]),
        canonical([1, "recipe", b"x" * 20_000]),
    ]
    return {topic: common + (recipes if topic == Topic.RECIPES else []) for topic in Topic}


async def _attack_gossip(node_addr: str, chain_id: bytes) -> None:
    settings = NetworkSettings(listen=("/ip4/127.0.0.1/tcp/0",), bootstrap=(node_addr,))
    async with open_host(Identity.generate(), settings) as net:
        with trio.fail_after(20):
            while not net.connected_peers():
                await trio.sleep(0.1)
        await trio.sleep(1.5)  # the node's subscriptions reach us
        for topic, messages in _hostile_gossip().items():
            for data in messages:
                await net.pubsub.publish(topic.name_for(chain_id), data)
                await trio.sleep(0.02)
        await trio.sleep(1.0)


@pytest.mark.slow
def test_a_running_node_survives_hostile_gossip_and_http_and_keeps_committing(
    tmp_path: Path, tiny_cache: Path
) -> None:
    config, ident, http, p2p = single_node_config(tmp_path, tiny_cache)
    chain_id = NodeSettings.load(config).chain.genesis().chain_id
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = _wait_for_certificate(http, proc)
        trio.run(_attack_gossip, f"/ip4/127.0.0.1/tcp/{p2p}/p2p/{ident.peer_id}", chain_id)
        assert proc.poll() is None, "the node died of gossip"
        url = f"http://127.0.0.1:{http}/recipes"
        answers = {
            "nested": _http(url, b"[" * 2000),
            "deep object": _http(url, b'{"a":' * 3000),
            "too long": _http(url, json.dumps({"audio_track": {"script": "\u4e00" * 5000, "voice_id": "morty"},
                                               "visual_track": {"prompt": "\u4e00" * 2000}}).encode()),  # 21 KB
            "duration": _http(url, json.dumps({**RECIPE, "duration_sec": 1000}).encode()),
            "infinity": _http(url, json.dumps(RECIPE).replace("}}", '}, "duration_sec": Infinity}', 1).encode()),
            "huge int": _http(url, json.dumps(RECIPE).replace("}}", '}, "seed": ' + "9" * 5000 + "}", 1).encode()),
            "not json": _http(url, b"\xff\xfe"),
        }  # fmt: skip
        for name, (status, body) in answers.items():
            assert status == 400, (name, status, body)
        raw = {
            "bad length": _raw_http(http, b"POST /recipes HTTP/1.1\r\nContent-Length: abc\r\n\r\n{}"),
            "negative": _raw_http(http, b"POST /recipes HTTP/1.1\r\nContent-Length: -5\r\n\r\n{}"),
            "garbage": _raw_http(http, b"\x00\xff\r\n\r\n"),
            "huge header": _raw_http(http, b"GET /status HTTP/1.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n"),
        }
        for name, answer in raw.items():
            refused = answer.startswith(b"HTTP/1.1 4") or (name == "huge header" and answer == b"RESET")
            assert refused, (name, answer[:80])
        status, body = _http(url, json.dumps(RECIPE).encode())
        assert status == 202, body  # a good recipe still goes through
        assert proc.poll() is None, "the node died of HTTP"
        later = _wait_for_certificate(http, proc, after=first)  # and the chain goes on
        assert later > first
        status, metrics = _http(f"http://127.0.0.1:{http}/metrics")
        assert status == 200 and isinstance(metrics, str)
        assert 'icn_messages_rejected_total{reason="bad_recipe",topic="recipes"}' in metrics
        assert 'reason="internal_error"' not in metrics  # every hostile message met a check, not a bug
        _, info = _http(f"http://127.0.0.1:{http}/status")
        assert info["pending_recipes"] <= 1  # nothing refused was queued
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)
    log = proc.stdout.read()
    assert proc.returncode == 0, log[-3000:]


_CRASHING_NODE = """
import sys, trio
from node import node as node_module
from node.cli import main

async def crash(self):
    await trio.sleep(2.0)
    raise RuntimeError("injected failure in the evidence reader")

node_module.Node._evidence_loop = crash
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


@pytest.mark.slow
def test_a_crashing_task_stops_the_process_with_its_traceback_and_a_non_zero_exit(
    tmp_path: Path, tiny_cache: Path
) -> None:
    config, *_ = single_node_config(tmp_path, tiny_cache, start_in=3.0)
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING_NODE, str(config)], capture_output=True, text=True, timeout=120
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" in out and "RuntimeError: injected failure in the evidence reader" in out, out[-3000:]
    assert out.count("the node stopped") == 2  # once in the log (with the traceback), once for the operator


def test_a_director_prevotes_nil_on_every_hostile_next_recipe_and_nothing_raises() -> None:
    """What the hostile simnet director proposes, judged by the node's recipe rule in the state machine."""
    from consensus.actions import Broadcast
    from consensus.agreement import LocalOutput, SlotAgreement
    from consensus.crypto import Signer
    from consensus.messages import Announce, Prevote, Proposal, Value, embedding_to_bytes, sha256
    from node.recipes import canonical_network_recipe
    from simnet.byzantine import HOSTILE_RECIPES

    keys = [Signer.from_seed(sha256(b"hostile-%d" % i)) for i in range(4)]
    directors = [k.public_key for k in keys]
    emb = embedding_to_bytes([1.0, 0.0, 0.0])
    for data in HOSTILE_RECIPES:
        m = SlotAgreement(
            3, directors, b"c", sha256(b"r"), signer=keys[1], recipe_ok=canonical_network_recipe
        )
        m.set_local_output(LocalOutput(sha256(b"r"), emb, emb, True, sha256(b"mine")))
        m.start()
        m.receive(Announce(3, sha256(b"r"), emb, emb, True, sha256(b"theirs")).signed_by(keys[0], b"c"))
        actions = m.receive(
            Proposal(3, 0, Value(sha256(b"theirs"), data[:16384]), -1).signed_by(keys[0], b"c")
        )
        (vote,) = [a.message for a in actions if isinstance(a, Broadcast) and isinstance(a.message, Prevote)]
        assert vote.value_hash is None, data[:40]
