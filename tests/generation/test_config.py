from pathlib import Path

import pytest

from generation.config import GenerationSettings
from generation.errors import ConfigError

SEED_YAML = """
device:
  name: "cpu"
  allow_tf32: true
vram:
  soft_limit_gb: 11.0
  hard_limit_gb: 11.5
models:
  precision:
    flux: "nf4"
    liveportrait: "fp16"
    kokoro: "fp32"
    clip_b: "int8"
    clip_l: "int8"
buffers:
  actor: {height: 512, width: 512, channels: 3}
  video: {frames: 1080, height: 512, width: 512, channels: 3}
  audio: {sample_rate: 24000, duration_sec: 45}
pipeline:
  generation_timeout_sec: 20.0
  parallel_audio_actor: true
"""


def test_seed_yaml_schema_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SEED_YAML)
    s = GenerationSettings.load(path)
    assert s.models.precision.flux == "nf4"
    assert s.buffers.video.frames == 1080
    assert s.pipeline.generation_timeout_sec == 20.0
    assert s.resolved_device() == "cpu"
    assert s.resolved_source() == "tiny"  # 'auto' on a CPU


def test_toml_generation_table_maps_onto_the_same_settings(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        """
[node]
name = "ignored by the engine"

[generation.vram]
soft_limit_gb = 10.0
hard_limit_gb = 11.0

[generation.buffers.video]
frames = 24
height = 64
width = 64
"""
    )
    s = GenerationSettings.load(path)
    assert (s.vram.soft_limit_gb, s.vram.hard_limit_gb) == (10.0, 11.0)
    assert (s.buffers.video.frames, s.buffers.video.height) == (24, 64)
    assert s.buffers.actor.height == 512  # untouched keys keep the seed's defaults


def test_packaged_profiles_are_valid() -> None:
    assert GenerationSettings.packaged("default").buffers.video.frames == 1080
    tiny = GenerationSettings.packaged("tiny")
    assert tiny.resolved_source() == "tiny"
    assert tiny.resolved_device() == "cpu"
    with pytest.raises(ConfigError, match="no packaged config named 'nope'"):
        GenerationSettings.packaged("nope")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"vram": {"soft_limit_gb": 12.0, "hard_limit_gb": 11.5}},
            r"vram: soft_limit_gb \(12.0\) must not exceed",
        ),
        ({"vram": {"hard_limit_gb": -1}}, r"vram.hard_limit_gb: Input should be greater than 0"),
        ({"vram": {"colour": "red"}}, r"vram.colour: unknown key"),
        ({"gpu": {}}, r"gpu: unknown key"),
        ({"device": {"name": "tpu:0"}}, r"device.name: unknown device 'tpu:0'"),
        ({"models": {"precision": {"flux": "int3"}}}, r"models.precision.flux: Input should be"),
        ({"models": {"source": "huge"}}, r"models.source: Input should be"),
        ({"buffers": {"actor": {"height": 500}}}, r"buffers.actor.height: 500 is not a multiple of 16"),
        (
            {"buffers": {"video": {"frames": 0}}},
            r"buffers.video.frames: Input should be greater than or equal to 1",
        ),
        ({"buffers": {"audio": {"sample_rate": 100}}}, r"buffers.audio.sample_rate"),
        ({"pipeline": {"generation_timeout_sec": 0}}, r"pipeline.generation_timeout_sec"),
        ({"verification": {"weight_b": 0.5, "weight_l": 0.6}}, r"weight_b \+ weight_l must be 1"),
        ({"pipeline": {"parallel_audio_actor": "maybe"}}, r"pipeline.parallel_audio_actor"),
    ],
)
def test_bad_values_name_their_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GenerationSettings.from_mapping(data)


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        GenerationSettings.from_mapping({"vram": {"hard_limit_gb": 0}, "flux": {"num_inference_steps": 0}})
    text = str(info.value)
    assert "vram.hard_limit_gb" in text and "flux.num_inference_steps" in text


def test_settings_are_frozen() -> None:
    s = GenerationSettings()
    with pytest.raises(Exception, match="frozen"):
        s.vram = None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "vram: [unclosed", "not valid YAML"),
        ("bad.toml", "[generation\nx=1", "not valid TOML"),
        ("list.yaml", "- 1\n- 2\n", "expected a table of settings, got list"),
        ("config.ini", "[x]", "unknown config format '.ini'"),
    ],
)
def test_malformed_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        GenerationSettings.load(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.yaml: config file not found"):
        GenerationSettings.load(tmp_path / "missing.yaml")


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert GenerationSettings.load(path) == GenerationSettings()
