import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from generation.models.tiny import materialise
from generation.weights.layout import LAYOUTS
from node.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, main
from tests.conftest import tiny_settings


@pytest.fixture
def tiny_config(tiny_cache: Path, tmp_path: Path) -> Path:
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump(tiny_settings(tiny_cache).model_dump(mode="json")))
    return path


@pytest.fixture
def recipe_file(recipe: dict, tmp_path: Path) -> Path:
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path


def test_generate_writes_actor_frames_and_result(
    tiny_config: Path, recipe_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            "--recipe",
            str(recipe_file),
            "--out",
            str(out),
            "--config",
            str(tiny_config),
            "--slot-id",
            "42",
            "--seconds",
            "2",
        ]
    )
    assert code == EXIT_OK
    summary = json.loads((out / "result.json").read_text())
    assert summary["success"] is True and summary["slot_id"] == 42
    assert summary["warp_mode"] == "liveportrait"
    assert len(summary["clip_embedding"]) == 80
    frames = sorted((out / "frames").glob("*.png"))
    assert len(frames) == summary["video_frames_shape"][0] == 48
    from PIL import Image

    assert Image.open(out / "actor.png").size == (64, 64)
    from generation.media import file_sha256

    assert summary["media"]["content_hash"] == file_sha256(out / "slot.mp4")
    assert (out / "speech.wav").is_file()
    assert summary["sources"] == {
        "image": "tiny (cpu)",
        "speech": "kokoro-82m int8 onnx (PyPI)",
        "warp": "liveportrait",
    }


def test_generate_writes_the_length_asked_for_with_the_scripts_real_speech(
    tiny_config: Path, recipe_file: Path, tmp_path: Path
) -> None:
    import av

    out = tmp_path / "out"
    args = ["generate", "--recipe", str(recipe_file), "--out", str(out), "--config", str(tiny_config)]
    assert main([*args, "--seconds", "5"]) == EXIT_OK
    with av.open(str(out / "slot.mp4")) as mp4:
        video = mp4.streams.video[0]
        assert video.frames == 5 * 24 and (video.width, video.height) == (64, 64)
        assert mp4.streams.audio and float(mp4.duration or 0) / av.time_base >= 4.9
    assert main([*args, "--seconds", "-1"]) == EXIT_BAD_INPUT  # refused by the buffers' own bounds


def test_a_whole_slot_is_the_default_length_even_for_the_tiny_engine(tiny_config: Path) -> None:
    from generation.config import GenerationSettings
    from generation.recipe import SLOT_AUDIO_SEC

    tiny = GenerationSettings.load(tiny_config)
    assert tiny.buffers.video.frames == 48  # the tests' 2 s slots
    whole = tiny.with_media_seconds(SLOT_AUDIO_SEC)
    assert whole.buffers.audio.duration_sec == 45.0 and whole.buffers.video.frames == 45 * 24
    assert whole.buffers.video.width == 64 and whole.models == tiny.models


def test_generate_rejects_a_bad_recipe_before_loading(tiny_config: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"audio_track": {"script": "hi", "voice_id": "nobody"}, "visual_track": {"prompt": "x"}})
    )
    code = main(
        ["generate", "--recipe", str(bad), "--out", str(tmp_path / "o"), "--config", str(tiny_config)]
    )
    assert code == EXIT_BAD_INPUT
    assert "audio_track.voice_id: unknown voice 'nobody'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_generate_reports_a_failed_slot(tiny_cache: Path, recipe_file: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "late.yaml"
    data = tiny_settings(tiny_cache, pipeline__generation_timeout_sec=1e-6).model_dump(mode="json")
    config.write_text(yaml.safe_dump(data))
    code = main(
        ["generate", "--recipe", str(recipe_file), "--out", str(tmp_path / "o"), "--config", str(config)]
    )
    assert code == EXIT_FAILED
    assert "timed out" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "result.json").read_text())["success"] is False


def test_bad_config_and_missing_recipe(tmp_path: Path, recipe_file: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("vram: {hard_limit_gb: -3}\n")
    assert (
        main(["generate", "--recipe", str(recipe_file), "--out", str(tmp_path), "--config", str(config)])
        == EXIT_BAD_INPUT
    )
    assert "vram.hard_limit_gb" in capsys.readouterr().err
    assert (
        main(["generate", "--recipe", str(tmp_path / "none.json"), "--out", str(tmp_path)]) == EXIT_BAD_INPUT
    )
    assert "cannot read recipe" in capsys.readouterr().err


def test_weights_check(tiny_cache: Path, tmp_path: Path, capsys) -> None:
    root = [materialise(layout, 0, tiny_cache) for layout in LAYOUTS.values()][0].parent
    assert main(["weights", "check", str(root)]) == EXIT_OK
    assert "flux-schnell: ok" in capsys.readouterr().out
    assert main(["weights", "check", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "flux-schnell: weights directory" in capsys.readouterr().err
    assert main(["weights", "check", str(root), "--models", "sdxl"]) == EXIT_BAD_INPUT


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "node.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "generate" in out.stdout and "weights" in out.stdout


def test_example_recipe_makes_an_intelligible_playable_slot(tiny_cache: Path, tmp_path: Path) -> None:
    """The acceptance check of the speech issue: H.264 + AAC at 24 fps, audio as long as the speech,
    and an offline recogniser hears the script in the MP4's own audio track."""
    import av
    import numpy as np
    import torch

    from tests.generation.test_speech import _recognise

    config = tmp_path / "engine.yaml"
    data = tiny_settings(tiny_cache, buffers__audio__duration_sec=45).model_dump(mode="json")
    config.write_text(yaml.safe_dump(data))
    recipe = Path(__file__).resolve().parent.parent / "examples" / "recipe.json"
    out = tmp_path / "slot"
    assert main(["generate", "--recipe", str(recipe), "--out", str(out), "--config", str(config)]) == EXIT_OK
    summary = json.loads((out / "result.json").read_text())
    with av.open(str(out / "slot.mp4")) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert video.average_rate == 24
        rate = audio.sample_rate
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    speech_sec = summary["audio_samples"] / 24000
    assert speech_sec > 2.0
    assert abs(len(samples) / rate - speech_sec) < 0.1  # AAC adds at most a frame or two
    heard = set(_recognise(torch.from_numpy(samples.astype(np.float32))).split())
    assert {"welcome", "cable", "network"} & heard, heard


def test_keygen_writes_a_private_key_and_refuses_to_overwrite_it(tmp_path: Path, capsys) -> None:
    from network.identity import load_key_file

    key = tmp_path / "node.key"
    assert main(["keygen", "--out", str(key)]) == EXIT_OK
    out = capsys.readouterr().out
    identity = load_key_file(key)
    assert str(identity.peer_id) in out and identity.public_key.hex() in out
    assert (key.stat().st_mode & 0o777) == 0o600
    assert main(["keygen", "--out", str(key)]) == EXIT_BAD_INPUT
    assert "already exists" in capsys.readouterr().err
    assert load_key_file(key) == identity
    assert main(["keygen", "--out", str(key), "--force"]) == EXIT_OK
    assert load_key_file(key) != identity
