"""The public face in its own process: it serves what the node stored, is restarted when it dies,
and ends with the node however the node ends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import trio

from node.settings import NodeSettings
from simnet.layout import free_ports
from tests.node.conftest import cluster
from tests.node.test_web import RECIPE, get, post, raw

pytestmark = pytest.mark.slow


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


async def answer(port: int, path: str) -> tuple[int, bytes]:
    status, _, body = await raw(port, get(path))
    return status, body


@pytest.mark.trio
async def test_the_public_face_runs_apart_serves_the_stored_chain_and_is_restarted(
    tmp_path: Path, node_engine: object
) -> None:
    [port] = free_ports(1)
    http = {"public_addr": f"127.0.0.1:{port}", "public_process": True}
    async with cluster(tmp_path, node_engine, n=1, http=http) as c:
        node = c.nodes[0]
        assert node is not None and node.public_face is not None and node.public_port == port
        pid = node.public_face.pid
        assert pid is not None and pid != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(
            19, os.getpriority(os.PRIO_PROCESS, 0) + 10
        )  # niced

        with trio.fail_after(60):  # a committed slot whose media the node holds, seen by the face
            while True:
                held = [s for s in node.ledger.recent if node.media_path(s)]
                schedule = json.loads((await answer(port, "/schedule.json"))[1])
                listed = {s["slot"]: s for s in schedule["slots"] if s["committed"]}
                if held and held[-1] in listed:
                    break
                await trio.sleep(0.3)
        slot = held[-1]
        assert listed[slot]["certificate"] == node.ledger.recent[slot].hash.hex()
        assert listed[slot]["clip"] and listed[slot]["clip"][0]["matched"]
        # coming up: the slots whose recipe a held certificate fixed (recipe_lag 2 ahead at most)
        coming = {s["slot"]: s for s in schedule["coming_up"]}
        assert all(schedule["slot"] < s <= schedule["slot"] + 2 for s in coming)
        if slot + 2 > schedule["slot"]:  # the certificate of `slot` fixed the recipe of slot + 2
            assert coming[slot + 2]["directors"] and coming[slot + 2]["recipe"]["script"]
        # read by its length: Hypercorn keeps a file response's connection open after it despite
        # "Connection: close" (pgjones/hypercorn#330), so `raw` would wait for its idle timeout
        mp4 = await trio.to_thread.run_sync(fetch, f"http://127.0.0.1:{port}/slots/{slot}.mp4")
        path = node.media_path(slot)
        assert path is not None and mp4 == path.read_bytes()
        status, body = await answer(port, "/status")
        assert status == 200 and json.loads(body)["face"] == "public, own process"

        # it changes nothing: no recipes, no metrics
        pending = len(node.recipes)
        status, _, body = await raw(port, post("/recipes", json.dumps(RECIPE).encode()))
        assert status == 403 and b"operator face" in body and len(node.recipes) == pending
        assert (await answer(port, "/metrics"))[0] == 404

        # killed, it is restarted, logged, on the same address; the node never stopped
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(30):
            while node.public_face.restarts == 0 or node.public_face.pid == pid:
                await trio.sleep(0.1)
            while True:
                try:
                    if (await answer(port, "/status"))[0] == 200:
                        break
                except OSError:
                    pass
                await trio.sleep(0.2)
        second = node.public_face.pid
        assert second is not None
    with pytest.raises(ProcessLookupError):  # the node stopped: so did its face
        os.kill(second, 0)


def test_the_public_face_ends_when_its_node_is_gone(tmp_path: Path) -> None:
    """A node killed outright cannot signal its child: the child sees its stdin close, and exits."""
    from tests.node.conftest import node_config

    [port, p2p] = free_ports(2)
    table = node_config(0, 1, [p2p], tmp_path, 0.0, http={"public_addr": f"127.0.0.1:{port}"})
    settings = NodeSettings.from_mapping(table, origin="test")
    from node.storage import Storage

    Storage(Path(settings.node.storage_dir) / "node.sqlite", settings.chain.genesis().chain_id).close()
    child = subprocess.Popen(
        [sys.executable, "-m", "node.public_face"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write((settings.model_dump_json() + "\n").encode())
    child.stdin.flush()
    assert json.loads(child.stdout.readline()) == {"public_port": port}
    child.stdin.close()  # what the kernel does when the node dies
    assert child.wait(timeout=20) == 0


@pytest.mark.trio
async def test_a_crowd_of_connections_is_capped_and_the_face_answers_once_it_leaves(
    tmp_path: Path, node_engine: object
) -> None:
    from node.public_face import OWN_FILES

    [port] = free_ports(1)
    http = {"public_addr": f"127.0.0.1:{port}", "public_process": True, "public_max_connections": 16}
    async with cluster(tmp_path, node_engine, n=1, http=http) as c:
        node = c.nodes[0]
        assert node is not None and node.public_face is not None and node.public_face.pid is not None
        pid = node.public_face.pid
        crowd = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(150)]
        await trio.sleep(2.0)  # the face accepts what it may
        held = len(os.listdir(f"/proc/{pid}/fd"))
        assert held <= 16 + OWN_FILES, held
        for stream in crowd:
            await stream.aclose()
        with trio.fail_after(30):
            while True:
                with contextlib.suppress(OSError, trio.TooSlowError):
                    if (await raw(port, get("/status"), timeout=5))[0] == 200:
                        break
                await trio.sleep(0.2)
        assert node.public_face.restarts == 0 and node.public_face.pid == pid


@pytest.mark.trio
async def test_a_face_that_cannot_start_stops_the_node_with_the_reason(tmp_path: Path) -> None:
    from node.public_face import FaceDidNotStart, PublicFace
    from node.storage import Storage
    from tests.node.conftest import node_config

    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    [p2p] = free_ports(1)
    table = node_config(0, 1, [p2p], tmp_path, 0.0, http={"public_addr": f"127.0.0.1:{port}"})
    settings = NodeSettings.from_mapping(table, origin="test")
    Storage(Path(settings.node.storage_dir) / "node.sqlite", settings.chain.genesis().chain_id).close()
    with taken, pytest.raises(FaceDidNotStart, match="did not start"), trio.fail_after(60):
        await PublicFace(settings).run()
