"""Every door a stranger can knock on, as a fuzz target with structured hostile generators.

A target is a function of one generated input that returns normally when the door
behaved (accepted the input, or refused it with its own error type, counted) and
raises AssertionError or any unexpected exception otherwise. `tests/test_fuzz.py`
runs each briefly in CI; `bench/fuzz.py` runs them long and records the counts.

Generators are structured, not only random bytes: deep nesting, huge integers,
NaN and infinities, wrong types, boundary sizes, and valid messages with one field
replaced by something hostile (so inputs get past the first checks).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2
import trio
from hypothesis import strategies as st

from consensus.certificate import Certificate
from consensus.crypto import Signer
from consensus.evidence import Evidence
from consensus.ledger import Ledger
from consensus.membership import Genesis, Validator
from consensus.messages import (
    MAX_RECIPE_BYTES,
    Announce,
    DecodeError,
    Precommit,
    Prevote,
    Proposal,
    Value,
    canonical,
    decode_signed,
    embedding_to_bytes,
    sha256,
)
from generation.errors import RecipeError
from generation.recipe import SLOT_AUDIO_SEC, Recipe, network_recipe
from network.media.content import ChunkList
from network.topics import Topic, TopicValidators, encode_have
from node.metrics import NodeMetrics
from node.recipes import RecipeQueue
from node.settings import NodeConfigError, NodeSettings
from simnet.scenario import Scenario, ScenarioError

CHAIN = hashlib.sha256(b"icn-fuzz").digest()
KEYS = [Signer.from_seed(sha256(b"fuzz-%d" % i)) for i in range(4)]
DIRECTORS = tuple(k.public_key for k in KEYS)
RECIPE = {
    "audio_track": {"script": "Hello there.", "voice_id": "morty"},
    "visual_track": {"prompt": "a newsreader"},
}

# -- generators ---------------------------------------------------------------------------------------
HUGE_INTS = st.sampled_from([2**63, -(2**63) - 1, 2**64, 2**200, -1, 0, 2**4000])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [float("nan"), float("inf"), -0.0, 1e308]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE_INTS
    | FLOATS
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | FLOATS | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
DEPTHS = st.integers(1, 20_000)


def _json_text(value: Any) -> str:
    return json.dumps(value, default=repr)  # NaN and Infinity written as JSON's forbidden literals


def _set_path(obj: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    out = dict(obj) if isinstance(obj, dict) else {}
    out[path[0]] = _set_path(out.get(path[0], {}), path[1:], value)
    return out


RECIPE_PATHS = st.sampled_from(
    [["audio_track", "script"], ["audio_track", "voice_id"], ["audio_track", "speed"], ["audio_track", "emotion"],
     ["visual_track", "prompt"], ["visual_track", "negative_prompt"], ["seed"], ["duration_sec"], ["renderer"],
     ["renderer", "params"], ["renderer", "name"], ["audio_track"], ["extra"]]
)  # fmt: skip
MUTATED_RECIPES = st.builds(
    lambda path, value: _set_path(RECIPE, path, value),
    RECIPE_PATHS,
    JSON_VALUES | st.text(min_size=1000, max_size=20_000),
)
RECIPE_TEXTS = st.one_of(
    st.text(max_size=200),
    JSON_VALUES.map(_json_text),
    MUTATED_RECIPES.map(_json_text),
    DEPTHS.map(lambda n: "[" * n),
    DEPTHS.map(lambda n: '{"a":' * n),
    st.integers(1, 6000).map(lambda n: _json_text(RECIPE).replace("}}", '}, "seed": ' + "9" * n + "}", 1)),
    st.sampled_from(
        [float("nan"), float("inf"), 1000.0, SLOT_AUDIO_SEC, SLOT_AUDIO_SEC + 1e-9, 1e-300, -1.0]
    ).map(lambda d: _json_text({**RECIPE, "duration_sec": d})),
)


def _valid_messages() -> list[bytes]:
    value = Value(sha256(b"candidate"), json.dumps(RECIPE, sort_keys=True, separators=(",", ":")).encode())
    emb = embedding_to_bytes([0.5] * 16)
    msgs = [
        Announce(10, sha256(b"r"), emb, emb, True, sha256(b"c")).signed_by(KEYS[0], CHAIN),
        Proposal(10, 0, value, -1).signed_by(KEYS[0], CHAIN),
        Prevote(10, 0, value.hash).signed_by(KEYS[1], CHAIN),
        Precommit(10, 0, None).signed_by(KEYS[2], CHAIN),
    ]
    return [m.encode() for m in msgs]


VALID_MESSAGES = _valid_messages()


def _mutate_cbor(data: bytes, where: list[int], value: Any) -> bytes:
    """A valid message with the item at index path `where` replaced (so it passes the first checks)."""
    obj = cbor2.loads(data)
    target = obj
    for i in where[:-1]:
        if not isinstance(target, list) or not target:
            break
        target = target[i % len(target)]
    if isinstance(target, list) and target:
        target[where[-1] % len(target)] = value
    return cbor2.dumps(obj)


CBOR_BYTES = st.one_of(
    st.binary(max_size=600),
    VALUES.map(lambda v: cbor2.dumps(v)),
    DEPTHS.map(lambda n: b"\x81" * n + b"\x00"),
    DEPTHS.map(lambda n: b"\xa1\x00" * n + b"\x00"),
    st.builds(
        _mutate_cbor,
        st.sampled_from(VALID_MESSAGES),
        st.lists(st.integers(0, 8), min_size=1, max_size=4),
        VALUES,
    ),
    st.builds(lambda b, i: b[:i], st.sampled_from(VALID_MESSAGES), st.integers(0, 400)),
    st.builds(
        lambda b, i, x: b[:i] + bytes([x]) + b[i + 1 :],
        st.sampled_from(VALID_MESSAGES),
        st.integers(0, 400),
        st.integers(0, 255),
    ),
    st.sampled_from(VALID_MESSAGES),
)
TOPIC_INPUTS = st.one_of(
    CBOR_BYTES,
    RECIPE_TEXTS.map(lambda t: canonical([1, "recipe", t.encode("utf-8", "surrogatepass")])),
    st.builds(lambda cid, addrs: cbor2.dumps([1, "have", cid, addrs]), st.binary(max_size=40), VALUES),
    st.builds(
        lambda cid, a: encode_have(cid, a),
        st.binary(min_size=32, max_size=32),
        st.lists(st.text(max_size=60), max_size=5),
    ),
)


# -- targets ------------------------------------------------------------------------------------------
def recipe_door(text: str) -> None:
    """HTTP bodies, gossip recipes, proposals' next recipes, committed recipes: one rule."""
    try:
        recipe = network_recipe(text.encode("utf-8", "surrogatepass"))
    except RecipeError:
        return
    canonical_form = recipe.canonical_bytes()
    assert len(canonical_form) <= MAX_RECIPE_BYTES
    assert recipe.duration_sec is None or 0 < recipe.duration_sec <= SLOT_AUDIO_SEC
    assert network_recipe(canonical_form) == recipe  # what is accepted once is accepted everywhere


@dataclass
class _Context:
    chain_id: bytes = CHAIN

    def current_slot(self) -> int:
        return 10

    def directors(self, slot: int) -> tuple[bytes, ...] | None:
        return DIRECTORS if slot >= 0 else None


def gossip_door(topic_and_data: tuple[Topic, bytes]) -> None:
    topic, data = topic_and_data
    validators = TopicValidators(_Context())
    validators.check(topic, data)  # never raises
    rejected = sum(validators.stats.rejected.values())
    assert rejected + sum(validators.stats.accepted.values()) == 1
    assert not validators.stats.rejected.get((topic.value, "internal_error")), "a validator raised"


def consensus_decoders(data: bytes) -> None:
    for decode in (decode_signed, Certificate.decode, Evidence.decode, ChunkList.decode):
        with contextlib.suppress(DecodeError):
            decode(data)


class _FakeStream:
    """An INetStream that reads the fuzz input and records what the handler did."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.written = b""
        self.closed = self.was_reset = False

    async def read(self, n: int | None = None) -> bytes:
        n = len(self._data) if n is None else n
        out, self._data = self._data[:n], self._data[n:]
        return out

    async def write(self, data: bytes) -> None:
        self.written += data

    async def close(self) -> None:
        self.closed = True

    async def reset(self) -> None:
        self.was_reset = True

    def get_protocol(self) -> str:
        return "fuzz"


def _framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


FUZZ_MEDIA = bytes(range(256)) * 1200  # two chunks, in the store the media door serves from
FUZZ_MEDIA_CID = ChunkList.of_bytes(FUZZ_MEDIA).content_id

STREAM_INPUTS = st.one_of(
    st.binary(max_size=300),
    CBOR_BYTES.map(_framed),
    st.builds(
        lambda op, cid, extra: _framed(cbor2.dumps([op, cid, *extra])),
        st.sampled_from(["watch", "get", "chunks", "certs", "x", 5]),
        st.binary(max_size=40) | VALUES,
        st.lists(VALUES, max_size=2),
    ),  # fmt: skip
    st.builds(  # a session on content the door holds, then whatever follows
        lambda rest: _framed(cbor2.dumps(["watch", FUZZ_MEDIA_CID])) + b"".join(rest),
        st.lists(
            st.one_of(
                st.lists(st.integers(-2, 3) | HUGE_INTS, max_size=4).map(
                    lambda i: _framed(cbor2.dumps(["get", i]))
                ),
                (st.binary(max_size=3) | VALUES).map(lambda need: _framed(cbor2.dumps(["want", need]))),
                CBOR_BYTES.map(_framed),
                st.binary(max_size=40),
            ),
            max_size=4,
        ),
    ),
    st.builds(
        lambda a, b: _framed(cbor2.dumps(["certs", a, b])),
        st.integers() | HUGE_INTS,
        st.integers() | HUGE_INTS,
    ),
    st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big")),
)


def media_server_door(data: bytes, store_dir: Any) -> None:
    from network.media.store import MediaStore
    from network.media.transfer import MediaServer
    from network.settings import MediaSettings

    store = MediaStore(store_dir)
    store.add_bytes(FUZZ_MEDIA)
    # no wait for a download of unknown content to start: nothing here will start one
    server = MediaServer(store, MediaSettings(missing_wait_sec=0, watch_sec=1))
    stream = _FakeStream(data)
    trio.run(server.handle, stream)  # never raises
    assert stream.closed or stream.was_reset


def certsync_door(data: bytes) -> None:
    from network.certsync import CertificateSync

    class _Net:
        def set_stream_handler(self, protocol: str, handler: Any) -> None:
            pass

    certs = [b"\x00" * 10]
    sync = CertificateSync(
        _Net(), lambda start, limit: certs[: max(0, min(limit, 1))] if start < 2**63 else []
    )  # type: ignore[arg-type]
    stream = _FakeStream(data)
    trio.run(sync._handle, stream)  # never raises
    assert stream.closed or stream.was_reset


HTTP_INPUTS = st.tuples(
    st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "\x00"]),
    st.sampled_from(
        ["/recipes", "/slots/1.mp4", "/slots/99999999999999999999.cert", "/slots/-1.mp4", "/slots/%00.mp4",
         "/" + "a" * 5000, "/nope", "/metrics"]
    ),
    st.lists(
        st.tuples(
            st.sampled_from([b"content-length", b"transfer-encoding", b"authorization", b"x"]),
            st.sampled_from([b"5", b"-1", b"99999999999999999999", b"abc", b"chunked", b"Bearer x", b""])
            | st.binary(max_size=60),
        ),
        max_size=4,
    ),
    st.one_of(st.binary(max_size=2000), RECIPE_TEXTS.map(lambda t: t.encode("utf-8", "surrogatepass"))),
)  # fmt: skip


class _StubNode:
    """What the HTTP routes read of a node, without a host: a ledger, a recipe queue, metrics."""

    def __init__(self) -> None:
        genesis = Genesis(tuple(Validator(f"p{i}", k.public_key, "r", 1.0) for i, k in enumerate(KEYS)), 0.0)
        self.ledger = Ledger(genesis)
        self.recipes = RecipeQueue(self.ledger, Recipe.parse(RECIPE), limit=8)
        self.metrics = NodeMetrics()

    def media_path(self, slot: int) -> None:
        return None

    async def submit_recipe(self, recipe: Recipe) -> bytes:
        return self.recipes.queue(recipe)


def http_door(request: tuple[str, str, list[tuple[bytes, bytes]], bytes]) -> None:
    """One request through the operator face's ASGI app, in process: any answer but a 500."""
    from node.settings import HttpSection
    from node.web import Face, build_app

    method, path, headers, body = request
    stub = _StubNode()
    app = build_app(stub, Face(stub.metrics, stub, recipes_need_token=False), HttpSection(), None)  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []
    chunks = [body[i : i + 700] for i in range(0, len(body), 700)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode("latin-1", "replace"), "query_string": b"", "root_path": "",
        "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 9464),
    }  # fmt: skip
    trio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] != 500, (method, path, headers, body[:100])


def _toml_from(value: Any) -> str:
    def scalar(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, float) or v == v else "nan"

    lines = []
    for key, v in value.items() if isinstance(value, dict) else []:
        if isinstance(v, dict):
            lines.append(f"[{json.dumps(str(key))}]")
            lines += [
                f"{json.dumps(str(k))} = {scalar(x) if not isinstance(x, dict | list) else json.dumps(x, default=str)}"
                for k, x in v.items()
            ]
        else:
            lines.insert(
                0,
                f"{json.dumps(str(key))} = {scalar(v) if not isinstance(v, dict | list) else json.dumps(v, default=str)}",
            )
    return "\n".join(lines)


CONFIG_SECTIONS = st.sampled_from(["node", "chain", "slot", "agreement", "network", "limits", "generation"])
CONFIG_TEXTS = st.one_of(
    st.text(max_size=300),
    DEPTHS.map(lambda n: "a = " + "[" * n),
    st.builds(
        lambda sec, body: {sec: body},
        CONFIG_SECTIONS,
        st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=4),
    ).map(_toml_from),
    st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5).map(_toml_from),
)


def _parse_toml(text: str) -> dict | None:
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        return None  # the loaders report these as their own errors (NodeSettings.load, Scenario.load)


def config_door(text: str) -> None:
    data = _parse_toml(text)
    if data is None:
        return
    with contextlib.suppress(NodeConfigError):
        NodeSettings.from_mapping(data, origin="fuzz")


def scenario_door(text: str) -> None:
    data = _parse_toml(text)
    if data is None:
        return
    with contextlib.suppress(ScenarioError):
        Scenario.from_mapping(data, origin="fuzz")


@dataclass(frozen=True)
class Target:
    name: str
    strategy: Any
    run: Callable[..., None]
    needs_dir: bool = False


TARGETS = [
    Target("recipe", RECIPE_TEXTS, recipe_door),
    Target("gossip", st.tuples(st.sampled_from(list(Topic)), TOPIC_INPUTS), gossip_door),
    Target("consensus_decoders", CBOR_BYTES, consensus_decoders),
    Target("media_stream", STREAM_INPUTS, media_server_door, needs_dir=True),
    Target("certsync_stream", STREAM_INPUTS, certsync_door),
    Target("http_request", HTTP_INPUTS, http_door),
    Target("node_config", CONFIG_TEXTS, config_door),
    Target("simnet_scenario", CONFIG_TEXTS, scenario_door),
]
