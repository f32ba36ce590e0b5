"""The node's small HTTP endpoint: /metrics (Prometheus), /status (JSON), POST /recipes.

A dozen lines of HTTP/1.1 on `trio.serve_tcp` rather than a web framework: the
design's package list has no trio HTTP server, the three routes are fixed, and
every request is bounded (64 KiB, 5 s) so a client cannot hold the node up.
Bind it to loopback unless a Prometheus server elsewhere must scrape it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:  # trio's own types are shadowed for mypy by trio-typing's stubs (a libp2p dependency)
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
REQUEST_TIMEOUT_SEC = 5.0


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, obj: object) -> Response:
        return cls(status, json.dumps(obj, indent=1, default=str).encode() + b"\n")


Handler = Callable[[str, str, bytes], Awaitable[Response]]  # (method, path, body) -> response

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 500: "Internal Server Error"}  # fmt: skip


async def _read_request(stream: trio.SocketStream) -> tuple[str, str, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise ValueError("connection closed before the request ended")
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise OverflowError("request too large")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError(f"bad request line {lines[0][:80]!r}")
    method, path, _ = parts
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            if not value.strip().isdigit():
                raise ValueError("bad Content-Length")
            length = int(value.strip())
    if length > MAX_REQUEST_BYTES:
        raise OverflowError("request too large")
    while len(body) < length:
        chunk = await stream.receive_some(length - len(body))
        if not chunk:
            raise ValueError("connection closed inside the body")
        body += chunk
    return method, path, body[:length]


async def serve(
    host: str, port: int, handler: Handler, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    async def one(stream: trio.SocketStream) -> None:
        try:
            with trio.fail_after(REQUEST_TIMEOUT_SEC):
                try:
                    method, path, body = await _read_request(stream)
                except OverflowError:
                    response = Response.json(413, {"error": "request too large"})
                except ValueError as exc:
                    response = Response.json(400, {"error": str(exc)[:200]})
                else:
                    try:
                        response = await handler(method, path.split("?", 1)[0], body)
                    except Exception:  # a failing route answers 500 and is logged; the node goes on
                        log.exception("http %s %s failed", method[:16], path[:100])
                        response = Response.json(500, {"error": "internal error"})
                head = (
                    f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}\r\n"
                    f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                await stream.send_all(head.encode() + response.body)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("http client dropped: %s", exc)
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(one, listeners)
