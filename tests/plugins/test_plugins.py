"""Plugins: manifests, policy, execution limits, isolation, and a renderer in a real slot."""

from __future__ import annotations

import copy
import textwrap
import time
from pathlib import Path

import anyio
import pytest
import torch
import yaml

from generation.config import PluginSettings
from generation.plugins import (
    ManifestError,
    PluginError,
    PluginHost,
    PluginRegistry,
    PluginTimeout,
    PolicyRefusal,
    SchemaViolation,
    load_manifest,
)
from generation.plugins.registry import check_policy
from tests.conftest import DELETE, set_path

EXAMPLES = Path(__file__).resolve().parents[2] / "generation" / "plugins" / "examples"

BASE = {
    "schema_version": 1,
    "name": "echo",
    "version": "0.1.0",
    "entrypoint": "plugin.py:Plugin",
    "description": "test plugin",
    "supported_lanes": ["lane1"],
    "deterministic": True,
    "resources": {"vram_gb": 0, "max_latency_ms": 1000, "max_concurrency": 2},
    "io": {
        "input_schema": {"type": "object", "required": ["x"], "properties": {"x": {"type": "integer"}}},
        "output_schema": {"type": "object", "required": ["y"], "properties": {"y": {"type": "integer"}}},
    },
}

ECHO = """
class Plugin:
    def run(self, payload):
        return {"y": payload["x"] * 2}
"""


def make_plugin(root: Path, folder: str, code: str = ECHO, **changes) -> Path:
    manifest = copy.deepcopy(BASE)
    manifest["name"] = folder.replace("-", "_")
    for dotted, value in changes.items():
        set_path(manifest, dotted, value, sep="__")
    d = root / folder
    d.mkdir(parents=True)
    (d / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    (d / "plugin.py").write_text(textwrap.dedent(code))
    return d


_DELETE = DELETE
OPEN = PluginSettings(enabled=True, allow_untrusted=True, max_vram_gb=4)


def host_for(root: Path, **policy) -> PluginHost:
    settings = OPEN.model_copy(update={"directory": root, **policy})
    return PluginHost(PluginRegistry.discover(root, settings), settings)


# -- discovery and manifests ---------------------------------------------------------------------------
def test_discovers_the_example_plugin() -> None:
    host = host_for(EXAMPLES, trusted=("title_card",))
    assert host.registry.list_plugins() == ["title_card"]
    m = host.manifest("title_card")
    assert m.replaces == "actor" and m.deterministic and "lane0" in m.supported_lanes
    assert host.registry.get("title_card").trusted


def test_default_config_has_plugins_off() -> None:
    assert PluginHost.from_config().registry.list_plugins() == []


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"name": _DELETE}, "name", "missing"),
        ({"entrypoint": _DELETE}, "entrypoint", "missing"),
        ({"resources__max_latency_ms": _DELETE}, "resources.max_latency_ms", "missing"),
        ({"io__output_schema": _DELETE}, "io.output_schema", "missing"),
        ({"colour": "red"}, "colour", "unknown key"),
        ({"resources__gpu": 1}, "resources.gpu", "unknown key"),
        ({"schema_version": 2}, "schema_version", "1 was expected"),
        ({"name": "Bad Name"}, "name", "does not match"),
        ({"version": "one"}, "version", "does not match"),
        ({"entrypoint": "no-class"}, "entrypoint", "does not match"),
        ({"description": ""}, "description", "should be non-empty"),
        ({"supported_lanes": []}, "supported_lanes", "should be non-empty"),
        ({"supported_lanes": ["lane7"]}, "supported_lanes.0", "is not one of"),
        ({"supported_lanes": ["lane1", "lane1"]}, "supported_lanes", "non-unique"),
        ({"deterministic": "yes"}, "deterministic", "is not of type 'boolean'"),
        ({"resources__vram_gb": -1}, "resources.vram_gb", "less than the minimum"),
        ({"resources__max_latency_ms": 0}, "resources.max_latency_ms", "less than the minimum"),
        ({"resources__max_latency_ms": 1.5}, "resources.max_latency_ms", "is not of type 'integer'"),
        ({"resources__max_concurrency": 0}, "resources.max_concurrency", "less than the minimum"),
        ({"replaces": "audio"}, "replaces", "is not one of"),
        ({"io__input_schema": {"type": "nonsense"}}, "io.input_schema", "not a valid JSON Schema"),
        (
            {"supported_lanes": ["lane0"], "deterministic": False, "replaces": "actor"},
            "deterministic",
            "must be deterministic",
        ),
        ({"supported_lanes": ["lane0"]}, "replaces", "must say which stage"),
    ],
)
def test_every_manifest_error_names_file_and_key(
    tmp_path: Path, changes: dict, key: str, message: str
) -> None:
    d = make_plugin(tmp_path, "bad", **changes)
    with pytest.raises(ManifestError) as info:
        load_manifest(d / "manifest.yaml")
    text = str(info.value)
    assert f"{d / 'manifest.yaml'}: {key}: " in text and message in text, text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("- a list", "<root>: expected a mapping"),
        (None, "no manifest.yaml"),
    ],
)
def test_unreadable_manifests(tmp_path: Path, content: str | None, message: str) -> None:
    (tmp_path / "p").mkdir()
    if content is not None:
        (tmp_path / "p" / "manifest.yaml").write_text(content)
    with pytest.raises(ManifestError, match=message):
        load_manifest(tmp_path / "p" / "manifest.yaml")


def test_one_bad_plugin_never_stops_the_others(tmp_path: Path) -> None:
    make_plugin(tmp_path, "alpha")
    make_plugin(tmp_path, "broken", version="x")
    make_plugin(tmp_path, "gamma")
    (tmp_path / "empty").mkdir()
    twin = make_plugin(tmp_path, "zeta")
    manifest = yaml.safe_load((twin / "manifest.yaml").read_text())
    manifest["name"] = "alpha"
    (twin / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    reg = PluginRegistry.discover(tmp_path, OPEN)
    assert reg.list_plugins() == ["alpha", "gamma"]
    errors = " ".join(reg.errors.values())
    assert "broken" in errors and "version" in errors
    assert "no manifest.yaml" in errors
    assert "'alpha' is already taken" in errors


def test_missing_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    reg = PluginRegistry.discover(tmp_path / "nope", OPEN)
    assert reg.list_plugins() == [] and "does not exist" in next(iter(reg.errors.values()))


# -- policy -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("policy", "changes", "reason"),
    [
        ({"allowlist": ("other",)}, {}, "not in the allowlist"),
        ({"allow_untrusted": False}, {}, "untrusted plugins are not allowed"),
        (
            {"max_vram_gb": 0.5},
            {"resources__vram_gb": 2},
            "declares 2.0 GB of VRAM, the policy allows 0.5 GB",
        ),
        ({}, {"resources__max_latency_ms": 120000}, "declares 120000 ms for lane1, the ceiling is 60000 ms"),
        (
            {},
            {"supported_lanes": ["lane0"], "replaces": "actor", "resources__max_latency_ms": 5000},
            "declares 5000 ms for lane0, the ceiling is 3000 ms",
        ),
    ],
)
def test_policy_refusals_say_why(tmp_path: Path, policy: dict, changes: dict, reason: str) -> None:
    make_plugin(tmp_path, "p", **changes)
    settings = OPEN.model_copy(update=policy)
    reg = PluginRegistry.discover(tmp_path, settings)
    assert reg.list_plugins() == []
    assert reason in reg.refused["p"]
    with pytest.raises(PluginError, match=reason):
        reg.get("p")


def test_trusted_plugins_load_even_when_untrusted_ones_may_not(tmp_path: Path) -> None:
    d = make_plugin(tmp_path, "p")
    m = load_manifest(d / "manifest.yaml")
    assert check_policy(m, PluginSettings(enabled=True, trusted=("p",))) is True
    with pytest.raises(PolicyRefusal):
        check_policy(m, PluginSettings(enabled=True))


# -- execution ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trusted", [True, False], ids=["in-process", "isolated"])
def test_runs_and_validates_input_and_output(tmp_path: Path, trusted: bool) -> None:
    make_plugin(tmp_path, "echo")
    make_plugin(
        tmp_path,
        "liar",
        code="class Plugin:\n    def run(self, payload):\n        return {'y': 'not a number'}\n",
    )
    host = host_for(tmp_path, trusted=("echo", "liar") if trusted else ())

    async def main() -> None:
        assert await host.run("echo", {"x": 21}) == {"y": 42}
        with pytest.raises(SchemaViolation, match=r"plugin 'echo': input x: 'a' is not of type 'integer'"):
            await host.run("echo", {"x": "a"})
        with pytest.raises(
            SchemaViolation, match=r"plugin 'liar': output y: 'not a number' is not of type 'integer'"
        ):
            await host.run("liar", {"x": 1})
        with pytest.raises(PluginError, match="does not support lane0"):
            await host.run("echo", {"x": 1}, lane="lane0")
        with pytest.raises(PluginError, match="no plugin named 'ghost'"):
            await host.run("ghost", {})

    anyio.run(main)
    assert host.stats["echo"]["ok"] == 1 and host.stats["echo"]["schema_violations"] == 1
    assert host.stats["liar"]["schema_violations"] == 1


HANG_ASYNC = """
import anyio
class Plugin:
    async def run(self, payload):
        await anyio.sleep(60)
        return {"y": 1}
"""
HANG_SYNC = """
import time
class Plugin:
    def run(self, payload):
        time.sleep(60)
        return {"y": 1}
"""


@pytest.mark.parametrize(
    ("code", "trusted"),
    [(HANG_ASYNC, True), (HANG_SYNC, True), (HANG_SYNC, False)],
    ids=["async-in-process", "sync-in-process", "isolated-process"],
)
def test_a_hanging_plugin_is_cut_off_at_its_declared_latency(
    tmp_path: Path, code: str, trusted: bool
) -> None:
    make_plugin(tmp_path, "hang", code=code, resources__max_latency_ms=300)
    host = host_for(tmp_path, trusted=("hang",) if trusted else ())

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(PluginTimeout, match="ran past its declared 300 ms"):
            await host.run("hang", {"x": 1})
        return time.monotonic() - started

    elapsed = anyio.run(main)
    assert elapsed < 5  # cut off, not waited for (the plugin would sleep 60 s)
    assert host.stats["hang"]["timeouts"] == 1


CRASHERS = {
    "raises": "class Plugin:\n    def run(self, payload):\n        raise RuntimeError('boom')\n",
    "exits": "import os\nclass Plugin:\n    def run(self, payload):\n        os._exit(9)\n",
    "segfaults": "import ctypes\nclass Plugin:\n    def run(self, payload):\n        ctypes.string_at(0)\n",
    "garbage": "import sys\nclass Plugin:\n    def run(self, payload):\n        sys.stdout.write('not json'); sys.stdout.flush()\n        import os; os._exit(0)\n",
    "import_error": "import no_such_module_anywhere\n",
}


@pytest.mark.parametrize("kind", sorted(CRASHERS))
def test_a_crashing_untrusted_plugin_is_contained(tmp_path: Path, kind: str) -> None:
    make_plugin(tmp_path, "crash", code=CRASHERS[kind])
    make_plugin(tmp_path, "echo")
    host = host_for(tmp_path)

    async def main() -> None:
        with pytest.raises(PluginError, match="plugin 'crash'"):
            await host.run("crash", {"x": 1})
        assert await host.run("echo", {"x": 2}) == {"y": 4}  # the host carries on

    anyio.run(main)
    assert host.stats["crash"]["failures"] == 1


def test_a_raising_trusted_plugin_is_contained(tmp_path: Path) -> None:
    make_plugin(tmp_path, "crash", code=CRASHERS["raises"])
    host = host_for(tmp_path, trusted=("crash",))
    with pytest.raises(PluginError, match="plugin 'crash' failed: RuntimeError: boom"):
        anyio.run(host.run, "crash", {"x": 1})


PEAK = """
import anyio
class Plugin:
    active = 0
    peak = 0
    async def run(self, payload):
        Plugin.active += 1
        Plugin.peak = max(Plugin.peak, Plugin.active)
        await anyio.sleep(0.05)
        Plugin.active -= 1
        return {"y": Plugin.peak}
"""


@pytest.mark.parametrize("limit", [1, 2])
def test_concurrency_is_limited_as_declared(tmp_path: Path, limit: int) -> None:
    make_plugin(tmp_path, "peak", code=PEAK, resources__max_concurrency=limit)
    host = host_for(tmp_path, trusted=("peak",))
    results = []

    async def main() -> None:
        async def one() -> None:
            results.append((await host.run("peak", {"x": 0}))["y"])

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)

    anyio.run(main)
    assert max(results) == limit


# -- the example plugin in a real slot ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def plugin_pipeline(tiny_cache: Path):
    from generation.pipeline import VortexPipeline
    from tests.conftest import tiny_settings

    settings = tiny_settings(
        tiny_cache,
        plugins={
            "enabled": True,
            "directory": str(EXAMPLES),
            "trusted": ["title_card"],
            "allow_untrusted": False,
        },
    )
    return VortexPipeline(settings=settings)


def test_the_title_card_renders_a_slot_end_to_end(plugin_pipeline, recipe: dict) -> None:
    recipe["renderer"] = {"name": "title_card", "params": {"title": "Ball Fondlers"}}
    a = anyio.run(plugin_pipeline.generate_slot, recipe, 3)
    b = anyio.run(plugin_pipeline.generate_slot, recipe, 3)
    assert a.success, a.error_msg
    assert any("plugin 'title_card' rendered the actor stage" in n for n in a.notes)
    assert "plugin:title_card" in a.stage_times_ms
    assert torch.equal(a.actor_image, b.actor_image)  # deterministic
    plain = anyio.run(plugin_pipeline.generate_slot, {k: v for k, v in recipe.items() if k != "renderer"}, 3)
    assert not torch.equal(a.actor_image, plain.actor_image)  # not Flux's image
    top, bottom = a.actor_image[:, 0, :].mean(dim=1), a.actor_image[:, -1, :].mean(dim=1)
    assert not torch.allclose(top, bottom)  # the gradient is there
    assert a.warp_mode == "liveportrait"  # the warp stage animated the plugin's image, not Flux's
    assert not torch.equal(a.video_frames, plain.video_frames)
    assert a.verification is not None


def test_unknown_renderer_falls_back_to_the_built_in_path(plugin_pipeline, recipe: dict) -> None:
    recipe["renderer"] = {"name": "missing_plugin"}
    result = anyio.run(plugin_pipeline.generate_slot, recipe, 3)
    assert result.success
    assert any("no plugin named 'missing_plugin'" in n and "built-in path" in n for n in result.notes)


def test_renderer_reference_is_validated(plugin_pipeline, recipe: dict) -> None:
    recipe["renderer"] = {"name": "Title Card!"}
    result = anyio.run(plugin_pipeline.generate_slot, recipe, 3)
    assert result.success is False and "renderer.name" in result.error_msg
    recipe["renderer"] = {"name": "title_card", "params": {"blob": "x" * 5000}}
    result = anyio.run(plugin_pipeline.generate_slot, recipe, 3)
    assert result.success is False and "renderer.params" in result.error_msg


# -- command line ------------------------------------------------------------------------------------------
def test_cli_plugins_check_and_list(tmp_path: Path, capsys) -> None:
    from node.cli import EXIT_BAD_INPUT, EXIT_OK, main

    assert main(["plugins", "check", str(EXAMPLES)]) == EXIT_OK
    assert "ok title_card" in capsys.readouterr().out
    make_plugin(tmp_path, "good")
    make_plugin(tmp_path, "bad", version="nope")
    assert main(["plugins", "check", str(tmp_path)]) == EXIT_BAD_INPUT
    out = capsys.readouterr().out
    assert "ok good" in out and "bad/manifest.yaml: version:" in out
    config = tmp_path / "engine.yaml"
    config.write_text(
        yaml.safe_dump({"plugins": {"enabled": True, "directory": str(EXAMPLES), "trusted": ["title_card"]}})
    )
    assert main(["plugins", "list", "--config", str(config)]) == EXIT_OK
    assert "title_card 1.0.0: lane0, lane1, replaces actor, 2000 ms, in-process" in capsys.readouterr().out
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump({"plugins": {"enabled": True, "directory": str(EXAMPLES)}}))
    assert main(["plugins", "list", "--config", str(strict)]) == EXIT_OK
    assert (
        "refused title_card: plugin 'title_card': untrusted plugins are not allowed"
        in capsys.readouterr().out
    )


BROKEN_PNG = """
class Plugin:
    def run(self, payload):
        return {"image_png_base64": "bm90IGEgcG5nIGF0IGFsbA=="}
"""
NO_KEY = """
class Plugin:
    def run(self, payload):
        return {"something": 1}
"""
FRAMES = """
import base64, io
from PIL import Image
class Plugin:
    def run(self, payload):
        out = []
        for shade in (0, 128, 255):
            buf = io.BytesIO()
            Image.new("RGB", (payload["width"], payload["height"]), (shade, shade, shade)).save(buf, format="PNG")
            out.append(base64.b64encode(buf.getvalue()).decode())
        return {"frames_png_base64": out}
"""


@pytest.fixture(scope="module")
def renderer_pipeline(tiny_cache: Path, tmp_path_factory):
    from generation.pipeline import VortexPipeline
    from tests.conftest import tiny_settings

    root = tmp_path_factory.mktemp("renderers")
    loose = {"input_schema": {"type": "object"}, "output_schema": {"type": "object"}}
    for folder, code, stage in [
        ("broken", BROKEN_PNG, "actor"),
        ("nokey", NO_KEY, "actor"),
        ("frames", FRAMES, "warp"),
    ]:
        make_plugin(root, folder, code=code, supported_lanes=["lane0"], replaces=stage, io=loose)
    settings = tiny_settings(
        tiny_cache,
        plugins={"enabled": True, "directory": str(root), "trusted": ["broken", "nokey", "frames"]},
    )
    return VortexPipeline(settings=settings)


@pytest.mark.parametrize(
    ("name", "reason"), [("broken", "cannot be decoded"), ("nokey", "has no image_png_base64")]
)
def test_undecodable_renderer_output_falls_back_to_the_built_in_path(
    renderer_pipeline, recipe, name, reason
) -> None:
    recipe["renderer"] = {"name": name}
    recipe["seed"] = 7  # the renderer field changes the recipe hash, so pin the seed to compare images
    result = anyio.run(renderer_pipeline.generate_slot, recipe, 5)
    assert result.success, result.error_msg
    assert any(reason in n and "built-in path" in n for n in result.notes), result.notes
    plain = anyio.run(
        renderer_pipeline.generate_slot, {k: v for k, v in recipe.items() if k != "renderer"}, 5
    )
    assert torch.equal(result.actor_image, plain.actor_image)  # Flux drew it


def test_a_warp_renderer_fills_the_frames_in_order(renderer_pipeline, recipe) -> None:
    recipe["renderer"] = {"name": "frames"}
    result = anyio.run(renderer_pipeline.generate_slot, recipe, 5)
    assert result.success and result.warp_mode == "plugin:frames"
    shades = [int(f.float().mean()) for f in result.video_frames[:6]]
    assert shades == [0, 128, 255, 0, 128, 255]
