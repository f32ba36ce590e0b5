"""The slot as media: one playable MP4 (H.264 + AAC, via PyAV) and a WAV, addressed by content hash.

Frames are converted and fed to the encoder one at a time, so encoding never
holds a second copy of the raw video (1080 frames of 512x512 RGB is 0.85 GB).
The network addresses the MP4 by the SHA-256 of its bytes, computed by reading
the finished file back in chunks.

Encodings are not guaranteed bit-identical across machines (x264 threading,
library versions), which is why directors compare CLIP embeddings, not hashes.
"""

from __future__ import annotations

import hashlib
import os
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from generation.utils.pixels import to_pixels

AAC_FRAME = 1024  # samples per AAC frame
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


def _audio_array(audio: torch.Tensor | np.ndarray) -> np.ndarray:
    array = (
        audio.detach().float().cpu().numpy()
        if isinstance(audio, torch.Tensor)
        else np.asarray(audio, np.float32)
    )
    if array.ndim != 1:
        raise ValueError(f"audio must be (num_samples,), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("audio holds NaN or Inf")
    return np.clip(array.astype(np.float32), -1.0, 1.0)


def write_wav(audio: torch.Tensor | np.ndarray, sample_rate: int, path: str | Path) -> Path:
    """16-bit PCM mono WAV."""
    path = Path(path)
    pcm = (_audio_array(audio) * 32767.0).round().astype("<i2")
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


def encode_mp4(
    frames: Iterable[torch.Tensor],
    audio: torch.Tensor | np.ndarray,
    path: str | Path,
    *,
    fps: int = 24,
    sample_rate: int = 24000,
    crf: int = 20,
) -> tuple[int, int]:
    """Encode frames (each (3, H, W)) and mono audio into an MP4 at `path`; return (frames, samples).

    Written to a temporary name and renamed when complete, so a crash never leaves a
    truncated file under the final name.
    """
    import av

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    samples = _audio_array(audio)
    count = 0
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            video = None
            for frame in frames:
                array = frame_hwc(frame)
                if video is None:
                    height, width = array.shape[:2]
                    if height % 2 or width % 2:
                        raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
                    video = container.add_stream("libx264", rate=fps)
                    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
                    video.options = {"crf": str(crf), "preset": "veryfast"}
                    sound = container.add_stream("aac", rate=sample_rate)
                    sound.layout = "mono"
                for packet in video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                    container.mux(packet)
                count += 1
            if video is None:
                raise ValueError("no frames to encode")
            for packet in video.encode():
                container.mux(packet)
            for start in range(0, len(samples), AAC_FRAME):
                chunk = samples[start : start + AAC_FRAME][None, :]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                af.sample_rate, af.pts = sample_rate, start
                for packet in sound.encode(af):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count, len(samples)


def write_slot_media(
    frames: Iterable[torch.Tensor],
    audio: torch.Tensor | np.ndarray,
    out_dir: str | Path,
    *,
    fps: int = 24,
    sample_rate: int = 24000,
    mp4_name: str = "slot.mp4",
    wav_name: str = "speech.wav",
) -> SlotMedia:
    """Write the MP4 and the speech WAV under `out_dir` and hash the MP4."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mp4, wav = out / mp4_name, out / wav_name
    n_frames, n_samples = encode_mp4(frames, audio, mp4, fps=fps, sample_rate=sample_rate)
    write_wav(audio, sample_rate, wav)
    return SlotMedia(
        mp4_path=mp4,
        wav_path=wav,
        content_hash=file_sha256(mp4),
        size_bytes=mp4.stat().st_size,
        video_frames=n_frames,
        audio_samples=n_samples,
        duration_sec=max(n_frames / fps, n_samples / sample_rate),
    )
