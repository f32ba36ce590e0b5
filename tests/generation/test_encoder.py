"""The streaming encoder: the MP4 made beside the warp equals the one-shot encode, and fails cleanly."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import av
import pytest
import torch

from generation.encoder import EncodeError, EncoderChoice, StreamingEncoder, choose_encoder
from generation.media import encode_mp4
from tests.conftest import tiny_settings

RECIPE = {
    "audio_track": {"script": "Welcome back, viewers, to the channel.", "voice_id": "rick_c137"},
    "visual_track": {"prompt": "a talking head in a studio"},
}


def frames(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_the_slot_is_encoded_beside_the_warp_and_equals_the_one_shot_mp4(tmp_path: Path) -> None:
    """The tiny LivePortrait renders 48 frames in batches of 5: each batch reaches the encoder as it is
    rendered, and the file is byte for byte the one `encode_mp4` writes from the finished frames."""
    from generation.pipeline import VortexPipeline

    pipeline = VortexPipeline(settings=tiny_settings(tmp_path / "weights", warp__batch_size=5))
    batches: list[int] = []
    render = pipeline.warp.render

    def counting_render(*args, on_batch=None, **kwargs):  # noqa: ANN002, ANN003, ANN202
        def sink(batch: torch.Tensor, ready: object) -> None:
            batches.append(batch.shape[0])
            assert on_batch is not None
            on_batch(batch, ready)

        return render(*args, on_batch=sink if on_batch else None, **kwargs)

    pipeline.warp.render = counting_render  # type: ignore[method-assign]
    result = anyio.run(lambda: pipeline.generate_slot(RECIPE, 7, encode_to=tmp_path / "slot"))
    assert result.success, result.error_msg
    assert batches == [5] * 9 + [3]  # streamed batch by batch, not handed over at the end
    media = result.media
    assert media is not None and media.mp4_path == tmp_path / "slot" / "slot.mp4"
    assert media.video_frames == result.video_frames.shape[0] == 48
    assert "encode" in result.stage_times_ms
    assert any(note.startswith("encode: libx264") for note in result.notes)

    one_shot = tmp_path / "one-shot.mp4"
    encode_mp4(result.video_frames, result.audio_waveform, one_shot, fps=24, sample_rate=24000)
    assert media.mp4_path.read_bytes() == one_shot.read_bytes()
    with av.open(str(media.mp4_path)) as container:
        kinds = sorted(s.type for s in container.streams)
        decoded = sum(1 for _ in container.decode(video=0))
    assert kinds == ["audio", "video"] and decoded == 48


def test_a_slot_cut_short_leaves_no_mp4(tmp_path: Path) -> None:
    from generation.pipeline import VortexPipeline

    pipeline = VortexPipeline(settings=tiny_settings(tmp_path / "weights"))
    render = pipeline.warp.render

    def failing_render(*args, on_batch=None, **kwargs):  # noqa: ANN002, ANN003, ANN202
        assert on_batch is not None
        on_batch(frames(4, 64), None)  # one batch reached the encoder, then the warp fails
        raise RuntimeError("the card fell over")

    pipeline.warp.render = failing_render  # type: ignore[method-assign]
    result = anyio.run(lambda: pipeline.generate_slot(RECIPE, 1, encode_to=tmp_path / "slot"))
    assert not result.success and "the card fell over" in (result.error_msg or "")
    assert list((tmp_path / "slot").iterdir()) == []  # neither the MP4 nor its partial file
    pipeline.warp.render = render  # type: ignore[method-assign]
    again = anyio.run(lambda: pipeline.generate_slot(RECIPE, 2, encode_to=tmp_path / "slot"))
    assert again.success and again.media is not None and again.media.video_frames == 48


def test_batches_put_from_another_thread_encode_in_order(tmp_path: Path) -> None:
    clip = frames(30)
    streamed = StreamingEncoder(tmp_path / "a.mp4", torch.zeros(24000), width=32, height=32).start()
    worker = threading.Thread(target=lambda: [streamed.put(clip[i : i + 7]) for i in range(0, 30, 7)])
    worker.start()
    worker.join()
    assert streamed.finish() == (30, 24000)
    encode_mp4(list(clip), torch.zeros(24000), tmp_path / "b.mp4")
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (torch.zeros(2, 3, 16, 32, dtype=torch.uint8), "frames must be"),
        (torch.zeros(3, 32, 32, dtype=torch.uint8), "frames must be"),
        (torch.zeros(2, 4, 32, 32, dtype=torch.uint8), "frames must be"),
    ],
)
def test_a_wrong_batch_is_refused_before_it_is_queued(
    tmp_path: Path, batch: torch.Tensor, message: str
) -> None:
    encoder = StreamingEncoder(tmp_path / "x.mp4", torch.zeros(100), width=32, height=32).start()
    with pytest.raises(ValueError, match=message):
        encoder.put(batch)
    encoder.abort()
    assert list(tmp_path.iterdir()) == []


def test_an_encoder_failure_reaches_the_caller_and_leaves_no_file(tmp_path: Path) -> None:
    broken = EncoderChoice("no_such_codec", 1, "a test")
    encoder = StreamingEncoder(tmp_path / "x.mp4", torch.zeros(100), width=32, height=32, choice=broken)
    encoder.start()
    with pytest.raises(EncodeError, match="failed"):
        for _ in range(200):  # the thread fails at once; a put after that raises, or finish does
            encoder.put(frames(2))
        encoder.finish()
    assert list(tmp_path.iterdir()) == []


def test_abort_stops_a_busy_encoder_and_removes_the_partial_file(tmp_path: Path) -> None:
    encoder = StreamingEncoder(tmp_path / "x.mp4", torch.zeros(100), width=32, height=32).start()
    for _ in range(20):
        encoder.put(frames(8))
    encoder.abort()
    assert not encoder.finished and list(tmp_path.iterdir()) == []


def test_bad_audio_and_odd_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NaN"):
        StreamingEncoder(tmp_path / "x.mp4", torch.tensor([0.0, float("nan")]), width=32, height=32)
    with pytest.raises(ValueError, match="even"):
        StreamingEncoder(tmp_path / "x.mp4", torch.zeros(10), width=33, height=32)


def test_the_choice_is_reported_with_its_reason() -> None:
    chosen = choose_encoder("auto", 3)
    if not torch.cuda.is_available():
        assert chosen.codec == "libx264" and chosen.threads == 3 and chosen.reason
    assert chosen.describe().startswith(chosen.codec)
    assert choose_encoder("libx264", 2) == EncoderChoice("libx264", 2, "chosen in the settings")
    if not torch.cuda.is_available():
        with pytest.raises(EncodeError, match="h264_nvenc"):
            choose_encoder("h264_nvenc", 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine may have NVENC")
def test_an_encoder_the_machine_lacks_is_refused_when_the_engine_starts(tmp_path: Path) -> None:
    from generation.errors import ConfigError
    from generation.pipeline import VortexPipeline

    with pytest.raises(ConfigError, match="h264_nvenc"):
        VortexPipeline(settings=tiny_settings(tmp_path / "weights", encode__codec="h264_nvenc"))
