"""Device memory accounting that means something on CUDA and on CPU alike.

On CUDA the numbers are the caching allocator's (what this process holds on the
card). On CPU there is no VRAM: the same keys report the process's resident
memory against the machine's, so the VRAM monitor and its tests behave the same
way on a laptop, in CI and on a GPU node.
"""

from __future__ import annotations

import logging
import os
import resource
from typing import Any

import torch

logger = logging.getLogger(__name__)

GIB = 1024**3
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(num_bytes: float) -> str:
    """Human-readable size in binary units, e.g. ``format_bytes(1536) == '1.50 KiB'``."""
    if num_bytes < 0:
        return "-" + format_bytes(-num_bytes)
    value = float(num_bytes)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _cpu_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _cpu_peak_rss_bytes()


def _cpu_peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _cpu_total_and_free_bytes() -> tuple[int, int]:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    free = total
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    return total, free


def get_vram_stats(device: str | torch.device | None = None) -> dict[str, Any]:
    """Memory of `device` (default: cuda:0 when present, else the CPU) in GiB.

    Keys: device, allocated_gb, reserved_gb, max_allocated_gb, total_gb, free_gb.
    """
    dev = torch.device(device) if device is not None else None
    if dev is None:
        dev = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        return {
            "device": f"cuda:{index}",
            "allocated_gb": torch.cuda.memory_allocated(index) / GIB,
            "reserved_gb": torch.cuda.memory_reserved(index) / GIB,
            "max_allocated_gb": torch.cuda.max_memory_allocated(index) / GIB,
            "total_gb": total / GIB,
            "free_gb": free / GIB,
        }
    rss = _cpu_rss_bytes()
    total, free = _cpu_total_and_free_bytes()
    return {
        "device": "cpu",
        "allocated_gb": rss / GIB,
        "reserved_gb": rss / GIB,
        "max_allocated_gb": max(rss, _cpu_peak_rss_bytes()) / GIB,
        "total_gb": total / GIB,
        "free_gb": free / GIB,
    }


def log_vram_snapshot(label: str, device: str | torch.device | None = None) -> dict[str, Any]:
    """Log one line of memory stats under `label` and return them."""
    stats = get_vram_stats(device)
    logger.info(
        "memory[%s] %s: allocated=%.2f GiB reserved=%.2f GiB peak=%.2f GiB free=%.2f/%.2f GiB",
        label,
        stats["device"],
        stats["allocated_gb"],
        stats["reserved_gb"],
        stats["max_allocated_gb"],
        stats["free_gb"],
        stats["total_gb"],
    )
    return stats
