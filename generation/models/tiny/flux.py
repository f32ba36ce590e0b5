"""Flux-Schnell at toy size: every component of `FluxPipeline`, seeded, in diffusers' layout.

Sizes follow diffusers' own test components (transformer with one double and
one single block, 2 heads of 16); the VAE keeps Flux's four levels so the
latent grid is 1/8 of the image, as with the real VAE.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generation.models.random_weights import FLUX_VAE, SCHNELL_SCHEDULER
from generation.models.tiny.tokenizers import write_clip_tokenizer, write_t5_tokenizer

LATENT_CHANNELS = 4
TEXT_WIDTH = 32


def build_tiny_flux(dest: Path, seed: int) -> None:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5TokenizerFast,
    )

    tok_dir, tok2_dir = dest / "tokenizer", dest / "tokenizer_2"
    write_clip_tokenizer(tok_dir)
    t5_vocab = write_t5_tokenizer(tok2_dir)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=LATENT_CHANNELS * 4,  # 2x2 latent patches are packed into channels
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=TEXT_WIDTH,
            pooled_projection_dim=TEXT_WIDTH,
            guidance_embeds=False,  # Schnell is guidance-distilled
            axes_dims_rope=(4, 6, 6),
        )
        torch.manual_seed(seed + 1)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=TEXT_WIDTH,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                projection_dim=TEXT_WIDTH,
                hidden_act="quick_gelu",
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407,
            )
        )
        torch.manual_seed(seed + 2)
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=t5_vocab,
                d_model=TEXT_WIDTH,
                d_ff=37,
                d_kv=8,
                num_heads=4,
                num_layers=2,
                relative_attention_num_buckets=8,
                feed_forward_proj="gated-gelu",
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        )
        torch.manual_seed(seed + 3)
        vae = AutoencoderKL(
            **{
                **FLUX_VAE,  # Flux's VAE at toy widths: same four levels, latents at 1/8
                "block_out_channels": (8, 16, 16, 16),
                "layers_per_block": 1,
                "latent_channels": LATENT_CHANNELS,
                "norm_num_groups": 4,
                "sample_size": 64,
            }
        )
    scheduler = FlowMatchEulerDiscreteScheduler(**SCHNELL_SCHEDULER)
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(tok_dir),
        text_encoder_2=text_encoder_2,
        tokenizer_2=T5TokenizerFast.from_pretrained(tok2_dir),
        transformer=transformer,
    )
    pipe.save_pretrained(dest, safe_serialization=True)
