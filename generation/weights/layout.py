"""The on-disk layout of each model's weights, and the check that a directory holds it.

Each model keeps the layout of its upstream repository (diffusers' folders for
Flux, open_clip's config plus checkpoint for CLIP), one subfolder per model under
the operator's `weights_dir`. The same layout is what the tiny source writes, so
the loaders never know which source they read. A missing or malformed file is an
error that names the file, raised before any loader touches the directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from generation.errors import WeightsError


@dataclass(frozen=True)
class FileRule:
    """A required file, or one of several alternatives (e.g. sharded vs single checkpoint)."""

    alternatives: tuple[str, ...]
    json: bool = False  # must parse as JSON

    def describe(self) -> str:
        return " or ".join(self.alternatives)


@dataclass(frozen=True)
class ModelLayout:
    name: str  # subfolder of weights_dir
    repo_id: str  # upstream repository, for `icn-node weights download`
    allow_patterns: tuple[str, ...]
    files: tuple[FileRule, ...]


def _json(*names: str) -> FileRule:
    return FileRule(names, json=True)


def _weights(folder: str, stem: str) -> FileRule:
    """A diffusers/transformers component's weights: one safetensors file or a sharded index."""
    return FileRule((f"{folder}/{stem}.safetensors", f"{folder}/{stem}.safetensors.index.json"))


FLUX_SCHNELL = ModelLayout(
    name="flux-schnell",
    repo_id="black-forest-labs/FLUX.1-schnell",
    allow_patterns=(
        "model_index.json",
        "scheduler/*",
        "text_encoder/*",
        "text_encoder_2/*",
        "tokenizer/*",
        "tokenizer_2/*",
        "transformer/*",
        "vae/*",
    ),
    files=(
        _json("model_index.json"),
        _json("scheduler/scheduler_config.json"),
        _json("text_encoder/config.json"),
        _weights("text_encoder", "model"),
        _json("text_encoder_2/config.json"),
        _weights("text_encoder_2", "model"),
        FileRule(("tokenizer/vocab.json",)),
        FileRule(("tokenizer/merges.txt",)),
        FileRule(("tokenizer_2/tokenizer.json", "tokenizer_2/spiece.model")),
        _json("transformer/config.json"),
        _weights("transformer", "diffusion_pytorch_model"),
        _json("vae/config.json"),
        _weights("vae", "diffusion_pytorch_model"),
    ),
)

_OPEN_CLIP_FILES = (
    _json("open_clip_config.json"),
    FileRule(("open_clip_model.safetensors", "open_clip_pytorch_model.bin")),
)
_OPEN_CLIP_PATTERNS = ("open_clip_config.json", "open_clip_model.safetensors")

CLIP_B = ModelLayout(
    name="clip-vit-b-32",
    repo_id="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    allow_patterns=_OPEN_CLIP_PATTERNS,
    files=_OPEN_CLIP_FILES,
)
CLIP_L = ModelLayout(
    name="clip-vit-l-14",
    repo_id="laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
    allow_patterns=_OPEN_CLIP_PATTERNS,
    files=_OPEN_CLIP_FILES,
)

# Kokoro-82M for the torch sources: the upstream repository's checkpoint and the English voice
# packs the seed's characters use (character -> {pack: weight}).
KOKORO_VOICES: dict[str, dict[str, float]] = {
    "rick_c137": {"am_michael": 1.0},
    "morty": {"am_puck": 1.0},
    "jerry": {"am_eric": 1.0},
    "summer": {"af_bella": 1.0},
    "beth": {"af_heart": 1.0},
}
KOKORO_PACKS = tuple(sorted({p for blend in KOKORO_VOICES.values() for p in blend}))
KOKORO_CHECKPOINT = "kokoro-v1_0.pth"
KOKORO = ModelLayout(
    name="kokoro-82m",
    repo_id="hexgrad/Kokoro-82M",
    allow_patterns=("config.json", KOKORO_CHECKPOINT, *(f"voices/{p}.pt" for p in KOKORO_PACKS)),
    files=(
        _json("config.json"),
        FileRule((KOKORO_CHECKPOINT,)),
        *(FileRule((f"voices/{p}.pt",)) for p in KOKORO_PACKS),
    ),
)

# LivePortrait's human model as the hub repository lays it out (the face detector and
# landmark models beside it are not used: the actor image is generated already framed).
LIVEPORTRAIT_FILES = {
    "appearance_feature_extractor": "liveportrait/base_models/appearance_feature_extractor.pth",
    "motion_extractor": "liveportrait/base_models/motion_extractor.pth",
    "warping_module": "liveportrait/base_models/warping_module.pth",
    "spade_generator": "liveportrait/base_models/spade_generator.pth",
    "stitching_retargeting_module": "liveportrait/retargeting_models/stitching_retargeting_module.pth",
}
LIVEPORTRAIT = ModelLayout(
    name="liveportrait",
    repo_id="KwaiVGI/LivePortrait",
    allow_patterns=tuple(LIVEPORTRAIT_FILES.values()),
    files=tuple(FileRule((f,)) for f in LIVEPORTRAIT_FILES.values()),
)

LAYOUTS: dict[str, ModelLayout] = {
    layout.name: layout for layout in (FLUX_SCHNELL, CLIP_B, CLIP_L, KOKORO, LIVEPORTRAIT)
}


def check_weights_dir(layout: ModelLayout, path: Path) -> Path:
    """Raise `WeightsError` naming the first missing or malformed file; return `path`."""
    if not path.is_dir():
        raise WeightsError(f"{layout.name}: weights directory {path} does not exist")
    for rule in layout.files:
        found = [path / alt for alt in rule.alternatives if (path / alt).is_file()]
        if not found:
            raise WeightsError(f"{layout.name}: missing {rule.describe()} in {path}")
        if rule.json:
            try:
                json.loads(found[0].read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise WeightsError(f"{layout.name}: malformed JSON in {found[0]}: {exc}") from None
        if found[0].stat().st_size == 0:
            raise WeightsError(f"{layout.name}: empty file {found[0]}")
    return path
