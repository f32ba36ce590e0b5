"""The slot as media: one playable MP4 (H.264 + AAC, via PyAV) and a WAV, addressed by content hash.

Frames are converted and fed to the encoder one at a time, so encoding never
holds a second copy of the raw video (1080 frames of 512x512 RGB is 0.85 GB).
The encoder itself (`generation.encoder`) also runs as a stream beside the
warp; `encode_mp4` is the same encoder fed every frame at once.
The network addresses the MP4 by the SHA-256 of its bytes, computed by reading
the finished file back in chunks.

Encodings are not guaranteed bit-identical across machines (x264 threading,
library versions), which is why directors compare CLIP embeddings, not hashes.
"""

from __future__ import annotations

import hashlib
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from generation.encoder import EncoderChoice, audio_array, encode_mp4
from generation.utils.pixels import to_pixels

__all__ = [
    "SlotMedia",
    "encode_mp4",
    "file_sha256",
    "frame_hwc",
    "slot_media",
    "write_slot_media",
    "write_wav",
]
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class SlotMedia:
    mp4_path: Path
    wav_path: Path
    content_hash: str  # SHA-256 of the MP4 file, hex
    size_bytes: int
    video_frames: int
    audio_samples: int
    duration_sec: float


def frame_hwc(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 or [0, 1] floats -> (H, W, 3) uint8, on the CPU."""
    if frame.dim() != 3 or frame.shape[0] != 3:
        raise ValueError(f"frames must be (3, H, W), got {tuple(frame.shape)}")
    if frame.dtype != torch.uint8:
        frame = to_pixels(frame.float())
    return frame.permute(1, 2, 0).contiguous().cpu().numpy()


def write_wav(audio: torch.Tensor | np.ndarray, sample_rate: int, path: str | Path) -> Path:
    """16-bit PCM mono WAV."""
    path = Path(path)
    pcm = (audio_array(audio) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_slot_media(
    frames: Iterable[torch.Tensor],
    audio: torch.Tensor | np.ndarray,
    out_dir: str | Path,
    *,
    fps: int = 24,
    sample_rate: int = 24000,
    mp4_name: str = "slot.mp4",
    wav_name: str = "speech.wav",
    choice: EncoderChoice | None = None,
) -> SlotMedia:
    """Write the MP4 and the speech WAV under `out_dir` and hash the MP4."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_frames, _ = encode_mp4(frames, audio, out / mp4_name, fps=fps, sample_rate=sample_rate, choice=choice)
    return slot_media(out / mp4_name, audio, n_frames, fps=fps, sample_rate=sample_rate, wav_name=wav_name)


def slot_media(
    mp4: Path,
    audio: torch.Tensor | np.ndarray,
    n_frames: int,
    *,
    fps: int,
    sample_rate: int,
    wav_name: str = "speech.wav",
) -> SlotMedia:
    """The record of a finished MP4 (however it was encoded): the speech WAV beside it, and its hash."""
    wav = write_wav(audio, sample_rate, mp4.parent / wav_name)
    n_samples = int(audio.shape[0])
    return SlotMedia(
        mp4_path=mp4,
        wav_path=wav,
        content_hash=file_sha256(mp4),
        size_bytes=mp4.stat().st_size,
        video_frames=n_frames,
        audio_samples=n_samples,
        duration_sec=max(n_frames / fps, n_samples / sample_rate),
    )
