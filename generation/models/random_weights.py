"""The `random` model source: every model at full size with seeded random weights, and no files.

For GPU benchmarks: the compute and memory of a layer do not depend on its
weights' values, so full-size architectures with random weights measure what
the real ones cost, where no real weights can be had (no model hub reaches the
GPU machine). Nothing here is used to generate programme content.

The large models are built on PyTorch's meta device and materialised layer by
layer on the target device, quantised as they land (NF4 for the Flux
transformer and T5-XXL, exactly the layers the real NF4 loader quantises), so
building never holds a bf16 copy of a 12-billion-parameter model. Their
configurations are the upstream ones, written out as data below.

Tokenizers are the tiny source's (the real CLIP BPE, a character-level T5
vocabulary): token ids only index the embedding tables, and prompts are padded
to the same lengths, so the compute is that of the real tokenizers.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import torch
from torch import nn

from generation.errors import ConfigError
from generation.models.nf4 import nf4_linear

logger = logging.getLogger(__name__)

# black-forest-labs/FLUX.1-schnell, as its diffusers folders configure it.
FLUX_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=False,
    axes_dims_rope=(16, 56, 56),
)
T5_XXL = dict(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=False,
    pad_token_id=0,
    eos_token_id=1,
)
CLIP_L_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
FLUX_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
SCHNELL_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=False,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def materialise_random(
    module: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    *,
    seed: int,
    nf4_storage: torch.dtype | None = None,
) -> nn.Module:
    """Give a meta-device `module` seeded random weights on `device`, in place.

    With `nf4_storage`, every `nn.Linear` becomes a
    bitsandbytes NF4 `Linear4bit` (bf16 compute, double-quantised scales, as the
    real loader asks), quantised as it is created.
    Linear weights are drawn with std 1/sqrt(fan_in), which keeps activations in
    range; norms start at one, biases at zero, other tensors at std 0.02.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    for sub in list(module.modules()):
        for child_name, child in list(sub.named_children()):
            if nf4_storage is None or type(child) is not nn.Linear:
                continue
            weight = _randn((child.out_features, child.in_features), device, torch.bfloat16, generator)
            weight /= math.sqrt(child.in_features)
            bias = torch.zeros(child.out_features, device=device) if child.bias is not None else None
            q = nf4_linear(weight, bias, nf4_storage)
            setattr(sub, child_name, q)
    for sub in module.modules():
        for pname, param in list(sub.named_parameters(recurse=False)):
            if not param.is_meta:
                continue
            value = _init_like(sub, pname, param.shape, device, dtype, generator)
            setattr(sub, pname, nn.Parameter(value, requires_grad=False))
        for bname, buf in list(sub.named_buffers(recurse=False)):
            if buf.is_meta:
                raise ConfigError(
                    f"random weights: buffer {bname} of {type(sub).__name__} cannot be drawn at random"
                )
    return module.eval()


def _randn(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, generator: torch.Generator
) -> torch.Tensor:
    return torch.randn(shape, device=device, dtype=dtype, generator=generator)


def _init_like(
    owner: nn.Module,
    name: str,
    shape: torch.Size,
    device: torch.device,
    dtype: torch.dtype,
    g: torch.Generator,
) -> torch.Tensor:
    norm = "norm" in type(owner).__name__.lower()
    if name == "bias":
        return torch.zeros(shape, device=device, dtype=dtype)
    if norm or (name == "weight" and len(shape) == 1):
        return torch.ones(shape, device=device, dtype=dtype)
    value = _randn(tuple(shape), device, dtype, g)
    if isinstance(owner, nn.Linear | nn.Conv2d) and len(shape) >= 2:
        return value / math.sqrt(math.prod(shape[1:]))
    return value * 0.02


def random_flux(
    device: torch.device, precision: str, *, seed: int, max_sequence_length: int, true_cfg_scale: float
):
    """FluxPipeline for Schnell at full size: transformer and T5-XXL in NF4 (or `precision`), CLIP-L and VAE bf16."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5TokenizerFast,
    )

    from generation.models.flux import FluxActor
    from generation.models.tiny.tokenizers import write_clip_tokenizer, write_t5_tokenizer

    if precision == "nf4" and device.type != "cuda":
        raise ConfigError("models.precision.flux: 'nf4' needs a CUDA device")
    nf4 = precision == "nf4"
    dtype = torch.bfloat16 if nf4 else _DTYPES[precision]
    with torch.device("meta"):
        transformer = FluxTransformer2DModel(**FLUX_TRANSFORMER)
        text_encoder_2 = T5EncoderModel(T5Config(**T5_XXL))
    # the real NF4 loader quantises every Linear of both (see generation.models.flux)
    materialise_random(transformer, device, dtype, seed=seed, nf4_storage=torch.uint8 if nf4 else None)
    materialise_random(
        text_encoder_2, device, dtype, seed=seed + 1, nf4_storage=torch.bfloat16 if nf4 else None
    )
    text_encoder_2.encoder.embed_tokens = text_encoder_2.shared
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT)).to(device, dtype).eval()
        vae = AutoencoderKL(**FLUX_VAE).to(device, dtype).eval()
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp) / "clip")
        write_t5_tokenizer(Path(tmp) / "t5")
        tokenizer = CLIPTokenizer.from_pretrained(Path(tmp) / "clip")
        tokenizer_2 = T5TokenizerFast.from_pretrained(Path(tmp) / "t5")
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHNELL_SCHEDULER),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    return FluxActor(pipe, device, max_sequence_length=max_sequence_length, true_cfg_scale=true_cfg_scale)


OPEN_CLIP_ARCH = {"clip-vit-b-32": "ViT-B-32", "clip-vit-l-14": "ViT-L-14"}


def random_clip(name: str, device: torch.device, precision: str, *, seed: int):
    """An open_clip model at full size (its packaged architecture config), random weights, real tokenizer."""
    import open_clip

    from generation.models.clip import finish_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(OPEN_CLIP_ARCH[name], pretrained=None, device="cpu")
    return finish_clip(name, model, open_clip.get_tokenizer(OPEN_CLIP_ARCH[name]), device, precision)
