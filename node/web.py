"""The node's HTTP faces: a Starlette app served by Hypercorn's trio worker.

Two listeners, two trust levels:

- the public face (`[http] public_addr`, may face the internet): the viewer
  page, the live HLS playlist and its segments, each committed slot's MP4 and
  certificate, the schedule, `/status`; `POST /recipes` only with the bearer
  token from `[http] token_file`;
- the operator face (`[node] http_addr`): all of the above plus `/metrics`;
  `POST /recipes` without a token only when it listens on loopback.

Bounds: request headers (Hypercorn's h11 limit), bodies (read with a cap, also
when chunked), idle and slow requests (Hypercorn's read and keep-alive
timeouts), recipe submissions (a token bucket per face, and 429 once the
recipe queue is full). A route that raises answers 500 and is logged; the
node runs on.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from generation.errors import RecipeError
from generation.recipe import Recipe, network_recipe
from node.metrics import NodeMetrics
from node.recipes import RecipeQueue
from node.settings import HttpSection, NodeConfigError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.api import Channel

log = logging.getLogger(__name__)

MAX_TOKEN_FILE_BYTES = 4096
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "[::1]", "localhost"}


def is_loopback(addr: str) -> bool:
    return addr.rsplit(":", 1)[0] in LOOPBACK_HOSTS


class TokenBucket:
    """`rate` per minute with a burst of the same size: the recipe intake's pace, per face."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._tokens = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused beyond `limit` bytes whether or not it is chunked."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    out = bytearray()
    async for chunk in request.stream():
        out += chunk
        if len(out) > limit:
            raise BodyTooLarge
    return bytes(out)


class RecipeIntake(Protocol):
    """Where `POST /recipes` hands a checked recipe: the running node."""

    @property
    def recipes(self) -> RecipeQueue: ...

    async def submit_recipe(self, recipe: Recipe) -> bytes: ...


@dataclass(frozen=True)
class Face:
    """What one listener allows: /metrics (with these metrics), recipes (into this intake; with no
    intake it takes none), and whether a recipe needs the operator's token."""

    metrics: NodeMetrics | None
    intake: RecipeIntake | None
    recipes_need_token: bool


def build_app(channel: Channel, face: Face, settings: HttpSection, token: str | None) -> Starlette:
    from node import api, playout, viewer

    bucket = TokenBucket(settings.recipes_per_minute)
    metrics_of, intake = face.metrics, face.intake

    async def index(request: Request) -> Response:
        return HTMLResponse(viewer.PAGE)

    async def status(request: Request) -> Response:
        return JSONResponse(channel.status())

    async def schedule(request: Request) -> Response:
        return JSONResponse(api.schedule(channel, settings.schedule_slots))

    async def metrics(request: Request) -> Response:
        assert metrics_of is not None  # the route exists only then
        return Response(metrics_of.render(), media_type="text/plain; version=0.0.4")

    def _slot(request: Request) -> int | None:
        raw = request.path_params["slot"]
        return int(raw) if raw.isdigit() and len(raw) <= 12 else None

    async def slot_mp4(request: Request) -> Response:
        slot = _slot(request)
        path = None if slot is None else channel.media_path(slot)
        if path is None:
            return JSONResponse({"error": "no committed media held for that slot"}, status_code=404)
        return FileResponse(path, media_type="video/mp4", filename=f"icn-slot-{slot}.mp4")

    async def slot_certificate(request: Request) -> Response:
        slot = _slot(request)
        data = None if slot is None else channel.storage.certificate_bytes(slot)
        if data is None:
            return JSONResponse({"error": "no certificate held for that slot"}, status_code=404)
        return Response(
            data,
            media_type="application/cbor",
            headers={"content-disposition": f'attachment; filename="icn-slot-{slot}.cert"'},
        )

    async def recipes(request: Request) -> Response:
        if intake is None:
            return JSONResponse(
                {"error": "this face takes no recipes; send them to the node's operator face"},
                status_code=403,
            )
        if face.recipes_need_token:
            given = request.headers.get("authorization", "")
            if token is None:
                return JSONResponse(
                    {"error": "this face takes no recipes (no [http] token_file)"}, status_code=403
                )
            if not given.startswith("Bearer "):
                return JSONResponse(
                    {"error": "a bearer token is required"},
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                )
            if not hmac.compare_digest(given[len("Bearer ") :].encode(), token.encode()):
                return JSONResponse({"error": "wrong token"}, status_code=403)
        if not bucket.take():
            return JSONResponse({"error": "too many recipes; slow down"}, status_code=429)
        if intake.recipes.full:
            return JSONResponse({"error": "the recipe queue is full"}, status_code=429)
        try:
            body = await read_body(request, settings.max_body_bytes)
        except BodyTooLarge:
            return JSONResponse({"error": f"body over {settings.max_body_bytes} bytes"}, status_code=413)
        try:
            recipe = network_recipe(body)
        except RecipeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            key = await intake.submit_recipe(recipe)
        except ValueError as exc:  # the gossip checks refused it (e.g. too large once framed)
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"queued": key.hex(), "pending": len(intake.recipes)}, status_code=202)

    def _window() -> list[int]:
        playing = channel.current_slot() - 1  # slot s plays during slot s + 1
        return list(range(max(0, playing - settings.playlist_slots + 1), playing + 1))

    def _durations(paths: list[tuple[int, Path | None]]) -> list[tuple[int, float]]:
        """Probing files blocks: run in a worker thread, on paths looked up in the node's own thread."""
        return [(slot, playout.CARD_SEC if p is None else channel.segments.duration(p)) for slot, p in paths]

    async def live_playlist(request: Request) -> Response:
        paths = [(slot, channel.media_path(slot)) for slot in _window()]
        entries = await trio.to_thread.run_sync(_durations, paths)
        return Response(
            playout.playlist(entries, channel.genesis.slot_sec),
            media_type="application/vnd.apple.mpegurl",
            headers={"cache-control": "no-cache"},
        )

    async def slot_ts(request: Request) -> Response:
        slot = _slot(request)
        if slot is None or slot > channel.current_slot() - 1:
            return JSONResponse({"error": "no such slot in the channel yet"}, status_code=404)
        path = channel.media_path(slot)
        if path is None:
            segment = await trio.to_thread.run_sync(channel.segments.card)
        else:
            segment = await trio.to_thread.run_sync(channel.segments.segment, path)
        return FileResponse(segment, media_type="video/mp2t")

    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/channel.m3u8", live_playlist, methods=["GET", "HEAD"]),
        Route("/slots/{slot}.ts", slot_ts, methods=["GET", "HEAD"]),
        Route("/status", status, methods=["GET", "HEAD"]),
        Route("/schedule.json", schedule, methods=["GET", "HEAD"]),
        Route("/slots/{slot}.mp4", slot_mp4, methods=["GET", "HEAD"]),
        Route("/slots/{slot}.cert", slot_certificate, methods=["GET", "HEAD"]),
        Route("/recipes", recipes, methods=["POST"]),
    ]
    if metrics_of is not None:
        routes.append(Route("/metrics", metrics, methods=["GET", "HEAD"]))
    return Starlette(routes=routes, exception_handlers={Exception: _internal_error})


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("HTTP %s %s failed", request.method, request.url.path, exc_info=exc)
    return PlainTextResponse("internal error\n", status_code=500)


def hypercorn_config(addr: str, settings: HttpSection) -> Config:
    config = Config()
    config.bind = [addr]
    config.h11_max_incomplete_size = settings.max_header_bytes
    config.read_timeout = int(settings.request_timeout_sec)
    config.keep_alive_timeout = settings.request_timeout_sec
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    return config


async def serve(
    app: Starlette,
    addr: str,
    settings: HttpSection,
    *,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `addr` until cancelled; reports the bound port (`addr` may ask for port 0)."""

    class _Port:
        """Hypercorn reports the URLs it bound; the node wants the port."""

        def started(self, value: Any = None) -> None:
            task_status.started(int(str(value[0]).rsplit(":", 1)[1]))

    await hypercorn_serve(app, hypercorn_config(addr, settings), task_status=_Port())  # type: ignore[arg-type]


def read_token(path: str | None) -> str | None:
    """The operator's bearer token (one line); None when no file is configured."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TOKEN_FILE_BYTES + 1)
        text = raw.decode().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise NodeConfigError(f"http.token_file: cannot read {path}: {exc}") from None
    if len(raw) > MAX_TOKEN_FILE_BYTES:
        raise NodeConfigError(f"http.token_file: {path} is over {MAX_TOKEN_FILE_BYTES} bytes; one token line")
    if len(text) < 16:
        raise NodeConfigError(f"http.token_file: {path} must hold a token of at least 16 characters")
    return text
