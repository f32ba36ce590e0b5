"""The node's HTTP faces (Hypercorn + Starlette) under hostile input, on a running one-node chain."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import trio

from tests.node.conftest import cluster

pytestmark = [pytest.mark.trio, pytest.mark.slow]

TOKEN = "operator-token-" + "x" * 24
RECIPE = {
    "audio_track": {"script": "Tonight: the weather, sideways.", "voice_id": "morty"},
    "visual_track": {"prompt": "a weather map"},
}


async def raw(port: int, request: bytes, *, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; read until the server closes. (status, headers, body); status 0: no answer."""
    data = b""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            # the server may answer and close while we are still sending, or reset after answering
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(request)
            with contextlib.suppress(trio.BrokenResourceError):
                while chunk := await stream.receive_some(65536):
                    data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return 0, {}, data
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body


def post(path: str, body: bytes, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return (
        f"POST {path} HTTP/1.1\r\nHost: n\r\nConnection: close\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n".encode()


def http_table(tmp_path: Path, **overrides: object) -> dict[str, object]:
    (tmp_path / "api.token").write_text(TOKEN + "\n")
    return {"public_addr": "127.0.0.1:0", "token_file": str(tmp_path / "api.token"), **overrides}


async def test_both_faces_refuse_hostile_requests_and_stay_up(tmp_path: Path, node_engine: object) -> None:
    async with cluster(tmp_path, node_engine, n=1, http=http_table(tmp_path)) as c:
        node = c.nodes[0]
        assert node is not None and node.http_port and node.public_port
        op, pub = node.http_port, node.public_port
        recipe = json.dumps(RECIPE).encode()

        assert (await raw(op, post("/recipes", b"{not json")))[0] == 400
        status, _, body = await raw(op, post("/recipes", b"[" * 3000))
        assert status == 400 and b"nest" in body
        # a 50 MB body is refused on its declared length, before it is read
        head = b"POST /recipes HTTP/1.1\r\nHost: n\r\nContent-Length: 50000000\r\n\r\n"
        assert (await raw(op, head + b"x" * 1_000_000))[0] == 413
        # chunked: the cap holds while the body streams in, and a small chunked body is fine
        big = b"".join(b"%x\r\n%s\r\n" % (8192, b"y" * 8192) for _ in range(12)) + b"0\r\n\r\n"
        chunked = (
            b"POST /recipes HTTP/1.1\r\nHost: n\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        assert (await raw(op, chunked + big))[0] == 413
        small = b"%x\r\n%s\r\n0\r\n\r\n" % (len(recipe), recipe)
        assert (await raw(op, chunked + small))[0] == 202
        # a 100 KB header, a garbage request line, an unknown path, HEAD
        assert (
            400
            <= (await raw(op, b"GET /status HTTP/1.1\r\nHost: n\r\nX: " + b"z" * 100_000 + b"\r\n\r\n"))[0]
            < 500
        )
        assert (await raw(pub, b"\x00\xff garbage\r\n\r\n"))[0] in (0, 400)
        assert (await raw(pub, get("/nowhere")))[0] == 404
        status, headers, body = await raw(pub, get("/status", "HEAD"))
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        # the public face: recipes only with the operator's token, and /metrics not at all
        pending = len(node.recipes)
        assert (await raw(pub, post("/recipes", recipe)))[0] == 401
        assert (await raw(pub, post("/recipes", recipe, "Authorization: Bearer wrong-token-xxxxxxxx")))[
            0
        ] == 403
        assert len(node.recipes) == pending
        other = json.dumps({**RECIPE, "visual_track": {"prompt": "a second map"}}).encode()
        assert (await raw(pub, post("/recipes", other, f"Authorization: Bearer {TOKEN}")))[0] == 202
        assert (await raw(pub, get("/metrics")))[0] == 404
        assert (await raw(op, get("/metrics")))[0] == 200

        # a route that raises answers 500, is logged, and the node runs on
        def broken(slot: int) -> None:
            raise RuntimeError("a bug in a route")

        node.media_path = broken  # type: ignore[method-assign]
        assert (await raw(pub, get("/slots/1.mp4")))[0] == 500
        status, _, body = await raw(pub, get("/status"))
        assert status == 200 and json.loads(body)["peer_id"] == str(node.identity.peer_id)


async def test_a_flood_of_valid_recipes_is_bounded(tmp_path: Path, node_engine: object) -> None:
    table = http_table(tmp_path, recipes_per_minute=100_000)
    async with cluster(tmp_path, node_engine, n=1, http=table, limits={"recipe_queue": 64}) as c:
        node = c.nodes[0]
        assert node is not None and node.http_port
        codes: dict[int, int] = {}
        for i in range(10_000):
            body = json.dumps({**RECIPE, "visual_track": {"prompt": f"map number {i}"}}).encode()
            status = (await raw(node.http_port, post("/recipes", body)))[0]
            codes[status] = codes.get(status, 0) + 1
        assert len(node.recipes) <= 64
        assert codes.get(429, 0) >= 10_000 - 64 - 200  # a few slots may commit queued recipes meanwhile
        assert set(codes) <= {202, 429}


async def test_a_slowloris_does_not_stop_status(tmp_path: Path, node_engine: object) -> None:
    async with cluster(tmp_path, node_engine, n=1, http=http_table(tmp_path)) as c:
        node = c.nodes[0]
        assert node is not None and node.public_port
        port = node.public_port
        async with trio.open_nursery() as nursery:

            async def crawl() -> None:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    try:
                        await stream.send_all(b"GET /status HTTP/1.1\r\nHost: n\r\n")
                        while True:  # one header byte at a time, never finishing the request
                            await trio.sleep(1.0)
                            await stream.send_all(b"X")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return  # the server's read timeout closed it

            for _ in range(200):
                nursery.start_soon(crawl)
            await trio.sleep(2.0)
            for _ in range(5):
                status, _, body = await raw(port, get("/status"), timeout=5)
                assert status == 200 and json.loads(body)["chain_id"]
            nursery.cancel_scope.cancel()
