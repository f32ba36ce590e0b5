"""Semantic verification with the dual CLIP ensemble (open_clip ViT-B-32 + ViT-L-14).

Directors compare their outputs by these embeddings, so verification is
deliberately plain and deterministic: evenly spaced keyframes, open_clip's own
preprocessing (resize shortest side, centre crop, normalise) done on tensors,
the real BPE tokenizer (which truncates past 77 tokens), L2-normalised
embeddings, cosine scores. On CUDA with `int8`, the Linear layers of each
model's MLPs (two thirds of the weights) become bitsandbytes int8 layers; the
attention projections stay fp16 because `nn.MultiheadAttention` reads its
weights directly and cannot take a swapped module.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from generation.errors import ConfigError, InvalidFrameError
from generation.models.cancel import cancel_point
from generation.weights.layout import ModelLayout, check_weights_dir

logger = logging.getLogger(__name__)

_FLOAT_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def quantize_mlp_int8(model: nn.Module, dtype: torch.dtype = torch.float16) -> int:
    """Replace every `nn.Linear` outside attention blocks by a bitsandbytes int8 layer; return the count.

    Weights are quantised when the model is next moved to a device; activations
    and biases stay in `dtype`.
    """
    import bitsandbytes as bnb

    replaced = 0
    for parent in list(model.modules()):
        if isinstance(parent, nn.MultiheadAttention):
            continue
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                q = bnb.nn.Linear8bitLt(
                    child.in_features, child.out_features, bias=child.bias is not None, has_fp16_weights=False
                )
                q.weight = bnb.nn.Int8Params(
                    child.weight.data.to(dtype), requires_grad=False, has_fp16_weights=False
                )
                if child.bias is not None:
                    q.bias = nn.Parameter(child.bias.data.to(dtype), requires_grad=False)
                # open_clip casts activations to the MLP weight's dtype unless told the original one
                q.int8_original_dtype = dtype
                setattr(parent, child_name, q)
                replaced += 1
    return replaced


class ClipModel:
    """One open_clip model with its tokenizer and preprocessing, ready to embed frames and text."""

    def __init__(
        self, name: str, model: nn.Module, tokenizer: Any, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = model.visual.image_size
        self.image_size = tuple(size) if isinstance(size, tuple | list) else (size, size)
        self.mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=device).view(
            1, 3, 1, 1
        )
        self.std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=device).view(
            1, 3, 1, 1
        )
        self._token_lock = threading.Lock()  # SimpleTokenizer keeps a shared cache dict

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) floats in [0, 1] -> normalised model input."""
        x = frames.to(self.device, torch.float32)
        x = TF.resize(
            x, list(self.image_size)[:1], interpolation=TF.InterpolationMode.BICUBIC, antialias=True
        )
        x = TF.center_crop(x, list(self.image_size))
        return ((x.clamp(0, 1) - self.mean) / self.std).to(self.dtype)

    @torch.inference_mode()
    def embed_images(self, frames: torch.Tensor) -> torch.Tensor:
        feats = self.model.encode_image(self.preprocess(frames))
        return nn.functional.normalize(feats.float(), dim=-1)

    @torch.inference_mode()
    def embed_text(self, text: str) -> torch.Tensor:
        with self._token_lock:
            tokens = self.tokenizer([text]).to(self.device)
        feats = self.model.encode_text(tokens)
        return nn.functional.normalize(feats.float(), dim=-1)[0]


def load_clip(
    layout: ModelLayout, weights_dir: str | Path, device: str | torch.device = "cpu", precision: str = "fp32"
) -> ClipModel:
    """Load an open_clip model from a directory holding `open_clip_config.json` and a checkpoint."""
    import open_clip

    device = torch.device(device)
    path = check_weights_dir(layout, Path(weights_dir))
    model = open_clip.create_model(f"local-dir:{path}", device="cpu")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    return finish_clip(layout.name, model, tokenizer, device, precision)


def finish_clip(
    name: str, model: nn.Module, tokenizer: Any, device: torch.device, precision: str
) -> ClipModel:
    """Cast (or int8-quantise) a CPU open_clip model and move it to `device`."""
    if precision not in ("int8", *_FLOAT_DTYPES):
        raise ConfigError(f"models.precision: unknown CLIP precision {precision!r}")
    if precision == "int8":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        model = model.to(dtype)
        replaced = quantize_mlp_int8(model, dtype)
        logger.info("%s: %d Linear layers quantised to int8", name, replaced)
    else:
        dtype = _FLOAT_DTYPES[precision]
        model = model.to(dtype)
    model = model.to(device)
    return ClipModel(name, model, tokenizer, device, dtype)


@dataclass(frozen=True)
class VerificationResult:
    """What the dual-CLIP check found for one slot. Embeddings are L2-normalised, on the CPU."""

    embedding_b: torch.Tensor
    embedding_l: torch.Tensor
    score_b: float
    score_l: float
    ensemble_score: float
    self_check_passed: bool
    outlier: bool
    keyframe_indices: tuple[int, ...]

    def combined_embedding(self) -> torch.Tensor:
        """B and L embeddings side by side: the slot's `clip_embedding`."""
        return torch.cat([self.embedding_b, self.embedding_l])


def check_frames(frames: torch.Tensor) -> None:
    """Reject frames that no honest pipeline produces: NaN, Inf, denormals, wrong shape."""
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise InvalidFrameError(f"frames must be (N, 3, H, W), got {tuple(frames.shape)}")
    if frames.shape[0] == 0:
        raise InvalidFrameError("no frames to verify")
    if not frames.is_floating_point():
        return
    if not torch.isfinite(frames).all():
        bad = int((~torch.isfinite(frames)).sum())
        raise InvalidFrameError(f"frames hold {bad} NaN or Inf values")
    tiny = torch.finfo(frames.dtype).tiny
    denormal = (frames != 0) & (frames.abs() < tiny)
    if denormal.any():
        raise InvalidFrameError(f"frames hold {int(denormal.sum())} denormal values")


def sample_keyframes(num_frames: int, count: int) -> list[int]:
    """`count` evenly spaced frame indices, first and last included, no repeats."""
    if num_frames <= 0:
        return []
    if count <= 1:
        return [num_frames // 2]
    idx = torch.linspace(0, num_frames - 1, steps=min(count, num_frames)).round().long()
    return sorted(set(idx.tolist()))


class ClipEnsemble:
    """ViT-B-32 and ViT-L-14 scored together: ensemble = weight_b * B + weight_l * L."""

    def __init__(
        self,
        clip_b: ClipModel,
        clip_l: ClipModel,
        *,
        keyframes: int = 5,
        weight_b: float = 0.4,
        weight_l: float = 0.6,
        threshold_b: float = 0.20,
        threshold_l: float = 0.18,
        threshold_ensemble: float = 0.19,
        outlier_margin: float = 0.15,
    ) -> None:
        self.clip_b, self.clip_l = clip_b, clip_l
        self.keyframes = keyframes
        self.weight_b, self.weight_l = weight_b, weight_l
        self.threshold_b, self.threshold_l, self.threshold_ensemble = (
            threshold_b,
            threshold_l,
            threshold_ensemble,
        )
        self.outlier_margin = outlier_margin

    def verify(self, frames: torch.Tensor, prompt: str) -> VerificationResult:
        """Embed keyframes of `frames` (N, 3, H, W; uint8 or floats in [0, 1]) and `prompt`, and score them."""
        check_frames(frames)
        indices = sample_keyframes(frames.shape[0], self.keyframes)
        keys = frames[indices]
        keys = keys.float() / 255.0 if keys.dtype == torch.uint8 else keys.float()
        embeddings, scores = [], []
        for model in (self.clip_b, self.clip_l):
            cancel_point()
            image = nn.functional.normalize(model.embed_images(keys).mean(dim=0), dim=-1)
            text = model.embed_text(prompt)
            embeddings.append(image.cpu())
            scores.append(float(image @ text))
        score_b, score_l = scores
        ensemble = self.weight_b * score_b + self.weight_l * score_l
        passed = (
            score_b >= self.threshold_b
            and score_l >= self.threshold_l
            and ensemble >= self.threshold_ensemble
        )
        return VerificationResult(
            embedding_b=embeddings[0],
            embedding_l=embeddings[1],
            score_b=score_b,
            score_l=score_l,
            ensemble_score=ensemble,
            self_check_passed=passed,
            outlier=abs(score_b - score_l) > self.outlier_margin,
            keyframe_indices=tuple(indices),
        )
