"""Actor image generation with Flux-Schnell through diffusers' `FluxPipeline`.

Loading follows diffusers' conventions: `from_pretrained` on a local directory
in the upstream layout. On CUDA with `nf4`, the transformer and the T5-XXL text
encoder (together ~95% of Flux's weights) are quantised to NF4 by bitsandbytes
as they load, which is what fits Flux inside the seed's ~6 GB budget; the CLIP
text encoder and the VAE stay in bf16. Schnell is guidance-distilled: 4 steps,
guidance 0, and a negative prompt only acts when `true_cfg_scale > 1` (which
doubles the transformer's work), so by default it is accepted and recorded but
has no effect on the image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from generation.errors import ConfigError
from generation.models.cancel import cancel_point
from generation.models.nf4 import quantize_remaining_linears
from generation.weights.layout import FLUX_SCHNELL, check_weights_dir

logger = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class FluxActor:
    """A loaded Flux-Schnell pipeline that draws actor images into a caller's buffer."""

    def __init__(
        self, pipe: Any, device: torch.device, *, max_sequence_length: int, true_cfg_scale: float
    ) -> None:
        self.pipe = pipe
        self.device = device
        self.max_sequence_length = max_sequence_length
        self.true_cfg_scale = true_cfg_scale
        pipe.set_progress_bar_config(disable=True)

    @torch.inference_mode()
    def generate(
        self,
        prompt: str,
        negative_prompt: str = "",
        num_inference_steps: int = 4,
        guidance_scale: float = 0.0,
        seed: int | None = None,
        output: torch.Tensor | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
    ) -> torch.Tensor:
        """Generate one image (3, H, W) in [0, 1]; with `output`, write it there in place and return it.

        Deterministic for a given seed on a given device. H and W default to
        `output`'s shape, else 512.
        """
        if output is not None:
            if output.dim() != 3 or output.shape[0] != 3:
                raise ValueError(f"output buffer must be (3, H, W), got {tuple(output.shape)}")
            height, width = output.shape[1], output.shape[2]
        height, width = height or 512, width or 512
        generator = torch.Generator(device="cpu").manual_seed(seed if seed is not None else 0)

        def on_step_end(_pipe: Any, _step: int, _timestep: Any, callback_kwargs: dict) -> dict:
            cancel_point()
            return callback_kwargs

        cancel_point()
        images = self.pipe(
            prompt=prompt,
            negative_prompt=negative_prompt or None,
            true_cfg_scale=self.true_cfg_scale,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type="pt",
            max_sequence_length=self.max_sequence_length,
            callback_on_step_end=on_step_end,
        ).images
        image = images[0].clamp_(0, 1)
        if output is None:
            return image
        output.copy_(image.to(output.dtype))
        return output


def load_flux_schnell(
    weights_dir: str | Path,
    device: str | torch.device = "cuda:0",
    quantization: str = "nf4",
    *,
    max_sequence_length: int = 256,
    true_cfg_scale: float = 1.0,
) -> FluxActor:
    """Load Flux-Schnell from a diffusers-layout directory onto `device`.

    `quantization`: 'nf4' (CUDA only), 'bf16', 'fp16' or 'fp32'.
    """
    from diffusers import FluxPipeline

    device = torch.device(device)
    path = check_weights_dir(FLUX_SCHNELL, Path(weights_dir))
    if quantization == "nf4":
        if device.type != "cuda":
            raise ConfigError(
                "models.precision.flux: 'nf4' needs a CUDA device; use 'fp32' (or 'bf16') on the CPU"
            )
        pipe = _load_nf4(FluxPipeline, path)
    elif quantization in _DTYPES:
        pipe = FluxPipeline.from_pretrained(path, dtype=_DTYPES[quantization])
    else:
        raise ConfigError(f"models.precision.flux: unknown precision {quantization!r}")
    pipe.to(device)
    return FluxActor(pipe, device, max_sequence_length=max_sequence_length, true_cfg_scale=true_cfg_scale)


def _load_nf4(pipeline_cls: Any, path: Path) -> Any:
    from diffusers import BitsAndBytesConfig as DiffusersBnbConfig
    from diffusers import FluxTransformer2DModel
    from transformers import BitsAndBytesConfig as TransformersBnbConfig
    from transformers import T5EncoderModel

    nf4 = {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": torch.bfloat16,
        "bnb_4bit_use_double_quant": True,  # the block scales quantised too: 0.8 GB less for Flux and T5
    }
    transformer = FluxTransformer2DModel.from_pretrained(
        path, subfolder="transformer", quantization_config=DiffusersBnbConfig(**nf4), dtype=torch.bfloat16
    )
    text_encoder_2 = T5EncoderModel.from_pretrained(
        path,
        subfolder="text_encoder_2",
        quantization_config=TransformersBnbConfig(**nf4),
        dtype=torch.bfloat16,
    )
    quantize_remaining_linears(text_encoder_2)  # T5's `wo` layers: 2 GB in bf16 (see generation.models.nf4)
    return pipeline_cls.from_pretrained(
        path, transformer=transformer, text_encoder_2=text_encoder_2, dtype=torch.bfloat16
    )
