"""F, the appearance feature extractor: the source image to a 3D feature volume.

Runs once per slot on the actor image; the volume it returns is what the
warping module deforms for every frame.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from generation.liveportrait.config import LivePortraitConfig


class ConvBnRelu2d(nn.Module):
    """Upstream's SameBlock2d (keys `conv`, `norm`)."""

    def __init__(self, cin: int, cout: int, slope: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm2d(cout)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.leaky_relu(x, self.slope) if self.slope else F.relu(x)


class DownBlock2d(ConvBnRelu2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), 2)


class ResBlock3d(nn.Module):
    """Pre-activation residual block: BN, ReLU, conv, BN, ReLU, conv, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return x + out


class AppearanceFeatureExtractor(nn.Module):
    def __init__(self, cfg: LivePortraitConfig) -> None:
        super().__init__()
        width = cfg.app_block_expansion
        self.first = ConvBnRelu2d(3, width)
        blocks = []
        for i in range(cfg.num_down_blocks):
            cin = min(cfg.feature_channels, width * 2**i)
            cout = min(cfg.feature_channels, width * 2 ** (i + 1))
            blocks.append(DownBlock2d(cin, cout))
        self.down_blocks = nn.ModuleList(blocks)
        self.second = nn.Conv2d(cout, cfg.feature_channels, 1)
        self.resblocks_3d = nn.Sequential()
        for i in range(cfg.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(cfg.reshape_channel))
        self.reshape = (cfg.reshape_channel, cfg.reshape_depth)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [0, 1] -> (B, C, D, S/4, S/4)."""
        x = self.first(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        b, _, h, w = x.shape
        return self.resblocks_3d(x.view(b, *self.reshape, h, w))
