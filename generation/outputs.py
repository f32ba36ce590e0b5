"""Writing a slot's result to disk: the actor PNG, the frames, and a JSON summary.

Encoding to a playable media file is the media issue's; this is the raw,
inspectable output that `icn-node generate` leaves behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from generation.media import frame_hwc

if TYPE_CHECKING:
    from generation.media import SlotMedia
    from generation.pipeline import GenerationResult


def result_summary(
    result: GenerationResult, media: SlotMedia | None = None, sources: dict[str, str] | None = None
) -> dict[str, Any]:
    """Everything about the result but its pixels and samples, as JSON-ready data."""
    v = result.verification
    return {
        "sources": sources,
        "media": None
        if media is None
        else {
            "mp4": media.mp4_path.name,
            "wav": media.wav_path.name,
            "content_hash": media.content_hash,
            "size_bytes": media.size_bytes,
            "duration_sec": media.duration_sec,
        },
        "slot_id": result.slot_id,
        "success": result.success,
        "error_msg": result.error_msg,
        "generation_time_ms": round(result.generation_time_ms, 3),
        "seed": result.seed,
        "recipe_hash": result.recipe_hash,
        "warp_mode": result.warp_mode,
        "video_frames_shape": list(result.video_frames.shape),
        "audio_samples": int(result.audio_waveform.numel()),
        "stage_times_ms": {k: round(t, 3) for k, t in result.stage_times_ms.items()},
        "step_times_ms": {k: round(t, 3) for k, t in result.step_times_ms.items()},
        "notes": list(result.notes),
        "verification": None
        if v is None
        else {
            "score_b": v.score_b,
            "score_l": v.score_l,
            "ensemble_score": v.ensemble_score,
            "self_check_passed": v.self_check_passed,
            "outlier": v.outlier,
            "keyframe_indices": list(v.keyframe_indices),
        },
        "clip_embedding": [float(x) for x in result.clip_embedding.tolist()],
    }


def write_result(
    result: GenerationResult,
    out_dir: str | Path,
    media: SlotMedia | None = None,
    sources: dict[str, str] | None = None,
) -> Path:
    """Write `actor.png`, `frames/NNNNNN.png` and `result.json` under `out_dir`; return the JSON's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if result.actor_image is not None:
        Image.fromarray(frame_hwc(result.actor_image)).save(out / "actor.png")
    if result.video_frames.numel():
        frames_dir = out / "frames"
        frames_dir.mkdir(exist_ok=True)
        for i, frame in enumerate(result.video_frames):
            Image.fromarray(frame_hwc(frame)).save(frames_dir / f"{i:06d}.png")
    path = out / "result.json"
    path.write_text(json.dumps(result_summary(result, media, sources), indent=2))
    return path
