"""Benchmark: encoding one slot's media (H.264 + AAC MP4 and the WAV) on this machine's CPU.

The node encodes every slot it directs; the encoder is PyAV (FFmpeg's libx264,
preset veryfast, CRF 20) and runs on the CPU whatever the GPU. Frames are a
slowly drifting smooth picture (what LivePortrait's output looks like to an
encoder: mostly still, locally moving), not noise, which no video resembles.

    python bench/encode_cpu.py [--slots 3] [--frames 1080] [--size 512] [--json bench/results/encode_cpu.json]
"""

from __future__ import annotations

import argparse
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

import torch  # noqa: E402
from common import percentile, write_json  # noqa: E402


def frames(count: int, size: int) -> torch.Tensor:
    from generation.liveportrait.gentle import drift_frames

    g = torch.Generator().manual_seed(0)
    picture = torch.nn.functional.interpolate(
        torch.rand(1, 3, 16, 16, generator=g), size=(size, size), mode="bicubic"
    )
    video = torch.zeros(count, 3, size, size, dtype=torch.uint8)
    for start in range(0, count, 64):
        drift_frames(picture[0].clamp(0, 1), video, start, min(start + 64, count), count, seed=7)
    return video


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--frames", type=int, default=1080)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", default="bench/results/encode_cpu.json")
    args = parser.parse_args()
    from generation.media import write_slot_media

    video = frames(args.frames, args.size)
    audio = 0.1 * torch.sin(torch.arange(args.frames * 1000) / 20.0)  # 24 kHz for frames / 24 fps
    times = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.slots):
            t = time.perf_counter()
            media = write_slot_media(video, audio, out)
            times.append((time.perf_counter() - t) * 1000)
    result = {
        "benchmark": "encode_cpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "config": {"frames": args.frames, "size": args.size, "slots": args.slots},
        "encode_ms": {
            "p50": percentile(times, 50),
            "p99": percentile(times, 99),
            "mean": statistics.fmean(times),
        },
        "mp4_bytes": media.size_bytes,
    }
    print(f"encode {args.frames} frames of {args.size}x{args.size} on {result['machine']['cpus']} CPUs")
    print(
        f"P50 {result['encode_ms']['p50']:.0f} ms  P99 {result['encode_ms']['p99']:.0f} ms  MP4 {media.size_bytes / 1e6:.1f} MB"
    )
    write_json(result, args.json)


if __name__ == "__main__":
    main()
