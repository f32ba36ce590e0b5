"""Speech with the real Kokoro-82M int8 ONNX model from PyPI (no tiny variant involved)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generation.speech import EMOTIONS, SpeechError, load_kokoro
from generation.speech.kokoro_onnx import SAMPLE_RATE, VOICES, split_sentences


@pytest.fixture(scope="module")
def kokoro():
    return load_kokoro()


def _recognise(audio: torch.Tensor) -> str:
    """What pocketsphinx's bundled English model hears (resampled to 16 kHz)."""
    from pocketsphinx import Decoder

    x = audio.numpy().astype(np.float64)
    x16 = np.interp(np.arange(0, len(x), SAMPLE_RATE / 16000), np.arange(len(x)), x)
    decoder = Decoder(samprate=16000)
    decoder.start_utt()
    decoder.process_raw((np.clip(x16, -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
    decoder.end_utt()
    return decoder.hyp().hypstr if decoder.hyp() else ""


def test_real_intelligible_english(kokoro) -> None:
    audio = kokoro.synthesize("Welcome to the cable network. We have a show for you.", "rick_c137")
    assert audio.dtype == torch.float32 and audio.dim() == 1
    assert 2.0 < audio.numel() / SAMPLE_RATE < 8.0
    assert audio.abs().max() <= 1.0 and audio.std() > 0.01
    heard = _recognise(audio).split()
    expected = {"welcome", "cable", "network", "show"}
    assert len(expected & set(heard)) >= 3, heard


def test_deterministic(kokoro) -> None:
    a = kokoro.synthesize("Wubba lubba dub dub!", "morty", 1.1, "manic")
    b = kokoro.synthesize("Wubba lubba dub dub!", "morty", 1.1, "manic")
    assert torch.equal(a, b)


def test_voices_emotions_and_speed_change_the_delivery(kokoro) -> None:
    text = "I turned myself into a pickle."
    base = kokoro.synthesize(text, "rick_c137")
    assert not torch.equal(base, kokoro.synthesize(text, "summer"))
    assert (
        kokoro.synthesize(text, "rick_c137", 1.2).numel()
        < base.numel()
        < kokoro.synthesize(text, "rick_c137", 0.8).numel()
    )
    sad, manic = (
        kokoro.synthesize(text, "rick_c137", emotion="sad"),
        kokoro.synthesize(text, "rick_c137", emotion="manic"),
    )
    assert manic.numel() < base.numel() < sad.numel()  # rate: documented per emotion
    assert EMOTIONS["manic"].rate > 1 > EMOTIONS["sad"].rate
    assert set(VOICES) == {"rick_c137", "morty", "summer", "jerry", "beth"}


def test_writes_into_the_buffer_and_cuts_at_a_sentence(kokoro) -> None:
    buffer = torch.zeros(int(3.0 * SAMPLE_RATE))
    result = kokoro.synthesize_with_timings(
        "Short one. "
        + "This second sentence is far too long to fit in what is left of the three seconds. " * 2,
        "beth",
        output=buffer,
        max_duration_sec=3.0,
    )
    assert result.truncated and result.sentences_spoken == 1 and result.sentences_total == 3
    assert result.audio.data_ptr() == buffer.data_ptr()
    assert result.audio.numel() < 2.5 * SAMPLE_RATE  # one short sentence, not the 3 s buffer


def test_first_sentence_longer_than_the_slot_is_cut_at_the_slot_end(kokoro) -> None:
    result = kokoro.synthesize_with_timings(
        "This single sentence is certainly longer than half a second.", "jerry", max_duration_sec=0.5
    )
    assert result.truncated and result.audio.numel() == int(0.5 * SAMPLE_RATE)


def test_timings_cover_the_audio_in_order(kokoro) -> None:
    result = kokoro.synthesize_with_timings("Hello there. General Kenobi!", "rick_c137")
    words = [w.word for w in result.words]
    assert words == ["Hello", "there", "General", "Kenobi"]
    n = result.audio.numel()
    for w in result.words:
        assert 0 <= w.start < w.end <= n
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert result.words[2].start > result.words[1].end  # the gap between sentences
    assert all(p.end > p.start for p in result.phonemes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "   "}, "the script is empty"),
        ({"text": "... --- !!!"}, "nothing in the script is pronounceable"),
        ({"text": "hi", "speed": 1.5}, "speed must be within 0.8..1.2"),
        ({"text": "hi", "voice_id": "gandalf"}, "unknown voice 'gandalf'"),
        ({"text": "hi", "emotion": "bored"}, "unknown emotion 'bored'"),
    ],
)
def test_bad_requests(kokoro, kwargs: dict, message: str) -> None:
    with pytest.raises(SpeechError, match=message):
        kokoro.synthesize(**kwargs)


def test_sentence_splitting() -> None:
    assert split_sentences("One. Two!  Three?\nFour") == ["One.", "Two!", "Three?", "Four"]
    assert split_sentences("  ") == []


@pytest.mark.parametrize("voice", sorted(VOICES))
def test_every_voice_speaks(kokoro, voice: str) -> None:
    audio = kokoro.synthesize("Get schwifty.", voice)
    assert audio.numel() > 0.3 * SAMPLE_RATE and audio.std() > 0.01


@pytest.mark.parametrize("emotion", sorted(EMOTIONS))
def test_every_emotion_speaks_and_differs_from_neutral(kokoro, emotion: str) -> None:
    audio = kokoro.synthesize("Get schwifty.", "summer", emotion=emotion)
    neutral = kokoro.synthesize("Get schwifty.", "summer")
    assert audio.numel() > 0
    assert torch.equal(audio, neutral) == (emotion == "neutral")


@pytest.mark.parametrize("speed", [0.8, 1.2])
def test_speed_bounds_are_inclusive(kokoro, speed: float) -> None:
    assert kokoro.synthesize("Get schwifty.", "beth", speed).numel() > 0


@pytest.mark.parametrize("speed", [0.79, 1.21])
def test_speed_out_of_range(kokoro, speed: float) -> None:
    with pytest.raises(SpeechError, match="speed must be within 0.8..1.2"):
        kokoro.synthesize("Get schwifty.", "beth", speed)
