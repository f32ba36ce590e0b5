"""Benchmark: whole slots through the real VortexPipeline, every model resident, on a GPU (or tiny, on the CPU).

On a GPU (`models.source: random`): every model at full size with seeded
random weights in the seed's precisions (Flux-Schnell NF4 with T5-XXL NF4,
CLIP-L text encoder and VAE bf16; Kokoro-82M FP32; LivePortrait FP16; CLIP
ViT-B-32 and ViT-L-14 INT8), built by the pipeline itself, then N slots of 45 s
(1080 frames at 512x512, 24 kHz audio) generated and encoded to MP4 as the
node does: `--encode stream` (the default, as the node runs) encodes each batch
while the warp renders the next, and the "encode" phase is then only the tail
after the CLIP check; `--encode after` is the old one-shot encode after the
slot, for comparison; the encoder chosen (NVENC or libx264 and its threads) is
reported. Reports device memory per model after load and overall, against
the seed's budgets and the hard limit; per-phase and whole-slot P50/P99; and
the cold start. With --tiny it runs the packaged tiny profile on the CPU (CI).

    python bench/slot_gpu.py [--slots 20] [--json bench/results/slot_gpu.json]
    python bench/slot_gpu.py --tiny --slots 2
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import card_name, percentile, write_json  # noqa: E402

GIB = 1024**3
SCRIPT = (
    "Welcome back to the Interdimensional Cable Network, where the programme never ends and nobody knows "
    "who is in charge. Tonight we have a very special guest, a man who has seen every version of himself "
    "and did not like a single one of them. He says the secret to happiness is low expectations and a "
    "portal gun with a full battery. Do not try this at home, or in any other dimension. Our sponsors "
    "would like to remind you that reality is optional and refunds are not. Stay tuned, because after the "
    "break we will find out what happens when a sentient meatball runs for mayor. I am told the polls are "
    "close. I am also told the polls are made of gravy. This has been a message from the council of "
    "Ricks. Please remain seated, keep your arms inside the multiverse, and enjoy the show."
)


def recipe(slot: int) -> dict:
    return {
        "audio_track": {"script": SCRIPT, "voice_id": "rick_c137", "emotion": "excited"},
        "visual_track": {
            "prompt": f"a portrait of a talking alien news anchor, take {slot}",
            "negative_prompt": "blurry",
        },
        "seed": 1000 + slot,
    }


def settings_for(args: argparse.Namespace):
    from generation.config import GenerationSettings

    if args.tiny:
        data = GenerationSettings.packaged("tiny").model_dump(mode="json")
        data["models"]["cache_dir"] = tempfile.mkdtemp(prefix="slot-bench-")
    else:
        data = GenerationSettings.packaged("default").model_dump(mode="json")
        data["device"]["name"] = args.device
        data["models"]["source"] = "random"
        data["speech"]["source"] = args.speech
        data["pipeline"]["generation_timeout_sec"] = 120.0
        data["pipeline"]["parallel_audio_actor"] = not args.sequential
        data["warp"]["face_threshold"] = 0.0  # a random CLIP sees no face anywhere: animate every actor
        data["warp"]["compile"] = args.compile
        data["warp"]["compile_cache_dir"] = args.compile_cache
        data["warp"]["cuda_graphs"] = args.cuda_graphs
        data["warp"]["batch_size"] = args.batch
        data["encode"]["threads"] = args.encode_threads
        data["vram"]["hard_limit_gb"] = args.hard_limit
        data["vram"]["soft_limit_gb"] = min(data["vram"]["soft_limit_gb"], args.hard_limit)
    return GenerationSettings.from_mapping(data)


def memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return {
        "allocated_gb": torch.cuda.memory_allocated(device) / GIB,
        "reserved_gb": torch.cuda.memory_reserved(device) / GIB,
        "peak_allocated_gb": torch.cuda.max_memory_allocated(device) / GIB,
        "peak_reserved_gb": torch.cuda.max_memory_reserved(device) / GIB,
    }


def encoder_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def encoder_choice(settings) -> str | None:
    from generation.encoder import choose_encoder

    return choose_encoder(settings.encode.codec, settings.encode.threads).describe()


def fill_buffers(pipeline, slot_recipe: dict, slot: int):
    """Generate one slot, so that the actor and audio buffers and the phonemes a lone stage reads are set."""
    import anyio

    result = anyio.run(pipeline.generate_slot, slot_recipe, slot)
    if not result.success:
        raise SystemExit(f"slot {slot} failed: {result.error_msg}")
    return result


def render_warp(pipeline, result, emotion: str) -> None:
    """The warp stage of `result`'s slot again, in this thread, from the buffers `fill_buffers` left."""
    s = pipeline.settings
    pipeline.warp.render(
        pipeline.actor_buffer, pipeline.video_buffer, result.video_frames.shape[0],
        phonemes=result.phonemes, audio=pipeline.audio_buffer[: result.audio_waveform.numel()],
        sample_rate=s.buffers.audio.sample_rate, fps=s.buffers.video.fps, emotion=emotion,
        seed=result.seed or 0,
    )  # fmt: skip


def profile_warp(pipeline, table_path: str, trace_path: str | None = None) -> dict:
    """The warp stage of one more slot under torch.profiler, in this thread (the profiler sees only the
    thread that starts it; the pipeline runs its stages in worker threads): the top kernels by device
    time to `table_path`, and the stage's named ranges (driving, source, W, G, pixels)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    result = fill_buffers(pipeline, recipe(9999), 9999)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    started = time.perf_counter()
    with profile(activities=activities) as prof, record_function("warp"):
        render_warp(pipeline, result, "excited")
        sync()
    wall_ms = (time.perf_counter() - started) * 1000
    events = prof.key_averages()
    Path(table_path).parent.mkdir(parents=True, exist_ok=True)
    Path(table_path).write_text(events.table(sort_by="self_device_time_total", row_limit=40))
    if trace_path:  # the timeline (chrome://tracing, Perfetto): where the GPU waits, and on what
        prof.export_chrome_trace(trace_path)
    ranges = ("warp", "lp:driving", "lp:source", "lp:W", "lp:G", "lp:pixels")
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:25]
    return {
        "warp_wall_ms_profiled": wall_ms,
        "ranges": {
            e.key: {
                "cpu_ms": e.cpu_time_total / 1000,
                "device_ms": e.device_time_total / 1000,
                "calls": e.count,
            }
            for e in events
            if e.key in ranges
        },
        "device_ms_total": sum(e.self_device_time_total for e in events) / 1000,
        "top_kernels": [
            {"name": e.key[:120], "self_device_ms": e.self_device_time_total / 1000, "calls": e.count}
            for e in top
        ],
    }


def check_graphs(pipeline) -> dict:
    """W and G replayed from a CUDA graph against the plain call on the same inputs: the same frames?"""
    from generation.liveportrait.graphs import GraphedRender

    warp = pipeline.warp
    model, batch = warp.model, warp.batch_size
    size = model.cfg.input_size
    with torch.inference_mode():
        source = model.prepare_source(torch.rand(3, size, size, device=model.device))
        kp = source.kp_source.expand(batch, -1, -1) + 0.02 * torch.randn(
            batch, model.cfg.num_kp, 3, device=model.device
        )
        plain = model.render(source, kp).float()
        graphed = GraphedRender(model, source, batch)
        replayed = graphed(source, kp).float()
        short = graphed(source, kp[:1]).float()
        graphed.release()
    return {
        "batch": batch,
        "max_abs_diff": float((plain - replayed).abs().max()),
        "short_batch_max_abs_diff": float((plain[:1] - short).abs().max()),
    }


def count_flops(pipeline) -> dict:
    """FLOPs of each stage of one slot (torch.utils.flop_counter), every stage run in this thread: the
    counter is a dispatch mode of the thread that enters it, and sees eager ops only (run without
    --compile). NF4 layers count as the bf16 matmuls bitsandbytes runs after dequantising."""
    from torch.utils.flop_counter import FlopCounterMode

    r = recipe(9998)
    result = fill_buffers(pipeline, r, 9998)
    s, n = pipeline.settings, result.video_frames.shape[0]
    visual, speech = r["visual_track"], r["audio_track"]
    stages = {
        "actor": lambda: pipeline.registry.get_model("flux").generate(
            visual["prompt"], visual["negative_prompt"], num_inference_steps=s.flux.num_inference_steps,
            guidance_scale=s.flux.guidance_scale, seed=result.seed, output=pipeline.actor_buffer,
        ),
        "audio": lambda: pipeline.registry.get_model("kokoro").synthesize_with_timings(
            speech["script"], speech["voice_id"], 1.0, speech["emotion"],
            max_duration_sec=s.buffers.audio.duration_sec, output=pipeline.audio_buffer,
        ),
        "warp": lambda: render_warp(pipeline, result, speech["emotion"]),
        "verify": lambda: pipeline.clip_ensemble.verify(pipeline.video_buffer[:n], visual["prompt"]),
    }  # fmt: skip
    out = {}
    for name, stage in stages.items():
        if name == "audio" and "kokoro" not in pipeline.registry:
            continue
        with FlopCounterMode(display=False) as counter:
            stage()
        out[name] = {"flops": counter.get_total_flops()}
    return out


def run(args: argparse.Namespace) -> dict:
    import anyio

    from generation.media import write_slot_media
    from generation.pipeline import VortexPipeline

    settings = settings_for(args)
    device = torch.device(settings.resolved_device())
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark  # an experiment, not an engine setting
        # behave like a card with only the hard limit's memory: past it the allocator fails, as a 12 GB one would
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(settings.vram.hard_limit_gb * GIB / total, device)
    t = time.perf_counter()
    pipeline = VortexPipeline(settings=settings)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    cold_start = time.perf_counter() - t
    after_load = memory(device)
    encode = args.encode if encoder_available() else "none"
    budgets = settings.models.budgets_gb.model_dump()
    fps, sample_rate = settings.buffers.video.fps, settings.buffers.audio.sample_rate

    phases: dict[str, list[float]] = {}
    totals: list[float] = []
    notes: set[str] = set()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as out:
        for slot in range(args.slots + 1):  # slot 0 warms up (cuDNN algorithm search) and is not counted
            started = time.perf_counter()
            into = Path(out) / f"slot-{slot}" if encode == "stream" else None
            result = anyio.run(functools.partial(pipeline.generate_slot, recipe(slot), slot, encode_to=into))
            if not result.success:
                raise SystemExit(f"slot {slot} failed: {result.error_msg}")
            times = {**result.stage_times_ms, **result.step_times_ms}  # stages, and the warp's steps
            if encode == "after":
                t = time.perf_counter()
                write_slot_media(
                    result.video_frames, result.audio_waveform, out, fps=fps, sample_rate=sample_rate
                )
                times["encode"] = (time.perf_counter() - t) * 1000
            total = (time.perf_counter() - started) * 1000
            notes.update(n for n in result.notes)
            if slot == 0:
                warm_up = total
                continue
            totals.append(total)
            for name, ms in times.items():
                phases.setdefault(name, []).append(ms)
        profile = profile_warp(pipeline, args.profile, args.trace) if args.profile else None
        graphs_check = check_graphs(pipeline) if settings.warp.cuda_graphs else None
        flops = count_flops(pipeline) if args.flops else None
    during = memory(device)
    return {
        "benchmark": "slot_gpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "card": card_name(device),
        "torch": torch.__version__,
        "config": {
            "source": pipeline.source,
            "sources": pipeline.sources,
            "precision": settings.models.precision.model_dump(),
            "video": [result.video_frames.shape[0], *result.video_frames.shape[2:]],
            "audio_samples": int(result.audio_waveform.numel()),
            "liveportrait_batch": getattr(pipeline.warp, "batch_size", None),
            "slots": args.slots,
            "encode": encode,
            "encoder": encoder_choice(settings) if encode != "none" else None,
            "parallel_audio_actor": settings.pipeline.parallel_audio_actor,
            "warp_compile": settings.warp.compile,
            "warp_cuda_graphs": settings.warp.cuda_graphs,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "graphs_equal_eager": graphs_check,
            "compile_cache_dir": args.compile_cache,
            "speech_window_sec": settings.speech.window_sec,
        },
        "cold_start_sec": cold_start,
        "warm_up_slot_ms": warm_up,
        "memory": {
            "per_model_allocated_gb": pipeline.registry.load_costs_gb() if device.type == "cuda" else {},
            "budgets_gb": budgets,
            "hard_limit_gb": settings.vram.hard_limit_gb,
            "after_load": after_load,
            "during_slots": during,
        },
        "phase_ms": {
            n: {"p50": percentile(v, 50), "p99": percentile(v, 99), "mean": statistics.fmean(v)}
            for n, v in phases.items()
        },
        "slot_ms": {
            "p50": percentile(totals, 50),
            "p99": percentile(totals, 99),
            "mean": statistics.fmean(totals),
        },
        "notes": sorted(notes),
        "profile": profile,
        "flops": flops,
    }


def print_table(r: dict) -> None:
    m = r["memory"]
    print(f"slot_gpu on {r['card']} ({r['config']['source']} weights), torch {r['torch']}")
    print(f"cold start (every model built and resident): {r['cold_start_sec']:.1f} s")
    c = r["config"]
    print(
        f"warp: batch {c['liveportrait_batch']}, compile {c['warp_compile']}, CUDA graphs {c['warp_cuda_graphs']}"
        f" (equal to the plain call: {c['graphs_equal_eager']}), cuDNN benchmark {c['cudnn_benchmark']}"
    )
    print(f"encode: {r['config']['encode']}, {r['config']['encoder'] or 'no encoder'}")
    if m["per_model_allocated_gb"]:
        print(f"{'model':14s} {'allocated GB':>13s} {'budget GB':>10s}")
        for name, gb in m["per_model_allocated_gb"].items():
            print(f"{name:14s} {gb:13.2f} {m['budgets_gb'].get(name, float('nan')):10.2f}")
        a, d = m["after_load"], m["during_slots"]
        print(f"{'all resident':14s} {a['allocated_gb']:13.2f}   reserved {a['reserved_gb']:.2f}")
        print(
            f"{'peak in slots':14s} {d['peak_allocated_gb']:13.2f}   reserved {d['peak_reserved_gb']:.2f} "
            f"(hard limit {m['hard_limit_gb']:.1f})"
        )
    print(f"{'phase':10s} {'P50 ms':>9s} {'P99 ms':>9s}")
    for name, s in r["phase_ms"].items():
        print(f"{name:10s} {s['p50']:9.0f} {s['p99']:9.0f}")
    print(
        f"{'slot':10s} {r['slot_ms']['p50']:9.0f} {r['slot_ms']['p99']:9.0f}   ({r['config']['slots']} slots)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the packaged tiny profile on the CPU (CI)")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--speech", default="full", choices=("full", "none"))
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument(
        "--hard-limit", type=float, default=11.5, help="GB; also caps the allocator (a 12 GB card)"
    )
    parser.add_argument("--sequential", action="store_true", help="audio then actor, not side by side")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile LivePortrait's W and G (warp.compile)"
    )
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="replay W and G from a CUDA graph (warp.cuda_graphs)"
    )
    parser.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="torch.backends.cudnn.benchmark: cuDNN times its algorithms per shape",
    )
    parser.add_argument("--encode-threads", type=int, default=0, help="encode.threads (0: one per core)")
    parser.add_argument("--batch", type=int, default=0, help="warp.batch_size (0: the most the memory fits)")
    parser.add_argument(
        "--profile", default=None, metavar="TABLE",
        help="after the measured slots, one more under torch.profiler: its kernel table to TABLE",
    )  # fmt: skip
    parser.add_argument("--trace", default=None, metavar="JSON", help="with --profile: its timeline to JSON")
    parser.add_argument(
        "--flops", action="store_true", help="after the measured slots, count each stage's FLOPs (eager only)"
    )
    parser.add_argument(
        "--compile-cache", default=None, metavar="DIR",
        help="warp.compile_cache_dir: run twice with the same DIR to measure a cold start from warm caches",
    )  # fmt: skip
    parser.add_argument(
        "--encode", default="stream", choices=("stream", "after", "none"),
        help="stream: beside the warp, as the node runs (default); after: one-shot after the slot",
    )  # fmt: skip
    parser.add_argument("--json", default="bench/results/slot_gpu.json")
    args = parser.parse_args()
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    if args.flops and args.compile:
        parser.error("--flops counts eager ops: leave out --compile")
    result = run(args)
    print_table(result)
    write_json(result, args.json)


if __name__ == "__main__":
    main()
