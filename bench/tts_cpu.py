"""Benchmark: Kokoro-82M int8 ONNX speech on this CPU.

Cold start (ONNX model assembled from its PyPI parts if needed, session created,
misaki G2P and spaCy loaded) and the real-time factor (synthesis seconds per
second of audio) for a script of about 45 s, N runs. Prints a table and writes JSON.

    python bench/tts_cpu.py [--slots 3] [--json bench/results/tts_cpu.json]
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parse_args, write_json  # noqa: E402

SCRIPT = (
    "Welcome back to the Interdimensional Cable Network, the only channel broadcasting from every reality at once. "
    "Tonight we bring you the finest programming the multiverse has to offer. "
    "First, a word from our sponsors: are you tired of your portal gun running out of fluid at the worst moment? "
    "Then try new Plumbus Plus, now with twice the fleeb and half the schleem. "
    "Next up, a cooking show where the chef is also the ingredient, and nobody seems to mind. "
    "After that, the evening news from a world where the dinosaurs never went extinct and became accountants. "
    "Stay tuned, stay weird, and remember: nobody exists on purpose, nobody belongs anywhere, "
    "everybody is going to die, so come watch television."
)


def run(repeats: int) -> dict:
    from generation.speech import load_kokoro

    t = time.perf_counter()
    kokoro = load_kokoro()
    cold = time.perf_counter() - t
    kokoro.synthesize("Warm up.", "rick_c137")
    rtfs, durations = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        audio = kokoro.synthesize(SCRIPT, "rick_c137")
        elapsed = time.perf_counter() - t
        seconds = audio.numel() / 24000
        durations.append(seconds)
        rtfs.append(elapsed / seconds)
    return {
        "benchmark": "tts_cpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "runs": repeats,
        "cold_start_sec": cold,
        "audio_sec": statistics.fmean(durations),
        "rtf_median": statistics.median(rtfs),
        "rtf_max": max(rtfs),
    }


def main() -> None:
    args = parse_args(__doc__, slots=3, json_path="bench/results/tts_cpu.json")
    r = run(args.slots)
    print(f"tts_cpu on {r['machine']['platform']} ({r['machine']['cpus']} CPUs), {r['runs']} runs")
    print(f"cold start                 {r['cold_start_sec']:.2f} s")
    print(f"audio per run              {r['audio_sec']:.1f} s")
    print(f"real-time factor, median   {r['rtf_median']:.3f}")
    print(f"real-time factor, max      {r['rtf_max']:.3f}")
    write_json(r, args.json)


if __name__ == "__main__":
    main()
