"""What every benchmark script shares: percentiles, and its command line and JSON output."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any


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


def record_header(bench: str) -> dict[str, Any]:
    """What every JSON result starts with: the benchmark, when, on what, and the command."""
    return {
        "bench": bench,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "command": " ".join(sys.argv),
    }


def start_cli_node(
    work: Path, init_args: list[str], edits: dict[str, str], log: IO[str]
) -> subprocess.Popen[bytes]:
    """`icn-node init` in `work`, the config's text edited (each key must be found), then `icn-node run`
    as a process logging to `log`: a node as an operator starts one."""
    cli = [sys.executable, "-m", "node.cli"]
    subprocess.run([*cli, "init", *init_args], cwd=work, check=True, capture_output=True)
    config = work / "node.toml"
    text = config.read_text()
    for old, new in edits.items():
        assert old in text, f"the template no longer writes {old!r}"
        text = text.replace(old, new)
    config.write_text(text)
    return subprocess.Popen([*cli, "run", "--config", "node.toml"], cwd=work, stdout=log, stderr=log)
