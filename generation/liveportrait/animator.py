"""The warp stage with LivePortrait: the actor image animated by the slot's speech, into the video buffer.

Per slot: F and M run once on the actor image (resized to the model's input
crop); the speech's phoneme timings and loudness become a motion track
(`driving.drive`); the track becomes driving keypoints for every frame at once
(float32: head pose on the source's pose, lip and eye openness through the
retargeting MLPs, lip rounding on the lip keypoints, then stitching); W and G
then render the frames in batches straight into the pre-allocated uint8 video
buffer. Batches are as large as the VRAM budget allows (measured at load, see
`choose_batch_size`), since W and G are convolution stacks that run far more
efficiently on several frames at once.

Retargeting deltas are taken relative to the source's own ratios, so a frame
with a closed mouth, open eyes and no head motion is the source itself,
whatever bias the MLPs carry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F
from torch.profiler import record_function

from generation.liveportrait.driving import EMOTION_PRESETS, MotionTrack, drive
from generation.liveportrait.face import FaceCheck
from generation.liveportrait.gentle import drift_frames
from generation.liveportrait.graphs import GraphedRender
from generation.liveportrait.keypoints import LIP_KEYPOINTS, rotation, transform
from generation.liveportrait.model import LivePortrait, SourceState
from generation.models.cancel import cancel_point
from generation.models.warp import check_num_frames
from generation.utils.pixels import to_pixels
from generation.utils.step_clock import StepClock

logger = logging.getLogger(__name__)

BatchSink = Callable[[torch.Tensor, "torch.cuda.Event | None"], None]
ROUNDING_GAIN = 0.3  # how far full rounding pulls the lip keypoints towards their centre (x only)
GIB = 1024**3


@dataclass(frozen=True)
class DrivingSettings:
    stitching: bool = True
    source_lip_ratio: float = 0.0  # the generated actor's mouth is assumed closed
    source_eye_ratio: float = 0.35  # and its eyes open (a typical ratio: no landmark model to measure it)
    max_lip_ratio: float = 0.5
    driving_multiplier: float = 1.0


@dataclass
class WarpOutput:
    frames: torch.Tensor
    mode: str
    notes: list[str] = field(default_factory=list)
    face_probability: float | None = None
    preset: str | None = None
    # the stage's steps, wall ms and (on CUDA) "<step>.gpu" ms: prologue, first_batch, record, batches, drain
    step_ms: dict[str, float] = field(default_factory=dict)


class LivePortraitWarp:
    mode = "liveportrait"

    def __init__(
        self,
        model: LivePortrait,
        *,
        batch_size: int,
        driving: DrivingSettings = DrivingSettings(),
        face_check: FaceCheck | None = None,
        hold_frames: int = 1,
        cuda_graphs: bool = False,
    ) -> None:
        """`cuda_graphs`: after a slot's first batch, W and G are replayed from a CUDA graph recorded for the
        slot (`generation.liveportrait.graphs`); CUDA only."""
        if hold_frames < 1:
            raise ValueError(f"hold_frames must be at least 1, got {hold_frames}")
        self.model = model
        self.batch_size = batch_size
        self.hold_frames = hold_frames
        self.cuda_graphs = cuda_graphs and model.device.type == "cuda"
        self.driving = driving
        self.face_check = face_check

    # -- the stage ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def render(
        self,
        actor: torch.Tensor,
        video: torch.Tensor,
        num_frames: int,
        *,
        phonemes: Sequence = (),
        audio: torch.Tensor | None = None,
        sample_rate: int = 24000,
        fps: int = 24,
        emotion: str = "neutral",
        seed: int = 0,
        on_batch: BatchSink | None = None,
    ) -> WarpOutput:
        """Render `num_frames` into `video`; `on_batch(frames, ready)` gets each finished batch (a view of
        `video`) with the CUDA event its asynchronous copy recorded (None when the copy was synchronous),
        so a streaming encoder can take it while the next batch renders."""
        check_num_frames(video, num_frames)
        cancel_point()
        steps = StepClock(self.model.device)
        notes: list[str] = []
        probability = None
        if self.face_check is not None:
            has_face, probability = self.face_check.has_face(actor)
            if not has_face:
                notes.append(
                    f"warp: no face to animate (CLIP face probability {probability:.2f} < "
                    f"{self.face_check.threshold:.2f}); the whole frame drifts instead"
                )
                for start in range(0, num_frames, self.batch_size):
                    cancel_point()
                    stop = min(start + self.batch_size, num_frames)
                    drift_frames(actor, video, start, stop, num_frames, seed)
                    if on_batch is not None:
                        on_batch(video[start:stop], None)
                return WarpOutput(video[:num_frames], "gentle", notes, probability)
        preset = EMOTION_PRESETS.get(emotion, "neutral")
        with record_function("lp:driving"):
            track = drive(
                phonemes,
                audio,
                sample_rate=sample_rate,
                fps=fps,
                num_frames=num_frames,
                preset=preset,
                seed=seed,
            )
        with record_function("lp:source"):
            source = self.model.prepare_source(self.crop(actor))
        with record_function("lp:driving"):
            kp_driving = self.driving_keypoints(source, track)
        steps.mark("prologue")  # face check, motion track, source features, driving keypoints
        # a pinned host buffer takes each batch asynchronously while the next one renders
        asynchronous = self.model.device.type == "cuda" and video.device.type == "cpu" and video.is_pinned()
        hold = self.hold_frames  # render every hold-th frame and repeat it: hold times fewer W and G runs
        kp_rendered = kp_driving[::hold]
        graphed: GraphedRender | None = None
        try:
            for first in range(0, kp_rendered.shape[0], self.batch_size):
                cancel_point()
                if self.cuda_graphs and first > 0 and graphed is None:  # the first batch ran plainly
                    with record_function("lp:record"):
                        graphed = GraphedRender(self.model, source, self.batch_size)
                    steps.mark("record")
                render = graphed or self.model.render  # a graph's frames are read below, before it replays
                frames = render(source, kp_rendered[first : first + self.batch_size])
                start, stop = first * hold, min((first + frames.shape[0]) * hold, num_frames)
                with record_function("lp:pixels"):
                    if frames.shape[-2:] != video.shape[-2:]:
                        frames = F.interpolate(
                            frames.float(), size=video.shape[-2:], mode="bilinear", antialias=True
                        )
                    pixels = to_pixels(frames.float(), video.dtype)
                    if hold > 1:
                        pixels = pixels.repeat_interleave(hold, dim=0)[: stop - start]
                    video[start:stop].copy_(pixels, non_blocking=asynchronous)
                if on_batch is not None:
                    ready = None
                    if asynchronous:
                        ready = torch.cuda.Event()
                        ready.record(torch.cuda.current_stream(self.model.device))
                    on_batch(video[start:stop], ready)
                steps.mark("first_batch" if first == 0 else "batches")
        finally:
            if graphed is not None:
                graphed.release()
        if asynchronous:
            torch.cuda.current_stream(self.model.device).synchronize()
        steps.mark("drain")
        if not phonemes:
            notes.append("warp: no phoneme timings (no speech); lips stay closed, eyes and head still move")
        return WarpOutput(video[:num_frames], self.mode, notes, probability, preset, steps.times_ms())

    def crop(self, actor: torch.Tensor) -> torch.Tensor:
        """The actor image at the model's input size (area-averaged down, as upstream's INTER_AREA)."""
        size = self.model.cfg.input_size
        x = actor.to(self.model.device, torch.float32).clamp(0, 1)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(
                x.unsqueeze(0), size=(size, size), mode="area" if x.shape[-1] > size else "bilinear"
            )[0]
        return x

    @torch.inference_mode()
    def driving_keypoints(self, source: SourceState, track: MotionTrack) -> torch.Tensor:
        """x_d for every frame of the track: (F, K, 3) float32 on the model's device."""
        d, dev = self.driving, self.model.device
        n = track.num_frames
        m = source.motion
        pose = [(getattr(m, a).expand(n) + getattr(track, a).to(dev)) for a in ("pitch", "yaw", "roll")]
        rot = rotation(*pose)
        kp = transform(
            m.kp.expand(n, -1, -1), rot, m.exp.expand(n, -1, -1), m.scale.expand(n, -1), m.t.expand(n, -1)
        )
        x_s = source.kp_source.expand(n, -1, -1)
        retarget = self.model.retargeting
        if n:
            lip_s = torch.full((n, 1), d.source_lip_ratio, device=dev)
            lip_d = lip_s + track.lip_open.to(dev).view(n, 1) * d.max_lip_ratio
            kp = (
                kp
                + retarget.lip_delta(x_s, torch.cat([lip_s, lip_d], 1))
                - retarget.lip_delta(x_s, torch.cat([lip_s, lip_s], 1))
            )
            eye_s = torch.full((n, 2), d.source_eye_ratio, device=dev)
            eye_d = track.eye_open.to(dev).view(n, 1) * d.source_eye_ratio
            kp = (
                kp
                + retarget.eye_delta(x_s, torch.cat([eye_s, eye_d], 1))
                - retarget.eye_delta(x_s, torch.cat([eye_s, eye_s[:, :1]], 1))
            )
            kp = self._round_lips(kp, track.lip_round.to(dev))
            if d.stitching:
                kp = retarget.stitch(x_s, kp)
        return x_s + (kp - x_s) * d.driving_multiplier

    @staticmethod
    def _round_lips(kp: torch.Tensor, rounding: torch.Tensor) -> torch.Tensor:
        lips = list(LIP_KEYPOINTS)
        x = kp[:, lips, 0]
        centre = x.mean(dim=1, keepdim=True)
        kp = kp.clone()
        kp[:, lips, 0] = x - ROUNDING_GAIN * rounding.view(-1, 1) * (x - centre)
        return kp


def weights_gb(model: LivePortrait) -> float:
    return (
        sum(p.numel() * p.element_size() for net in model.networks.values() for p in net.parameters()) / GIB
    )


def choose_batch_size(model: LivePortrait, room_gb: float, max_batch: int) -> int:
    """The largest batch whose activations fit in `room_gb` of device memory (CUDA); measured.

    Runs W and G on batches of 1 and 2 random frames, takes the peak memory's
    slope per frame, and divides the room (less 10% slack and what a batch of
    any size needs) by it. On the CPU there is no device memory to share: 4.
    """
    if model.device.type != "cuda":
        return min(4, max_batch)
    dev = model.device
    size = model.cfg.input_size
    source = model.prepare_source(torch.rand(3, size, size, device=dev))
    peaks = []
    for b in (1, 2):
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        kp = source.kp_source.expand(b, -1, -1) + 0.01 * torch.randn(b, model.cfg.num_kp, 3, device=dev)
        model.render(source, kp)
        torch.cuda.synchronize(dev)
        peaks.append(torch.cuda.max_memory_allocated(dev) - base)
    per_frame = max(peaks[1] - peaks[0], 1)
    fixed = max(peaks[0] - per_frame, 0)
    batch = int(max(1, min(max_batch, (room_gb * GIB * 0.9 - fixed) // per_frame)))
    logger.info(
        "liveportrait: %.0f MB a frame of activations, %.0f MB fixed; batch size %d in %.2f GB",
        per_frame / 2**20,
        fixed / 2**20,
        batch,
        room_gb,
    )
    return batch
