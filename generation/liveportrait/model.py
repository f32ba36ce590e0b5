"""The five LivePortrait networks as one resident model: built, loaded, and run per slot.

`load_liveportrait` reads a directory in the release's layout (real weights, or
the tiny source's seeded ones written in the same layout); `build_random`
makes the full-size architecture with seeded random weights and no files, for
GPU benchmarks (compute and memory are those of the real model). F, M, W and G
run in the configured precision; the keypoint math and the three MLPs stay in
float32, as upstream runs them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.profiler import record_function

from generation.errors import ConfigError
from generation.liveportrait.appearance import AppearanceFeatureExtractor, ConvBnRelu2d
from generation.liveportrait.checkpoint import (
    check_directory,
    file_of,
    fold_spectral_norm,
    load_stitching,
    match_state,
    read_pickle,
)
from generation.liveportrait.config import FULL, LivePortraitConfig
from generation.liveportrait.keypoints import rotation, transform
from generation.liveportrait.motion_extractor import MotionExtractor, MotionInfo
from generation.liveportrait.spade import SpadeDecoder
from generation.liveportrait.stitching import StitchingRetargeting
from generation.liveportrait.warping import Block3d, Decoder, DenseMotionNetwork, WarpingNetwork

logger = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class SourceState:
    """What the slot computes once from the actor image: F's volume, M's motion, x_s."""

    feature: torch.Tensor  # (1, C, D, h, w) in the network dtype
    motion: MotionInfo
    kp_source: torch.Tensor  # (1, K, 3) float32


class LivePortrait:
    def __init__(self, cfg: LivePortraitConfig, device: torch.device, dtype: torch.dtype) -> None:
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.appearance = AppearanceFeatureExtractor(cfg)
        self.motion = MotionExtractor(cfg)
        self.warping = WarpingNetwork(cfg)
        self.generator = SpadeDecoder(cfg)
        self.retargeting = StitchingRetargeting(cfg)

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {
            "appearance_feature_extractor": self.appearance,
            "motion_extractor": self.motion,
            "warping_module": self.warping,
            "spade_generator": self.generator,
            "stitching_retargeting_module": self.retargeting,
        }

    def parameter_count(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in net.parameters()) for name, net in self.networks.items()}

    def finish(self) -> LivePortrait:
        """Eval mode, BatchNorm folded into the convolutions before it, moved to the device and dtype."""
        for net in self.networks.values():
            net.eval().requires_grad_(False)
        _fuse_batchnorm(self.warping)
        for net in (self.appearance, self.motion, self.warping, self.generator):
            net.to(self.device, self.dtype)
        self.retargeting.to(self.device, torch.float32)
        if self.device.type == "cuda":
            self.generator.to(memory_format=torch.channels_last)
        return self

    def optimise(self, *, channels_last_3d: bool = False, compile: bool = False) -> LivePortrait:
        """Speed options for CUDA, measured in bench/liveportrait_gpu.py before any is made a default.

        channels_last_3d: the warping module's 3D convolutions in NDHWC (cuDNN's
        tensor-core layout); compile: torch.compile W and G (fuses the norms and
        activations between convolutions; costs a compilation per batch shape).
        """
        if channels_last_3d:
            for sub in self.warping.modules():
                if isinstance(sub, nn.Conv3d):
                    sub.weight.data = sub.weight.data.contiguous(memory_format=torch.channels_last_3d)
        if compile:
            self.warping = torch.compile(self.warping, dynamic=False)
            self.generator = torch.compile(self.generator, dynamic=False)
        return self

    # -- inference --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def prepare_source(self, image: torch.Tensor) -> SourceState:
        """image: (3, S, S) RGB in [0, 1] at the model's input size."""
        x = image.to(self.device, self.dtype).unsqueeze(0)
        feature = self.appearance(x)
        motion = self.motion(x)
        rot = rotation(motion.pitch, motion.yaw, motion.roll)
        kp_source = transform(motion.kp, rot, motion.exp, motion.scale, motion.t)
        return SourceState(feature=feature, motion=motion, kp_source=kp_source)

    @torch.inference_mode()
    def render(self, source: SourceState, kp_driving: torch.Tensor) -> torch.Tensor:
        """kp_driving: (B, K, 3) float32 -> (B, 3, 2S, 2S) frames in [0, 1], network dtype."""
        b = kp_driving.shape[0]
        feature = source.feature.expand(b, *source.feature.shape[1:])
        kp_source = source.kp_source.expand(b, -1, -1)
        with record_function("lp:W"):  # named ranges for bench/slot_gpu.py --profile (near free otherwise)
            warped = self.warping(feature, kp_source, kp_driving)
        with record_function("lp:G"):
            if self.device.type == "cuda":
                warped = warped.contiguous(memory_format=torch.channels_last)
            return self.generator(warped)


def _fuse_batchnorm(module: nn.Module) -> None:
    """Fold each eval-mode BatchNorm into the convolution that feeds it (one pass over memory less)."""
    for sub in module.modules():
        if isinstance(sub, ConvBnRelu2d | Block3d | Decoder):
            sub.conv = fuse_conv_bn_eval(sub.conv, sub.norm)
            sub.norm = nn.Identity()
        elif isinstance(sub, DenseMotionNetwork):
            sub.compress = fuse_conv_bn_eval(sub.compress, sub.norm)
            sub.norm = nn.Identity()


def _dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision not in DTYPES:
        raise ConfigError(f"models.precision.liveportrait: unknown precision {precision!r}")
    if device.type == "cpu" and precision != "fp32":
        raise ConfigError("models.precision.liveportrait: use 'fp32' on the CPU (half precision is for CUDA)")
    return DTYPES[precision]


def load_liveportrait(
    weights_dir: str | Path, device: str | torch.device = "cuda:0", precision: str = "fp16"
) -> LivePortrait:
    """Load the released checkpoints (or the tiny source's) from `weights_dir` in the hub's layout."""
    device = torch.device(device)
    root = check_directory(Path(weights_dir))
    model = LivePortrait(LivePortraitConfig.read(root), device, _dtype(precision, device))
    for part, net in model.networks.items():
        path = file_of(root, part)
        if part == "stitching_retargeting_module":
            load_stitching(net, path)
            continue
        state = read_pickle(path)
        if part == "spade_generator":
            state = fold_spectral_norm(state, path)
        match_state(net, state, path)
    return model.finish()


def build_random(
    cfg: LivePortraitConfig = FULL,
    device: str | torch.device = "cuda:0",
    precision: str = "fp16",
    seed: int = 0,
) -> LivePortrait:
    """The architecture with seeded random weights and no files (benchmarks: same compute and memory)."""
    device = torch.device(device)
    dtype = _dtype(precision, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LivePortrait(cfg, device, dtype)
        randomise_norms(model)
    return model.finish()


def randomise_norms(model: LivePortrait) -> None:
    """Give BatchNorms plausible running statistics, so a random model's activations stay in range."""
    for net in model.networks.values():
        for sub in net.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.running_mean.normal_(0.0, 0.1)
                sub.running_var.uniform_(0.5, 2.0)
                sub.weight.data.uniform_(0.5, 1.5)
                sub.bias.data.normal_(0.0, 0.1)
