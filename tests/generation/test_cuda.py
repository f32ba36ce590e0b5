"""The CUDA code paths (NF4 Flux, int8 CLIP, device memory accounting) on tiny weights.

Skipped where there is no CUDA device (CI); run on the GPU machine with
`python -m pytest tests/generation/test_cuda.py`.
"""

from pathlib import Path

import pytest
import torch

from generation.errors import MemoryPressureError
from generation.utils.memory import get_vram_stats
from generation.vram import VRAMMonitor
from tests.conftest import tiny_settings

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def cuda_pipeline(tiny_cache: Path):
    from generation.pipeline import VortexPipeline

    return VortexPipeline(
        settings=tiny_settings(
            tiny_cache,
            device__name="cuda:0",
            speech__source="none",  # the speech stack (spaCy and friends) cannot travel to the GPU machine
            models__precision={
                "flux": "nf4",
                "liveportrait": "fp16",
                "kokoro": "fp32",
                "clip_b": "int8",
                "clip_l": "int8",
            },
        )
    )


def test_cuda_stats_are_the_allocator_s() -> None:
    block = torch.empty(256 * 1024**2, dtype=torch.uint8, device="cuda:0")
    stats = get_vram_stats("cuda:0")
    assert stats["device"] == "cuda:0"
    assert stats["allocated_gb"] >= 0.25
    assert stats["reserved_gb"] >= stats["allocated_gb"]
    assert 0 < stats["free_gb"] < stats["total_gb"]
    del block


def test_hard_limit_on_the_device() -> None:
    with pytest.raises(MemoryPressureError, match="on cuda:0"):
        keep = torch.empty(64 * 1024**2, dtype=torch.uint8, device="cuda:0")
        VRAMMonitor(0.01, 0.02, "cuda:0").check("actor")
    del keep


def test_models_are_quantised_and_resident(cuda_pipeline) -> None:
    import bitsandbytes as bnb

    flux = cuda_pipeline.registry.get_model("flux")
    linears = [m for m in flux.pipe.transformer.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linears and all(m.weight.quant_type == "nf4" for m in linears)
    t5 = {
        n.rsplit(".", 1)[-1]
        for n, m in flux.pipe.text_encoder_2.named_modules()
        if isinstance(m, bnb.nn.Linear4bit)
    }
    assert {"q", "k", "v", "o", "wi_0", "wi_1", "wo"} <= t5  # wo too: unquantised it is 2 GB of T5-XXL
    liveportrait = cuda_pipeline.registry.get_model("liveportrait")
    assert liveportrait.dtype == torch.float16 and next(liveportrait.generator.parameters()).is_cuda
    clip_mlp = cuda_pipeline.clip_ensemble.clip_l.model.visual.transformer.resblocks[0].mlp.c_fc
    assert isinstance(clip_mlp, bnb.nn.Linear8bitLt) and clip_mlp.weight.dtype == torch.int8
    assert all(p.device.type == "cuda" for p in flux.pipe.transformer.parameters())
    video = cuda_pipeline.video_buffer  # pinned host memory, filled by LivePortrait batch by batch
    assert video.device.type == "cpu" and video.is_pinned()


@pytest.mark.anyio
async def test_slot_on_cuda_is_deterministic(cuda_pipeline, recipe: dict) -> None:
    a = await cuda_pipeline.generate_slot(recipe, slot_id=1)
    b = await cuda_pipeline.generate_slot(recipe, slot_id=1)
    assert a.success, a.error_msg
    assert a.video_frames.device.type == "cpu"
    assert torch.equal(a.actor_image, b.actor_image)
    assert torch.allclose(a.clip_embedding, b.clip_embedding, atol=1e-3)
    late = await cuda_pipeline.generate_slot(recipe, slot_id=2, timeout_sec=1e-6)
    assert late.success is False and "timed out" in late.error_msg
    assert (await cuda_pipeline.generate_slot(recipe, slot_id=2)).success
