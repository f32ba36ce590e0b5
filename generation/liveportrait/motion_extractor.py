"""M, the motion extractor: a ConvNeXt-V2 that reads keypoints, pose and expression from a face.

Runs once per slot, on the source image: the speech, not a driving video,
supplies the motion afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from generation.liveportrait.config import LivePortraitConfig


class ChannelsFirstLayerNorm(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN on channels-last input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * n) + self.beta + x


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    """The backbone with LivePortrait's seven linear heads (upstream keys under `detector.`)."""

    def __init__(self, cfg: LivePortraitConfig) -> None:
        super().__init__()
        dims, k = cfg.convnext_dims, cfg.num_kp
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), ChannelsFirstLayerNorm(dims[0]))]
        )
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(d) for _ in range(depth)))
            for d, depth in zip(dims, cfg.convnext_depths, strict=True)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        width = dims[-1]
        self.fc_kp = nn.Linear(width, 3 * k)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, cfg.num_bins)
        self.fc_yaw = nn.Linear(width, cfg.num_bins)
        self.fc_roll = nn.Linear(width, cfg.num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, 3 * k)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        x = self.norm(x.mean(dim=(-2, -1)))
        return {
            "kp": self.fc_kp(x),
            "scale": self.fc_scale(x),
            "pitch": self.fc_pitch(x),
            "yaw": self.fc_yaw(x),
            "roll": self.fc_roll(x),
            "t": self.fc_t(x),
            "exp": self.fc_exp(x),
        }


@dataclass(frozen=True)
class MotionInfo:
    """The source's implicit keypoints and motion, in float32 (the keypoint math needs it)."""

    kp: torch.Tensor  # (B, K, 3) canonical keypoints x_c
    exp: torch.Tensor  # (B, K, 3) expression deltas
    pitch: torch.Tensor  # (B,) degrees
    yaw: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor  # (B, 3)
    scale: torch.Tensor  # (B, 1)


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Expected bin of a softmax over the pose bins, as degrees (3 degrees a bin, centred on 0)."""
    probs = torch.softmax(logits.float(), dim=-1)
    index = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
    half = (logits.shape[-1] - 1) * 1.5  # 66 bins: +-97.5
    return (probs * index).sum(dim=-1) * 3.0 - half


class MotionExtractor(nn.Module):
    def __init__(self, cfg: LivePortraitConfig) -> None:
        super().__init__()
        self.detector = ConvNeXtV2(cfg)

    def forward(self, image: torch.Tensor) -> MotionInfo:
        out = self.detector(image)
        b = image.shape[0]
        return MotionInfo(
            kp=out["kp"].float().view(b, -1, 3),
            exp=out["exp"].float().view(b, -1, 3),
            pitch=bins_to_degrees(out["pitch"]),
            yaw=bins_to_degrees(out["yaw"]),
            roll=bins_to_degrees(out["roll"]),
            t=out["t"].float(),
            scale=out["scale"].float(),
        )
