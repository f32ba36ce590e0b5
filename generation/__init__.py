"""Vortex: the ICN node's GPU-resident generation engine.

Public API (the seed's names): `VortexPipeline`, `GenerationResult`,
`ModelRegistry`, `VRAMMonitor`, `MemoryPressureError`, and the memory utilities
in `generation.utils.memory`. Heavy imports (torch, diffusers) happen when the
pipeline module is first used, so `import generation` stays cheap.
"""

from __future__ import annotations

from typing import Any

from generation.config import GenerationSettings
from generation.errors import (
    ConfigError,
    InvalidFrameError,
    MemoryPressureError,
    ModelInitError,
    RecipeError,
    StageError,
    UnknownModelError,
    VortexError,
    WeightsError,
)
from generation.recipe import Recipe

_LAZY = {"VortexPipeline", "GenerationResult", "ModelRegistry", "VRAMMonitor"}

__all__ = [
    "ConfigError",
    "GenerationResult",
    "GenerationSettings",
    "InvalidFrameError",
    "MemoryPressureError",
    "ModelInitError",
    "ModelRegistry",
    "Recipe",
    "RecipeError",
    "StageError",
    "UnknownModelError",
    "VRAMMonitor",
    "VortexError",
    "VortexPipeline",
    "WeightsError",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from generation import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'generation' has no attribute {name!r}")
