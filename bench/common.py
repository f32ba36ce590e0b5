"""What every benchmark script shares: percentiles, and its command line and JSON output."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def card_name(device) -> str:
    """The GPU's name, or the CPU's where the run had no GPU: every result says what ran it."""
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or "cpu"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def parse_args(doc: str, *, slots: int, json_path: str) -> argparse.Namespace:
    """`--slots N` (at least 1) and `--json PATH`, with the script's docstring as help."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=slots)
    parser.add_argument("--json", default=json_path)
    args = parser.parse_args()
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    return args


def write_json(result: dict, path: str | Path) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
