"""Benchmark: LivePortrait's per-frame cost and the 1080-frame slot, on a GPU (or tiny, on the CPU).

Builds the full-size architecture with seeded random weights (`build_random`:
the compute and memory of the released model, no files) in the configured
precision, then measures with CUDA events after warm-up (median of --repeats):

- each network at batch 1 (F and M run once per slot; W and G once per frame);
- W+G per frame at each batch size, with the peak memory each batch needs;
- the whole warp stage for a 45 s slot (1080 frames written into a uint8
  512x512 video buffer, driven by a synthetic phoneme track) at the batch size
  `choose_batch_size` picks inside the budget, and at the fastest one measured.

    python bench/liveportrait_gpu.py [--frames 1080] [--batches 1 2 4 8 16 32] [--json ...]
    python bench/liveportrait_gpu.py --tiny   # the CPU smoke run CI uses
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import card_name, write_json  # noqa: E402

GIB = 1024**3


class Timer:
    """Milliseconds of `fn()`: CUDA events on a GPU, perf_counter on the CPU; median of `repeats`."""

    def __init__(self, device: torch.device, repeats: int) -> None:
        self.device, self.repeats = device, repeats

    def __call__(self, fn) -> float:
        fn()  # warm-up (cuDNN picks its algorithms here)
        times = []
        for _ in range(self.repeats):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(self.device)
                times.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times)


def peak_gb(device: torch.device, fn) -> float:
    if device.type != "cuda":
        fn()
        return 0.0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / GIB


def synthetic_speech(frames: int, fps: int, sample_rate: int):
    """A phoneme every 90 ms cycling through open, rounded and closed visemes, and a matching waveform."""
    from generation.speech.kokoro_base import PhonemeTiming

    step = int(0.09 * sample_rate)
    total = frames * sample_rate // fps
    cycle = "hɛloʊ wɜːld mænɪk baɪ"
    phonemes = [
        PhonemeTiming(cycle[i % len(cycle)], s, min(s + step, total))
        for i, s in enumerate(range(0, total, step))
    ]
    t = torch.arange(total) / sample_rate
    audio = 0.3 * torch.sin(2 * torch.pi * 180 * t) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t))
    return phonemes, audio


def run(args: argparse.Namespace) -> dict:
    from generation.liveportrait.animator import LivePortraitWarp, choose_batch_size, weights_gb
    from generation.liveportrait.config import FULL, TINY
    from generation.liveportrait.model import build_random

    device = torch.device("cpu" if args.tiny else args.device)
    cfg = TINY if args.tiny else FULL
    precision = "fp32" if device.type == "cpu" else args.precision
    torch.backends.cudnn.benchmark = device.type == "cuda"
    t = time.perf_counter()
    model = build_random(cfg, device, precision, seed=0).optimise(
        channels_last_3d=args.channels_last_3d, compile=args.compile
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    build_sec = time.perf_counter() - t
    built_gb = torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else 0.0
    timer = Timer(device, args.repeats)
    size = cfg.input_size
    image = torch.rand(3, size, size, device=device)

    source = model.prepare_source(image)
    x = image.to(device, model.dtype).unsqueeze(0)
    modules_ms = {
        "appearance_feature_extractor (once a slot)": timer(lambda: model.appearance(x)),
        "motion_extractor (once a slot)": timer(lambda: model.motion(x)),
    }
    kp1 = source.kp_source + 0.01
    with torch.inference_mode():
        feature = source.feature
        warped = model.warping(feature, source.kp_source, kp1)
        modules_ms["warping_module"] = timer(lambda: model.warping(feature, source.kp_source, kp1))
        modules_ms["spade_generator"] = timer(lambda: model.generator(warped))
        modules_ms["stitching (MLP)"] = timer(lambda: model.retargeting.stitch(source.kp_source, kp1))

    with torch.inference_mode():
        sample = model.render(source, source.kp_source.expand(2, -1, -1) + 0.01)
    finite = bool(torch.isfinite(sample).all())
    batches = []
    for b in args.batches:
        kp = source.kp_source.expand(b, -1, -1) + 0.01 * torch.randn(b, cfg.num_kp, 3, device=device)
        try:
            ms = timer(lambda kp=kp: model.render(source, kp))
            peak = peak_gb(device, lambda kp=kp: model.render(source, kp))
        except torch.OutOfMemoryError:
            batches.append({"batch": b, "oom": True})
            torch.cuda.empty_cache()
            continue
        batches.append({"batch": b, "ms_per_batch": ms, "ms_per_frame": ms / b, "peak_allocated_gb": peak})
        print(f"batch {b:3d}: {ms / b:7.2f} ms/frame  peak {peak:5.2f} GB", flush=True)
    done = [r for r in batches if not r.get("oom")]
    best = min(done, key=lambda r: r["ms_per_frame"])

    chosen = choose_batch_size(model, args.budget_gb - weights_gb(model), args.max_batch)
    phonemes, audio = synthetic_speech(args.frames, 24, 24000)
    video = torch.zeros(args.frames, 3, cfg.output_size, cfg.output_size, dtype=torch.uint8, device=device)
    actor = torch.rand(3, cfg.output_size, cfg.output_size, device=device)
    slots = {}
    for label, b in (("budget batch", chosen), ("fastest batch", best["batch"])):
        warp = LivePortraitWarp(model, batch_size=b)

        def stage(warp=warp) -> None:
            warp.render(actor, video, args.frames, phonemes=phonemes, audio=audio, seed=1)

        ms = timer(stage)
        peak = peak_gb(device, stage)
        slots[label] = {
            "batch": b,
            "slot_ms": ms,
            "fps": args.frames / (ms / 1000),
            "peak_allocated_gb": peak,
        }
        if best["batch"] == chosen:
            break
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "card": card_name(device),
        "torch": torch.__version__,
        "config": {
            "size": "tiny" if args.tiny else "full",
            "precision": precision,
            "frames": args.frames,
            "repeats": args.repeats,
            "budget_gb": args.budget_gb,
            "output": cfg.output_size,
            "channels_last_3d": args.channels_last_3d,
            "compile": args.compile,
        },
        "parameters": model.parameter_count(),
        "build_sec": build_sec,
        "weights_allocated_gb": built_gb,
        "output_finite": finite,
        "output_std": float(sample.float().std()),
        "modules_batch1_ms": modules_ms,
        "batches": batches,
        "best": best,
        "slot": slots,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny widths on the CPU (CI)")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "bf16", "fp32"))
    parser.add_argument("--frames", type=int, default=1080)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-gb", type=float, default=3.5, help="the seed's LivePortrait budget")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--channels-last-3d", action="store_true", help="W's 3D convolutions in NDHWC")
    parser.add_argument("--compile", action="store_true", help="torch.compile W and G")
    parser.add_argument("--json", default="bench/results/liveportrait_gpu.json")
    args = parser.parse_args()
    if args.tiny and "--frames" not in sys.argv:
        args.frames = 48
    result = run(args)
    c = result["config"]
    options = ", ".join(k for k in ("channels_last_3d", "compile") if c[k]) or "no options"
    print(f"\nLivePortrait ({c['size']}, {c['precision']}, {options}) on {result['card']}")
    print(f"{'module (batch 1)':45s} {'ms':>8s}")
    for name, ms in result["modules_batch1_ms"].items():
        print(f"{name:45s} {ms:8.2f}")
    best = result["best"]
    print(f"best batch {best['batch']}: {best['ms_per_frame']:.2f} ms/frame (W+G)")
    for label, row in result["slot"].items():
        print(
            f"{result['config']['frames']}-frame slot, {label} {row['batch']}: {row['slot_ms']:.0f} ms, "
            f"{row['fps']:.0f} fps, peak {row['peak_allocated_gb']:.2f} GB"
        )
    write_json(result, args.json)


if __name__ == "__main__":
    main()
