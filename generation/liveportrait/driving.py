"""Speech to face motion: per-frame lip openness and shape, blinks, and idle head motion.

LivePortrait is trained to copy a driving video's motion; here the slot's own
speech drives it instead. Everything is computed on the frame grid of the
video (frame f shows time (f + 0.5) / fps):

- lips: each phoneme maps to a viseme (openness, rounding), held over the frames
  whose centres fall inside the phoneme's sample range, scaled by the
  waveform's loudness in that frame, then smoothed with a symmetric (zero-phase)
  kernel, so coarticulation softens the shapes without shifting them in time:
  the mouth opens on the frame the sound starts, which keeps lip motion within
  one frame of the audio;
- eyes: blinks at gamma-distributed intervals (people blink every few seconds,
  never on a metronome), each a fast close and a slower open;
- head: a few slow sinusoids per axis plus a nod that follows the speech's
  loudness envelope.

Expression presets scale all three. The motion depends only on its inputs and
the seed: every director of a slot computes the same track.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from generation.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    lips: float  # viseme openness gain
    head: float  # head-motion amplitude gain
    blink_rate: float  # blinks per second relative to neutral
    nod: float  # loudness-driven nod gain


PRESETS: dict[str, Preset] = {
    "neutral": Preset(lips=1.0, head=1.0, blink_rate=1.0, nod=1.0),
    "excited": Preset(lips=1.2, head=1.8, blink_rate=1.3, nod=1.6),
    "manic": Preset(lips=1.45, head=3.0, blink_rate=1.8, nod=2.4),
    "calm": Preset(lips=0.8, head=0.5, blink_rate=0.7, nod=0.5),
}
# The recipe's speech emotion picks the face's preset.
EMOTION_PRESETS = {
    "neutral": "neutral",
    "excited": "excited",
    "manic": "manic",
    "sad": "calm",
    "angry": "excited",
}

MEAN_BLINK_INTERVAL_SEC = 3.5
BLINK_CLOSE_SEC, BLINK_HOLD_SEC, BLINK_OPEN_SEC = 0.08, 0.04, 0.16
HEAD_AMPLITUDE_DEG = {"pitch": 1.2, "yaw": 2.0, "roll": 0.8}
NOD_DEG = 2.0
SMOOTH_FRAMES = 0.7  # sigma of the lips' zero-phase Gaussian, in frames

# Visemes: (openness in [0, 1], rounding in [0, 1]) by phoneme symbol (misaki's IPA set; its capital
# letters are diphthongs: A eɪ, I aɪ, O oʊ, W aʊ, Y ɔɪ). Anything not listed (punctuation, stress and
# length marks, spaces) is a closed, relaxed mouth.
_VISEME_GROUPS: dict[tuple[float, float], str] = {
    (0.9, 0.0): "aɑæɐIW",
    (0.7, 0.5): "ɒɔY",
    (0.6, 0.0): "eɛɜʌAəᵊ",
    (0.5, 0.7): "oO",
    (0.3, 0.0): "iɪᵻj",
    (0.35, 0.85): "uʊ",
    (0.2, 0.9): "w",
    (0.25, 0.45): "ɹrʃʒʧʤ",
    (0.2, 0.0): "tdnlszkgŋhθðɾʔx",
    (0.1, 0.0): "fv",
    (0.0, 0.0): "pbm",
}
VISEMES: dict[str, tuple[float, float]] = {
    ch: shape for shape, chars in _VISEME_GROUPS.items() for ch in chars
}


def viseme(phoneme: str) -> tuple[float, float]:
    """The mouth shape of a phoneme entry (a symbol, or a few: the first one listed wins)."""
    for ch in phoneme:
        if ch in VISEMES:
            return VISEMES[ch]
    return (0.0, 0.0)


@dataclass(frozen=True)
class MotionTrack:
    """Per-frame driving signals, each a float32 tensor of (num_frames,)."""

    lip_open: torch.Tensor  # 0 closed .. 1 wide open
    lip_round: torch.Tensor  # 0 spread .. 1 rounded
    eye_open: torch.Tensor  # 1 open .. 0 closed
    pitch: torch.Tensor  # head pose offsets from the source's, degrees
    yaw: torch.Tensor
    roll: torch.Tensor

    @property
    def num_frames(self) -> int:
        return int(self.lip_open.shape[0])


def frame_span(start: int, end: int, sample_rate: int, fps: int) -> tuple[int, int]:
    """Frames [a, b) whose centre times fall in the sample range [start, end)."""
    a = int(np.ceil(start * fps / sample_rate - 0.5))
    b = int(np.ceil(end * fps / sample_rate - 0.5))
    return max(a, 0), max(b, 0)


def loudness(audio: torch.Tensor, sample_rate: int, fps: int, num_frames: int) -> np.ndarray:
    """Per-frame RMS of the waveform, normalised to [0, 1] by its 95th percentile (0 where silent)."""
    samples = audio.detach().to("cpu", torch.float32).numpy()
    out = np.zeros(num_frames, dtype=np.float32)
    if samples.size == 0:
        return out
    hop = sample_rate / fps
    for f in range(num_frames):
        a, b = int(f * hop), int((f + 1) * hop)
        if a >= samples.size:
            break
        chunk = samples[a:b]
        out[f] = float(np.sqrt(np.mean(chunk * chunk))) if chunk.size else 0.0
    ref = float(np.percentile(out[out > 0], 95)) if np.any(out > 0) else 0.0
    return np.clip(out / ref, 0.0, 1.0) if ref > 1e-8 else out


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing (edges padded with their own values): no lead, no lag."""
    if sigma <= 0 or x.size < 2:
        return x
    radius = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x.astype(np.float64), radius, mode="edge")
    return np.convolve(padded, kernel, mode="valid").astype(np.float32)


def blink_track(num_frames: int, fps: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Eye openness per frame: 1 open, dipping to 0 for each blink."""
    times = (np.arange(num_frames) + 0.5) / fps
    eye = np.ones(num_frames, dtype=np.float32)
    mean = MEAN_BLINK_INTERVAL_SEC / max(rate, 1e-3)
    t = float(rng.uniform(0.3, 1.2) * mean)
    duration = times[-1] + 1.0 if num_frames else 0.0
    while t < duration:
        rel = times - t
        closing = (rel >= 0) & (rel < BLINK_CLOSE_SEC)
        held = (rel >= BLINK_CLOSE_SEC) & (rel < BLINK_CLOSE_SEC + BLINK_HOLD_SEC)
        opening = (rel >= BLINK_CLOSE_SEC + BLINK_HOLD_SEC) & (
            rel < BLINK_CLOSE_SEC + BLINK_HOLD_SEC + BLINK_OPEN_SEC
        )
        eye[closing] = np.minimum(eye[closing], 1.0 - rel[closing] / BLINK_CLOSE_SEC)
        eye[held] = 0.0
        back = (rel[opening] - BLINK_CLOSE_SEC - BLINK_HOLD_SEC) / BLINK_OPEN_SEC
        eye[opening] = np.minimum(eye[opening], back)
        t += float(rng.gamma(4.0, mean / 4.0))
    return eye


def head_track(num_frames: int, fps: int, gain: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Slow idle motion per axis: three sinusoids between 0.05 and 0.4 Hz with seeded phases."""
    times = np.arange(num_frames) / fps
    out = {}
    for axis, amplitude in HEAD_AMPLITUDE_DEG.items():
        freqs = rng.uniform(0.05, 0.4, size=3)
        phases = rng.uniform(0, 2 * np.pi, size=3)
        weights = rng.dirichlet(np.ones(3))
        wave = sum(
            w * np.sin(2 * np.pi * f * times + p) for w, f, p in zip(weights, freqs, phases, strict=True)
        )
        out[axis] = (gain * amplitude * wave).astype(np.float32)
    return out


def drive(
    phonemes: Sequence,
    audio: torch.Tensor | None,
    *,
    sample_rate: int,
    fps: int,
    num_frames: int,
    preset: str = "neutral",
    seed: int = 0,
) -> MotionTrack:
    """The motion of `num_frames` frames from phoneme timings (objects with .phoneme, .start, .end in samples)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown expression preset {preset!r} (known: {', '.join(PRESETS)})")
    if num_frames < 1 or fps < 1 or sample_rate < 1:
        raise ValueError(
            f"num_frames, fps and sample_rate must be positive ({num_frames}, {fps}, {sample_rate})"
        )
    p = PRESETS[preset]
    openness = np.zeros(num_frames, dtype=np.float32)
    rounding = np.zeros(num_frames, dtype=np.float32)
    speaking = np.zeros(num_frames, dtype=bool)
    for ph in phonemes:
        a, b = frame_span(int(ph.start), int(ph.end), sample_rate, fps)
        a, b = min(a, num_frames), min(b, num_frames)
        if b <= a:
            continue
        o, r = viseme(ph.phoneme)
        openness[a:b], rounding[a:b] = o, r
        speaking[a:b] |= o > 0 or r > 0
    energy = (
        loudness(audio, sample_rate, fps, num_frames)
        if audio is not None
        else np.zeros(num_frames, np.float32)
    )
    if not np.any(energy > 0):
        energy = speaking.astype(np.float32)  # no waveform to read: full strength while speaking
    lip_open = np.clip(_smooth(openness * (0.45 + 0.55 * energy) * p.lips, SMOOTH_FRAMES), 0.0, 1.0)
    lip_round = np.clip(_smooth(rounding, SMOOTH_FRAMES), 0.0, 1.0)

    rng = np.random.default_rng(seed)
    eye_open = blink_track(num_frames, fps, p.blink_rate, rng)
    head = head_track(num_frames, fps, p.head, rng)
    nod = _smooth(energy, 3.0 * fps / 24.0) * NOD_DEG * p.nod
    return MotionTrack(
        lip_open=torch.from_numpy(lip_open),
        lip_round=torch.from_numpy(lip_round),
        eye_open=torch.from_numpy(eye_open),
        pitch=torch.from_numpy(head["pitch"] + nod.astype(np.float32)),
        yaw=torch.from_numpy(head["yaw"]),
        roll=torch.from_numpy(head["roll"]),
    )
