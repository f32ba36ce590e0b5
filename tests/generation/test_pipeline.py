"""The engine end to end, with real tiny models, under both asyncio and trio."""

import asyncio
import json
import re
from pathlib import Path

import anyio
import pytest
import torch
import trio

from generation.errors import ConfigError, UnknownModelError, WeightsError
from generation.pipeline import GenerationResult, VortexPipeline
from tests.conftest import tiny_settings

SEED_FIELDS = [
    "video_frames",
    "audio_waveform",
    "clip_embedding",
    "generation_time_ms",
    "slot_id",
    "success",
    "error_msg",
]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


def test_result_keeps_the_seed_fields_in_order() -> None:
    assert list(GenerationResult.__dataclass_fields__)[:7] == SEED_FIELDS


def test_models_are_loaded_once_and_buffers_preallocated(pipeline: VortexPipeline) -> None:
    assert sorted(pipeline.registry.names()) == ["clip_b", "clip_l", "flux", "kokoro", "liveportrait"]
    b = pipeline.settings.buffers
    assert pipeline.actor_buffer.shape == (3, b.actor.height, b.actor.width)
    assert pipeline.video_buffer.shape == (b.video.frames, 3, b.video.height, b.video.width)
    assert pipeline.video_buffer.dtype == torch.uint8
    assert pipeline.audio_buffer.shape == (int(b.audio.sample_rate * b.audio.duration_sec),)
    assert pipeline.cold_start_sec > 0
    assert pipeline.registry.get_model("liveportrait").cfg.output_size == b.video.width
    with pytest.raises(UnknownModelError, match="unknown model 'wav2lip'"):
        pipeline.registry.get_model("wav2lip")


@pytest.mark.anyio
async def test_generates_a_slot(pipeline: VortexPipeline, recipe: dict) -> None:
    ptrs = (pipeline.actor_buffer.data_ptr(), pipeline.video_buffer.data_ptr())
    result = await pipeline.generate_slot(recipe, slot_id=12345)
    assert result.success, result.error_msg
    assert result.error_msg is None
    assert result.slot_id == 12345
    v = pipeline.settings.buffers.video
    assert result.video_frames.shape == (v.frames, 3, v.height, v.width)
    assert result.video_frames.dtype == torch.uint8 and result.video_frames.device.type == "cpu"
    assert result.clip_embedding.shape == (80,)
    assert set(result.stage_times_ms) == {"audio", "actor", "warp", "verify"}
    # where the warp's time went (wall ms on the CPU; on CUDA each step's GPU ms too), within the stage
    steps = result.step_times_ms
    assert {"warp.prologue", "warp.first_batch", "warp.drain"} <= set(steps), steps
    assert 0 < sum(steps.values()) <= result.stage_times_ms["warp"]
    assert result.generation_time_ms >= max(result.stage_times_ms.values())
    assert result.warp_mode == "liveportrait"
    # animated: the frames differ from one another, and none is merely the actor image
    frames = result.video_frames.float()
    assert (frames[1:] - frames[:-1]).abs().amax() > 0
    expected = (result.actor_image * 255).round().to(torch.uint8)
    assert not any(torch.equal(frame, expected) for frame in result.video_frames)
    # real speech from the Kokoro ONNX model, within the slot, with derived word timings
    a = pipeline.settings.buffers.audio
    assert 0.3 * a.sample_rate < result.audio_waveform.numel() <= a.sample_rate * a.duration_sec
    assert result.audio_waveform.abs().max() > 0.01
    assert [w.word for w in result.words] == ["Welcome", "viewers"]
    assert result.words[-1].end <= result.audio_waveform.numel()
    assert (pipeline.actor_buffer.data_ptr(), pipeline.video_buffer.data_ptr()) == ptrs


@pytest.mark.anyio
async def test_result_is_a_copy_not_the_reused_buffer(pipeline: VortexPipeline, recipe: dict) -> None:
    first = await pipeline.generate_slot(recipe, slot_id=1)
    kept = first.video_frames.clone()
    recipe["visual_track"]["prompt"] = "a talking cat"
    second = await pipeline.generate_slot(recipe, slot_id=2)
    assert second.success
    assert torch.equal(first.video_frames, kept)
    assert not torch.equal(first.video_frames, second.video_frames)


def test_asyncio_and_trio_give_the_same_slot(pipeline: VortexPipeline, recipe: dict) -> None:
    a = asyncio.run(pipeline.generate_slot(recipe, 77))
    b = trio.run(pipeline.generate_slot, recipe, 77)
    assert a.success and b.success
    assert torch.equal(a.video_frames, b.video_frames)
    assert torch.equal(a.clip_embedding, b.clip_embedding)
    assert a.seed == b.seed and a.recipe_hash == b.recipe_hash


def test_two_nodes_build_identical_pipelines(pipeline: VortexPipeline, recipe: dict, tmp_path: Path) -> None:
    """A second node with its own weights cache produces the same slot: the basis of agreement."""
    other = VortexPipeline(settings=tiny_settings(tmp_path))
    a = trio.run(pipeline.generate_slot, recipe, 5)
    b = trio.run(other.generate_slot, recipe, 5)
    assert torch.equal(a.actor_image, b.actor_image)
    assert torch.equal(a.clip_embedding, b.clip_embedding)


@pytest.mark.anyio
async def test_bad_recipe_is_a_failed_result_naming_the_field(pipeline: VortexPipeline, recipe: dict) -> None:
    recipe["audio_track"]["speed"] = 3.0
    result = await pipeline.generate_slot(recipe, slot_id=9)
    assert result.success is False
    assert result.error_msg.startswith("invalid recipe: audio_track.speed")
    assert result.video_frames.numel() == 0 and result.slot_id == 9
    garbage = await pipeline.generate_slot(b"\x00\xff", slot_id=10)
    assert garbage.success is False and "not UTF-8" in garbage.error_msg


@pytest.mark.anyio
async def test_recipe_duration_sets_the_frame_count(pipeline: VortexPipeline, recipe: dict) -> None:
    recipe["duration_sec"] = 0.5
    result = await pipeline.generate_slot(recipe, slot_id=3)
    assert result.success
    assert result.video_frames.shape[0] == round(0.5 * pipeline.settings.buffers.video.fps)
    recipe["duration_sec"] = 600
    too_long = await pipeline.generate_slot(recipe, slot_id=3)
    assert too_long.success is False and "duration_sec" in too_long.error_msg


@pytest.mark.anyio
async def test_timeout_names_the_stage_and_the_pipeline_stays_usable(
    pipeline: VortexPipeline, recipe: dict
) -> None:
    late = await pipeline.generate_slot(recipe, slot_id=4, timeout_sec=1e-6)
    assert late.success is False
    assert "timed out after" in late.error_msg
    assert re.search(r"in stage '(audio|actor)( and (audio|actor))?'$", late.error_msg), late.error_msg
    fine = await pipeline.generate_slot(recipe, slot_id=4)
    assert fine.success, fine.error_msg


@pytest.mark.anyio
async def test_configured_timeout_is_enforced(tiny_cache: Path, recipe: dict) -> None:
    strict = VortexPipeline(settings=tiny_settings(tiny_cache, pipeline__generation_timeout_sec=1e-6))
    result = await strict.generate_slot(recipe, slot_id=1)
    assert result.success is False and "timed out after 0.000 s" in result.error_msg
    assert (await strict.generate_slot(recipe, slot_id=1, timeout_sec=60)).success


@pytest.mark.anyio
async def test_memory_pressure_stops_the_slot_before_a_stage(tiny_cache: Path, recipe: dict) -> None:
    tight = VortexPipeline(
        settings=tiny_settings(tiny_cache, vram__soft_limit_gb=0.001, vram__hard_limit_gb=0.002)
    )
    result = await tight.generate_slot(recipe, slot_id=1)
    assert result.success is False
    assert "not started" in result.error_msg and "hard limit of 0.00 GB" in result.error_msg
    assert tight.vram_monitor.hard_violations >= 1


@pytest.mark.anyio
async def test_concurrent_slots_take_turns(pipeline: VortexPipeline, recipe: dict) -> None:
    results = {}

    async def run(slot: int) -> None:
        results[slot] = await pipeline.generate_slot(recipe, slot_id=slot)

    async with anyio.create_task_group() as tg:
        for slot in (21, 22, 23):
            tg.start_soon(run, slot)
    assert all(r.success for r in results.values())
    assert len({r.seed for r in results.values()}) == 3
    alone = await pipeline.generate_slot(recipe, slot_id=22)
    assert torch.equal(alone.clip_embedding, results[22].clip_embedding)


@pytest.mark.anyio
async def test_sequential_audio_then_actor(tiny_cache: Path, recipe: dict) -> None:
    seq = VortexPipeline(settings=tiny_settings(tiny_cache, pipeline__parallel_audio_actor=False))
    result = await seq.generate_slot(recipe, slot_id=8)
    assert result.success and list(result.stage_times_ms)[:2] == ["audio", "actor"]


def test_full_source_needs_a_weights_dir(tiny_cache: Path) -> None:
    with pytest.raises(ConfigError, match="models.weights_dir: required when models.source is 'full'"):
        VortexPipeline(settings=tiny_settings(tiny_cache, models__source="full"))


def test_full_source_names_the_missing_file(tiny_cache: Path, tmp_path: Path) -> None:
    (tmp_path / "flux-schnell").mkdir()
    (tmp_path / "flux-schnell" / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(WeightsError, match="flux-schnell: missing scheduler/scheduler_config.json"):
        VortexPipeline(
            settings=tiny_settings(tiny_cache, models__source="full", models__weights_dir=str(tmp_path))
        )
    with pytest.raises(WeightsError, match="models.weights_dir: .* does not exist"):
        VortexPipeline(
            settings=tiny_settings(tiny_cache, models__source="full", models__weights_dir=str(tmp_path / "x"))
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_without_cuda_is_a_config_error(tiny_cache: Path) -> None:
    with pytest.raises(ConfigError, match="device.name: 'cuda:0' asked for, but CUDA is not available"):
        VortexPipeline(settings=tiny_settings(tiny_cache, device__name="cuda:0"))


def test_config_path_and_settings_are_exclusive(tiny_cache: Path) -> None:
    with pytest.raises(ConfigError, match="either config_path or settings"):
        VortexPipeline("x.yaml", settings=tiny_settings(tiny_cache))


def test_default_construction_uses_the_tiny_profile_on_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("the default is the GPU profile where CUDA exists")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    p = VortexPipeline()
    assert p.source == "tiny" and p.device.type == "cpu"
    assert any(tmp_path.rglob("open_clip_model.safetensors"))


@pytest.mark.anyio
async def test_a_long_script_is_cut_to_fit_the_slot(pipeline: VortexPipeline, recipe: dict) -> None:
    recipe["audio_track"]["script"] = (
        "Hi there. " + "This sentence makes the script far too long for the slot. " * 3
    )
    result = await pipeline.generate_slot(recipe, slot_id=31)
    assert result.success
    assert any("cut to 1 of 4 sentences to fit 2 s" in n for n in result.notes)
    assert result.audio_waveform.numel() <= 2 * 24000


@pytest.mark.anyio
async def test_unpronounceable_script_fails_the_audio_stage(pipeline: VortexPipeline, recipe: dict) -> None:
    recipe["audio_track"]["script"] = "... !!! ---"
    result = await pipeline.generate_slot(recipe, slot_id=32)
    assert result.success is False
    assert result.error_msg == "stage 'audio': nothing in the script is pronounceable"
    assert (
        await pipeline.generate_slot({**recipe, "audio_track": {"script": "Hi!", "voice_id": "beth"}}, 32)
    ).success


@pytest.mark.anyio
async def test_without_a_speech_model_the_audio_track_is_empty_and_says_so(
    tiny_cache: Path, recipe: dict
) -> None:
    quiet = VortexPipeline(settings=tiny_settings(tiny_cache, speech__source="none"))
    assert "kokoro" not in quiet.registry
    result = await quiet.generate_slot(recipe, slot_id=1)
    assert result.success and result.audio_waveform.numel() == 0 and result.words == []
    assert any("no speech model" in n for n in result.notes)
