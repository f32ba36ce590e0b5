"""The `random` source's CPU-checkable parts (the NF4 path runs in tests/generation/test_cuda.py and the GPU bench)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from generation.config import GenerationSettings
from generation.errors import ConfigError
from generation.models.random_weights import materialise_random, random_flux


def small_meta_transformer() -> nn.Module:
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6),
        )  # fmt: skip


def test_every_meta_tensor_gets_seeded_values() -> None:
    a = materialise_random(small_meta_transformer(), torch.device("cpu"), torch.float32, seed=3)
    b = materialise_random(small_meta_transformer(), torch.device("cpu"), torch.float32, seed=3)
    c = materialise_random(small_meta_transformer(), torch.device("cpu"), torch.float32, seed=4)
    assert not any(p.is_meta for p in a.parameters())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    linear = a.transformer_blocks[0].ff.net[2]
    assert isinstance(linear, nn.Linear)
    assert linear.weight.std() == pytest.approx(1 / linear.in_features**0.5, rel=0.2)
    assert torch.all(linear.bias == 0)
    norm = a.transformer_blocks[0].attn.norm_q
    assert torch.all(norm.weight == 1)


def test_a_random_model_runs() -> None:
    model = materialise_random(small_meta_transformer(), torch.device("cpu"), torch.float32, seed=0)
    out = model(
        hidden_states=torch.randn(1, 16, 16),
        encoder_hidden_states=torch.randn(1, 8, 32),
        pooled_projections=torch.randn(1, 32),
        timestep=torch.tensor([0.5]),
        img_ids=torch.zeros(16, 3),
        txt_ids=torch.zeros(8, 3),
    ).sample
    assert out.shape == (1, 16, 16) and torch.isfinite(out).all()


def test_nf4_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="'nf4' needs a CUDA device"):
        random_flux(torch.device("cpu"), "nf4", seed=0, max_sequence_length=32, true_cfg_scale=1.0)


def test_the_source_is_a_config_switch() -> None:
    settings = GenerationSettings.from_mapping({"models": {"source": "random"}, "device": {"name": "cpu"}})
    assert settings.resolved_source() == "random"
    with pytest.raises(ConfigError, match="models.source"):
        GenerationSettings.from_mapping({"models": {"source": "made-up"}})


def test_full_size_kokoro_has_the_upstream_size() -> None:
    from generation.speech.kokoro_torch import build_random_kokoro

    kokoro = build_random_kokoro("cpu", 0)
    assert sum(p.numel() for p in kokoro.model.parameters()) == 81_810_022  # Kokoro-82M
