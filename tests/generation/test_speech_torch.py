"""The torch Kokoro sources: tiny (seeded) through the same loader as full weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from generation.errors import WeightsError
from generation.models.tiny import materialise
from generation.speech.kokoro_base import EMOTIONS, MAX_TOKENS, SpeechError
from generation.speech.kokoro_torch import (
    FADE_SAMPLES,
    SAMPLES_PER_FRAME,
    VOICES,
    KokoroTorch,
    TorchUtterance,
    fade_joins,
    load_kokoro_torch,
    plan_windows,
)
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
    durations = kokoro._prepare(phonemes, "rick_c137", "neutral", 1.0).durations
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
        lengths[emotion] = kokoro.synthesize(
            "Hello there, how are you today?", "beth", emotion=emotion
        ).numel()
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
    result = kokoro.synthesize_with_timings(
        TEXT + " " + TEXT, "summer", max_duration_sec=len(one.audio) / 24000 + 0.1
    )
    assert result.truncated and result.sentences_spoken == 1 and result.sentences_total == 4


def test_one_window_renders_what_kmodel_s_own_forward_does(tiny_dir: Path) -> None:
    kokoro = load_kokoro_torch(tiny_dir, "cpu", window_sec=60.0)
    phonemes, _ = kokoro.phonemize("Good evening, viewers.")
    utterance = kokoro._prepare(phonemes, "beth", "neutral", 1.0)
    tokens = torch.tensor([[0, *(kokoro.vocab[c] for c in phonemes), 0]])
    style = torch.from_numpy(kokoro.style("beth", "neutral", len(phonemes)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(utterance.seed)
        expected, pred_dur = kokoro.model.forward_with_tokens(tokens, style, 1.0)
    assert pred_dur.tolist() == utterance.frames_per_token
    rendered = utterance.render()
    assert len(rendered) == utterance.num_samples == expected.numel()
    np.testing.assert_allclose(rendered, expected.clamp(-1, 1).numpy(), atol=1e-5)


def test_windows_cover_the_frames_within_the_bound_and_cut_after_words() -> None:
    frames = [3, 4, 2, 5, 1, 6, 3]  # BOS, six tokens; tokens 2 and 5 end words
    windows = plan_windows(frames, breaks=[2, 5], max_frames=10, limit=sum(frames), min_frames=1)
    # after token 2 (the last word end within 10 frames); then no word end fits, so after token 4
    assert windows == [(0, 9), (9, 15), (15, 24)]
    # no word end inside a window: cut after a token; a token longer than the window: cut inside it
    assert plan_windows([3, 4, 2], breaks=[], max_frames=5, limit=9) == [(0, 3), (3, 7), (7, 9)]
    assert plan_windows([12], breaks=[], max_frames=5, limit=12) == [(0, 5), (5, 10), (10, 12)]
    assert plan_windows(frames, breaks=[2, 5], max_frames=10, limit=7) == [(0, 7)]  # only up to the limit
    # no window shorter than min_frames: the last cut moves back to leave the remainder enough
    assert plan_windows([12], breaks=[], max_frames=5, limit=12, min_frames=3) == [(0, 5), (5, 9), (9, 12)]
    # nor a cut at a word end that would leave a window shorter than that
    assert plan_windows([1, 9], breaks=[0], max_frames=5, limit=10, min_frames=2) == [(0, 5), (5, 10)]


def test_fades_touch_only_the_joins() -> None:
    pieces = [np.ones(400, np.float32), np.ones(400, np.float32), np.ones(400, np.float32)]
    fade_joins(pieces, FADE_SAMPLES)
    assert pieces[0][0] == 1 and pieces[0][-1] == 0 and pieces[2][0] == 0 and pieces[2][-1] == 1
    assert pieces[1][0] == 0 and pieces[1][-1] == 0 and np.all(pieces[1][FADE_SAMPLES:-FADE_SAMPLES] == 1)
    assert np.all(np.diff(pieces[0][-FADE_SAMPLES:]) <= 0)


def test_a_sentence_longer_than_the_window_is_rendered_in_bounded_windows(
    tiny_dir: Path, monkeypatch
) -> None:
    narrow = load_kokoro_torch(tiny_dir, "cpu", window_sec=0.3)
    text = "The weather in dimension C-137 is fine, and tomorrow it will rain frogs."
    phonemes, _ = narrow.phonemize(text)
    utterance = narrow._prepare(phonemes, "summer", "neutral", 1.0)
    decoded: list[int] = []
    narrow.model.decoder.register_forward_pre_hook(lambda _, args: decoded.append(args[0].shape[-1]))
    audio = utterance.render()
    assert len(decoded) > 1 and max(decoded) <= narrow.window_frames == 12
    assert len(audio) == utterance.num_samples == sum(decoded) * SAMPLES_PER_FRAME
    decoded.clear()
    cut = narrow._prepare(phonemes, "summer", "neutral", 1.0).render(max_samples=10 * SAMPLES_PER_FRAME + 7)
    assert len(cut) == 10 * SAMPLES_PER_FRAME + 7 and decoded == [11]  # nothing rendered past the limit
    with pytest.raises(SpeechError, match="window_sec"):
        KokoroTorch(narrow.model, {}, torch.device("cpu"), window_sec=0.1)
    assert (
        len(narrow._prepare(phonemes, "summer", "neutral", 1.0).render(max_samples=5)) == 5
    )  # under a frame


def test_a_sentence_that_would_overrun_the_slot_is_never_rendered(kokoro, monkeypatch) -> None:
    one = kokoro.synthesize_with_timings("Good evening, viewers.", "summer")
    rendered: list[int] = []
    render = TorchUtterance.render
    monkeypatch.setattr(
        TorchUtterance,
        "render",
        lambda self, max_samples=None: rendered.append(self.num_samples) or render(self, max_samples),
    )
    result = kokoro.synthesize_with_timings(TEXT, "summer", max_duration_sec=len(one.audio) / 24000 + 0.1)
    assert result.sentences_spoken == 1 and rendered == [len(one.audio)]


def test_a_sentence_beyond_the_context_is_split_not_dropped(kokoro) -> None:
    clause = "the meatball candidate promised gravy for every household in the district"
    sentence = ", ".join([clause] * 12) + "."
    assert len(kokoro.phonemize(sentence)[0]) > MAX_TOKENS
    chunks = kokoro.phonemize_chunks(sentence)
    assert len(chunks) > 1 and all(len(p) <= MAX_TOKENS for p, _ in chunks)
    assert sum(len(w) for _, w in chunks) == len(kokoro.phonemize(sentence)[1])  # every word kept
    result = kokoro.synthesize_with_timings(sentence, "rick_c137")
    assert result.sentences_total == len(chunks) and result.sentences_spoken == len(chunks)
    assert [w.word for w in result.words].count("gravy") == 12


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

    pipeline = VortexPipeline(
        settings=tiny_settings(tiny_cache, speech__source="tiny", speech__window_sec=0.5)
    )
    assert pipeline.sources["speech"] == "tiny kokoro torch (cpu)"
    assert pipeline.registry.get_model("kokoro").window_frames == 20  # speech.window_sec reaches the model
    result = anyio.run(pipeline.generate_slot, recipe, 3)
    assert result.success, result.error_msg
    assert result.audio_waveform.numel() > 0 and result.phonemes and result.words
