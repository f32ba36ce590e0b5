"""CLIP ViT-B-32 and ViT-L-14 at toy size, seeded, in open_clip's hub layout.

Each keeps its family's patch size (32 and 14) and the real tokenizer with its
77-token context, so truncation and preprocessing behave as with real weights;
only widths, depths and image size shrink. The two get different embedding
widths, as the real pair does (512 and 768).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _config(embed_dim: int, image_size: int, patch_size: int, width: int) -> dict:
    return {
        "model_cfg": {
            "embed_dim": embed_dim,
            "vision_cfg": {
                "image_size": image_size,
                "layers": 2,
                "width": width,
                "patch_size": patch_size,
                "head_width": 16,
            },
            "text_cfg": {
                "context_length": 77,
                "vocab_size": 49408,
                "width": width,
                "heads": width // 16,
                "layers": 2,
            },
        },
        "preprocess_cfg": {"mean": _CLIP_MEAN, "std": _CLIP_STD},
    }


def _build(dest: Path, seed: int, config: dict) -> None:
    import open_clip
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(f"local-dir:{dest}", pretrained=None, load_weights=False)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(dest / "open_clip_model.safetensors"))


def build_tiny_clip_b(dest: Path, seed: int) -> None:
    _build(dest, seed + 10, _config(embed_dim=32, image_size=64, patch_size=32, width=32))


def build_tiny_clip_l(dest: Path, seed: int) -> None:
    _build(dest, seed + 20, _config(embed_dim=48, image_size=56, patch_size=14, width=48))
