"""The torch Kokoro sources: tiny (seeded) through the same loader as full weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from generation.errors import WeightsError
from generation.models.tiny import materialise
from generation.speech.kokoro_base import EMOTIONS, SpeechError
from generation.speech.kokoro_torch import SAMPLES_PER_FRAME, VOICES, load_kokoro_torch
from generation.weights.layout import KOKORO, KOKORO_CHECKPOINT

TEXT = "Good evening, viewers. The weather in dimension C-137 is fine."


@pytest.fixture(scope="module")
def tiny_dir(tiny_cache: Path) -> Path:
    return materialise(KOKORO, 0, tiny_cache)


@pytest.fixture(scope="module")
def kokoro(tiny_dir: Path):
    return load_kokoro_torch(tiny_dir, "cpu")


def test_tiny_speech_has_the_model_s_own_durations_as_timings(kokoro) -> None:
    result = kokoro.synthesize_with_timings("Good evening, viewers.", "rick_c137")
    audio = result.audio
    assert audio.dtype == torch.float32 and audio.dim() == 1 and audio.abs().max() <= 1.0
    phonemes, _ = kokoro.phonemize("Good evening, viewers.")
    _, durations = kokoro._infer(phonemes, "rick_c137", "neutral", 1.0)
    assert all(d % SAMPLES_PER_FRAME == 0 and d > 0 for d in durations)
    assert len(audio) == sum(durations)  # one sentence: the audio is exactly the predicted durations
    spoken = [p for p in phonemes if not p.isspace()]
    assert [t.phoneme for t in result.phonemes] == spoken
    # each phoneme's range is its own predicted duration, back to back after the start token
    edges = [durations[0]]
    for d in durations[1:-1]:
        edges.append(edges[-1] + d)
    ranges = [(edges[i], edges[i + 1]) for i, p in enumerate(phonemes) if not p.isspace()]
    assert [(t.start, t.end) for t in result.phonemes] == ranges
    assert [w.word for w in result.words] == ["Good", "evening", "viewers"]
    assert all(0 <= w.start < w.end <= len(audio) for w in result.words)


def test_every_voice_emotion_and_the_speed_bounds(kokoro) -> None:
    lengths = {}
    for voice in VOICES:
        assert kokoro.synthesize("Hello.", voice).numel() > 0
    for emotion in EMOTIONS:
        lengths[emotion] = kokoro.synthesize("Hello there, how are you today?", "beth", emotion=emotion).numel()
    assert lengths["manic"] < lengths["neutral"] < lengths["sad"]  # rate is part of the delivery
    a = kokoro.synthesize("Hello there.", "beth", emotion="angry")
    b = kokoro.synthesize("Hello there.", "beth", emotion="angry")
    assert torch.equal(a, b)  # deterministic
    for speed in (0.8, 1.2):
        assert kokoro.synthesize("Hi.", "morty", speed=speed).numel() > 0
    with pytest.raises(SpeechError, match="0.8..1.2"):
        kokoro.synthesize("Hi.", "morty", speed=1.3)
    with pytest.raises(SpeechError, match="unknown voice 'squanchy'"):
        kokoro.synthesize("Hi.", "squanchy")
    with pytest.raises(SpeechError, match="unknown emotion"):
        kokoro.synthesize("Hi.", "morty", emotion="bored")
    with pytest.raises(SpeechError, match="empty"):
        kokoro.synthesize("   ", "morty")


def test_a_long_script_is_cut_at_a_sentence_to_fit(kokoro) -> None:
    one = kokoro.synthesize_with_timings("Good evening, viewers.", "summer")
    result = kokoro.synthesize_with_timings(TEXT + " " + TEXT, "summer", max_duration_sec=len(one.audio) / 24000 + 0.1)
    assert result.truncated and result.sentences_spoken == 1 and result.sentences_total == 4


def test_the_loader_names_a_missing_or_mismatched_file(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "kokoro-82m"
    shutil.copytree(tiny_dir, broken)
    (broken / "voices" / "af_heart.pt").unlink()
    with pytest.raises(WeightsError, match="missing voices/af_heart.pt"):
        load_kokoro_torch(broken)
    shutil.copy(tiny_dir / "voices" / "af_heart.pt", broken / "voices" / "af_heart.pt")
    config = json.loads((broken / "config.json").read_text())
    config["plbert"]["num_hidden_layers"] = 3  # the checkpoint has 2: a tensor would be left random
    config["plbert"]["hidden_size"] = 96
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="does not match the config"):
        load_kokoro_torch(broken)
    (broken / KOKORO_CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_kokoro_torch(broken)


@pytest.mark.slow
def test_the_engine_speaks_with_the_tiny_torch_source(tiny_cache: Path, recipe: dict) -> None:
    import anyio

    from generation.pipeline import VortexPipeline
    from tests.conftest import tiny_settings

    pipeline = VortexPipeline(settings=tiny_settings(tiny_cache, speech__source="tiny"))
    assert pipeline.sources["speech"] == "tiny kokoro torch (cpu)"
    result = anyio.run(pipeline.generate_slot, recipe, 3)
    assert result.success, result.error_msg
    assert result.audio_waveform.numel() > 0 and result.phonemes and result.words
