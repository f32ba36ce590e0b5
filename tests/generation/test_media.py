import hashlib
import tracemalloc
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from generation.media import encode_mp4, file_sha256, write_slot_media, write_wav


def _frames(n: int = 48, size: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)


def _tone(seconds: float = 2.0, rate: int = 24000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return 0.3 * torch.sin(2 * torch.pi * 440 * t)


def test_mp4_is_playable_h264_and_aac(tmp_path: Path) -> None:
    media = write_slot_media(_frames(), _tone(), tmp_path)
    with av.open(str(media.mp4_path)) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.width, video.height) == (64, 64)
        assert video.average_rate == 24
        assert audio.sample_rate == 24000
        decoded = sum(1 for _ in c.decode(video=0))
    assert decoded == media.video_frames == 48
    assert media.audio_samples == 48000 and media.duration_sec == pytest.approx(2.0)


def test_content_hash_is_the_files_sha256(tmp_path: Path) -> None:
    media = write_slot_media(_frames(), _tone(), tmp_path)
    assert (
        media.content_hash
        == hashlib.sha256(media.mp4_path.read_bytes()).hexdigest()
        == file_sha256(media.mp4_path)
    )
    assert media.size_bytes == media.mp4_path.stat().st_size
    other = write_slot_media(_frames() // 2, _tone(), tmp_path / "other")
    assert other.content_hash != media.content_hash


def test_wav(tmp_path: Path) -> None:
    path = write_wav(torch.tensor([0.0, 0.5, -0.5, 1.5]), 24000, tmp_path / "a.wav")
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 24000, 4)
        pcm = np.frombuffer(w.readframes(4), "<i2")
    assert pcm.tolist() == [0, 16384, -16384, 32767]  # 1.5 is clipped


def test_float_frames_and_a_generator_are_accepted(tmp_path: Path) -> None:
    frames = (torch.full((3, 32, 32), i / 10) for i in range(10))
    n, samples = encode_mp4(frames, np.zeros(2400, np.float32), tmp_path / "f.mp4")
    assert (n, samples) == (10, 2400)


def test_silent_slot_still_encodes(tmp_path: Path) -> None:
    media = write_slot_media(_frames(24), torch.zeros(0), tmp_path)
    assert media.video_frames == 24 and media.audio_samples == 0


@pytest.mark.parametrize(
    ("frames", "audio", "message"),
    [
        (torch.zeros(0, 3, 64, 64, dtype=torch.uint8), _tone(), "no frames"),
        (torch.zeros(4, 3, 63, 64, dtype=torch.uint8), _tone(), "even frame sizes"),
        (torch.zeros(4, 4, 64, 64, dtype=torch.uint8), _tone(), r"frames must be \(3, H, W\)"),
        (_frames(4), torch.tensor([0.0, float("nan")]), "NaN or Inf"),
        (_frames(4), torch.zeros(2, 10), r"audio must be \(num_samples,\)"),
    ],
)
def test_bad_input_is_a_clear_error_and_leaves_no_file(tmp_path: Path, frames, audio, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_mp4(frames, audio, tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


def test_frames_are_streamed_not_copied_whole(tmp_path: Path) -> None:
    frames = _frames(240, 256)  # 47 MB of raw video
    raw = frames.numel()
    tracemalloc.start()
    try:
        encode_mp4(frames, np.zeros(240 * 1000, np.float32), tmp_path / "big.mp4")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < raw / 8, f"peak {peak} bytes of Python/numpy allocations for {raw} bytes of video"
