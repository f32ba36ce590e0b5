"""VRAMMonitor: refuse to start a stage when device memory is past the hard limit.

A CUDA OOM in the middle of a slot leaves the caching allocator fragmented and
the slot lost anyway; checking before each stage turns it into a clean,
reported failure while the pipeline stays usable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from generation.errors import MemoryPressureError
from generation.utils.memory import get_vram_stats

logger = logging.getLogger(__name__)

StatsFn = Callable[[], dict[str, Any]]


class VRAMMonitor:
    """Soft limit: log a warning and go on. Hard limit: raise `MemoryPressureError`.

    The measure is `reserved_gb`: what this process holds from the device (on
    CPU, its resident memory), since that is what runs a 12 GB card out.
    """

    def __init__(
        self,
        soft_limit_gb: float = 11.0,
        hard_limit_gb: float = 11.5,
        device: str | torch.device = "cpu",
        *,
        stats_fn: StatsFn | None = None,
    ) -> None:
        if not 0 < soft_limit_gb <= hard_limit_gb:
            raise ValueError(
                f"need 0 < soft_limit_gb <= hard_limit_gb, got {soft_limit_gb} and {hard_limit_gb}"
            )
        self.soft_limit_gb = soft_limit_gb
        self.hard_limit_gb = hard_limit_gb
        self._stats_fn = stats_fn or (lambda: get_vram_stats(device))
        self._device = torch.device(device)
        self.soft_warnings = 0
        self.hard_violations = 0

    def _release_cache(self) -> bool:
        if self._device.type != "cuda":
            return False
        torch.cuda.empty_cache()
        return True

    def check(self, label: str) -> dict[str, Any]:
        """Measure now; warn past the soft limit; raise past the hard limit. Returns the stats."""
        stats = self._stats_fn()
        used = float(stats["reserved_gb"])
        if used >= self.soft_limit_gb and self._release_cache():
            stats = (
                self._stats_fn()
            )  # cached blocks are free memory the allocator had kept: hand them back first
            used = float(stats["reserved_gb"])
        if used >= self.hard_limit_gb:
            self.hard_violations += 1
            raise MemoryPressureError(
                f"'{label}' not started: {used:.2f} GB in use on {stats.get('device', '?')} "
                f"is at or above the hard limit of {self.hard_limit_gb:.2f} GB"
            )
        if used >= self.soft_limit_gb:
            self.soft_warnings += 1
            logger.warning(
                "memory pressure before '%s': %.2f GB in use, soft limit %.2f GB (hard %.2f GB)",
                label,
                used,
                self.soft_limit_gb,
                self.hard_limit_gb,
            )
        return stats
