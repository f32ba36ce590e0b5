"""Building the node's engine: every model resident for the node's life, or no start at all."""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

from generation.config import GenerationSettings
from generation.errors import ModelInitError

if TYPE_CHECKING:
    from generation.pipeline import VortexPipeline

log = logging.getLogger(__name__)


class EngineStartError(RuntimeError):
    """The models cannot be made resident; the message says what would fit."""


def check_budget(settings: GenerationSettings) -> None:
    """Refuse before loading anything when the configured budgets exceed the hard limit."""
    budgets = settings.models.budgets_gb.model_dump()
    total = sum(budgets.values())
    hard = settings.vram.hard_limit_gb
    if total > hard:
        listing = ", ".join(f"{k} {v:.2f}" for k, v in budgets.items())
        raise EngineStartError(
            f"model budgets sum to {total:.2f} GB ({listing}) but vram.hard_limit_gb is {hard:.2f} GB: "
            f"lower the budgets by {total - hard:.2f} GB (e.g. lower precisions) or raise the limit"
        )


def build_engine(settings: GenerationSettings) -> VortexPipeline:
    """Load every model once; on a GPU, refuse when what is resident exceeds the hard limit."""
    from generation.pipeline import VortexPipeline
    from generation.utils.memory import get_vram_stats

    if settings.resolved_device() != "cpu":
        check_budget(settings)
    try:
        engine = VortexPipeline(settings=settings)
    except ModelInitError as exc:
        raise EngineStartError(f"models could not be loaded: {exc}") from None
    if engine.device.type == "cuda":
        stats = get_vram_stats(engine.device)
        reserved_gb = stats["reserved_gb"]
        if reserved_gb > settings.vram.hard_limit_gb:
            costs = ", ".join(f"{k} {v:.2f}" for k, v in engine.registry.load_costs_gb().items())
            raise EngineStartError(
                f"resident models take {reserved_gb:.2f} GB, above vram.hard_limit_gb "
                f"{settings.vram.hard_limit_gb:.2f} GB (per model: {costs}); what fits: drop "
                f"{reserved_gb - settings.vram.hard_limit_gb:.2f} GB, e.g. lower precisions"
            )
    log.info("engine ready in %.1f s: %s", engine.cold_start_sec, engine.sources)
    return engine


def freeze_resident_heap() -> None:
    """Hide the resident models' objects from the cyclic garbage collector, for the process's life.

    A loaded engine is about 670,000 Python objects (the tiny one too: the
    architecture is full size in object count) that live as long as the process.
    Left tracked, every full collection walks all of them (0.35 s of CPU
    here, a stall of the node's event loop in the middle of a slot) and the
    interpreter's exit spends about 2 s tearing them down: six simnet nodes on
    two busy cores took 8-10 s to exit after SIGINT, beyond the harness's grace.
    Called once by the process entry points right after `build_engine`, never
    by code that builds engines repeatedly (tests): frozen objects are never
    collected.
    """
    gc.collect()  # what is garbage now need not be kept for good
    gc.freeze()
