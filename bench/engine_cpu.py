"""Benchmark: the tiny Vortex pipeline on this CPU machine.

Measures cold start (pipeline construction: tiny weights built from the seed and
written in the upstream layouts, then every model loaded through the real
loaders, buffers allocated) with an empty and with a warm weights cache, and
P50/P99 of `generate_slot` over N slots at the packaged tiny sizes. Prints a
table and writes JSON.

    python bench/engine_cpu.py [--slots 20] [--json bench/results/engine_cpu.json]
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parse_args, percentile, write_json  # noqa: E402


def run(slots: int) -> dict:
    t0 = time.perf_counter()
    import torch
    import trio

    from generation.config import GenerationSettings
    from generation.pipeline import VortexPipeline

    import_sec = time.perf_counter() - t0
    base = GenerationSettings.packaged("tiny").model_dump(mode="json")
    with tempfile.TemporaryDirectory() as cache:
        base["models"]["cache_dir"] = cache
        settings = GenerationSettings.from_mapping(base)
        t = time.perf_counter()
        VortexPipeline(settings=settings)
        cold_empty = time.perf_counter() - t
        t = time.perf_counter()
        pipeline = VortexPipeline(settings=settings)
        cold_warm = time.perf_counter() - t

        recipe = {
            "audio_track": {
                "script": "Welcome to the Interdimensional Cable Network!",
                "voice_id": "rick_c137",
            },
            "visual_track": {"prompt": "a mad scientist in a laboratory", "negative_prompt": "blurry"},
        }
        trio.run(pipeline.generate_slot, recipe, 0)  # warm-up, not counted
        totals: list[float] = []
        stages: dict[str, list[float]] = {}
        for slot in range(1, slots + 1):
            result = trio.run(pipeline.generate_slot, recipe, slot)
            if not result.success:
                raise SystemExit(f"slot {slot} failed: {result.error_msg}")
            totals.append(result.generation_time_ms)
            for name, ms in result.stage_times_ms.items():
                stages.setdefault(name, []).append(ms)

    b = settings.buffers
    return {
        "benchmark": "engine_cpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "config": {
            "profile": "tiny",
            "actor": [b.actor.height, b.actor.width],
            "video": [b.video.frames, b.video.height, b.video.width],
            "flux_steps": settings.flux.num_inference_steps,
            "slots": slots,
        },
        "import_sec": import_sec,
        "cold_start_sec": {"empty_cache": cold_empty, "warm_cache": cold_warm},
        "slot_ms": {
            "p50": percentile(totals, 50),
            "p99": percentile(totals, 99),
            "mean": statistics.fmean(totals),
        },
        "stage_ms": {n: {"p50": percentile(v, 50), "p99": percentile(v, 99)} for n, v in stages.items()},
    }


def print_table(r: dict) -> None:
    rows = [
        ("imports (torch, diffusers, ...)", f"{r['import_sec']:.2f} s"),
        ("cold start, empty weights cache", f"{r['cold_start_sec']['empty_cache']:.2f} s"),
        ("cold start, warm weights cache", f"{r['cold_start_sec']['warm_cache']:.2f} s"),
        (f"generate_slot P50 ({r['config']['slots']} slots)", f"{r['slot_ms']['p50']:.1f} ms"),
        (f"generate_slot P99 ({r['config']['slots']} slots)", f"{r['slot_ms']['p99']:.1f} ms"),
    ]
    rows += [
        (f"  stage {n} P50 / P99", f"{s['p50']:.1f} / {s['p99']:.1f} ms") for n, s in r["stage_ms"].items()
    ]
    width = max(len(k) for k, _ in rows)
    print(
        f"engine_cpu on {r['machine']['processor']} ({r['machine']['cpus']} CPUs), torch {r['machine']['torch']}"
    )
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  -----")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def main() -> None:
    args = parse_args(__doc__, slots=20, json_path="bench/results/engine_cpu.json")
    result = run(args.slots)
    print_table(result)
    write_json(result, args.json)


if __name__ == "__main__":
    main()
