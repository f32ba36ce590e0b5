"""ModelRegistry: every model of the engine, loaded once and held for the process's life.

Static residency is the seed's design: no model moves on or off the device
between slots, so a slot never pays a load, and memory use is known at start-up.
The registry records what each model cost, and turns an out-of-memory at load
into an error that says which model, its budget and what was free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from generation.errors import ModelInitError, UnknownModelError, VortexError
from generation.utils.memory import get_vram_stats

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ModelRegistry:
    def __init__(
        self, device: str | torch.device = "cpu", budgets_gb: Mapping[str, float] | None = None
    ) -> None:
        self.device = torch.device(device)
        self.budgets_gb = dict(budgets_gb or {})
        self._models: dict[str, Any] = {}
        self._load_cost_gb: dict[str, float] = {}

    def load(self, name: str, loader: Callable[[], T]) -> T:
        """Run `loader` once and keep its model under `name`."""
        if name in self._models:
            raise ModelInitError(f"model '{name}' is already loaded")
        before = get_vram_stats(self.device)
        try:
            model = loader()
        except torch.OutOfMemoryError as exc:
            free = get_vram_stats(self.device)
            budget = self.budgets_gb.get(name)
            budget_txt = f"{budget:.2f} GB" if budget is not None else "no budget set"
            raise ModelInitError(
                f"out of memory loading model '{name}' on {free['device']}: budget {budget_txt}, "
                f"{free['free_gb']:.2f} GB free of {free['total_gb']:.2f} GB "
                f"({free['allocated_gb']:.2f} GB already allocated): {exc}"
            ) from exc
        except VortexError:
            raise
        except Exception as exc:
            raise ModelInitError(f"loading model '{name}' failed: {type(exc).__name__}: {exc}") from exc
        after = get_vram_stats(self.device)
        self._load_cost_gb[name] = max(0.0, after["allocated_gb"] - before["allocated_gb"])
        self._models[name] = model
        budget = self.budgets_gb.get(name)
        if budget is not None and self.device.type == "cuda" and self._load_cost_gb[name] > budget:
            logger.warning(
                "model '%s' took %.2f GB, over its %.2f GB budget", name, self._load_cost_gb[name], budget
            )
        return model

    def get_model(self, name: str) -> Any:
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "none"
            raise UnknownModelError(f"unknown model '{name}' (loaded: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def names(self) -> list[str]:
        return list(self._models)

    def load_costs_gb(self) -> dict[str, float]:
        """Memory each model added when it was loaded (device memory on CUDA, resident memory on CPU)."""
        return dict(self._load_cost_gb)
