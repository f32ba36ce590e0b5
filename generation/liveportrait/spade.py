"""G, the SPADE decoder: warped features to a 512x512 frame, the features also its own segmentation map.

The released weights carry spectral normalisation in its training form
(`weight_orig`, `weight_u`, `weight_v`); in eval it is a constant division, so
the checkpoint loader folds it into a plain `weight` once and these modules
are ordinary convolutions.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from generation.liveportrait.config import LivePortraitConfig

# The convolutions that upstream wraps in spectral norm, by their last key component.
SPECTRAL_CONVS = ("conv_0", "conv_1", "conv_s")


class Spade(nn.Module):
    def __init__(self, channels: int, label_channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        if seg.shape[-2:] != x.shape[-2:]:
            seg = F.interpolate(seg, size=x.shape[-2:], mode="nearest")
        h = self.mlp_shared(seg)
        return torch.addcmul(self.mlp_beta(h), normalized, 1 + self.mlp_gamma(h))


class SpadeResBlock(nn.Module):
    def __init__(self, fin: int, fout: int, label_channels: int, hidden: int) -> None:
        super().__init__()
        middle = min(fin, fout)
        self.conv_0 = nn.Conv2d(fin, middle, 3, padding=1)
        self.conv_1 = nn.Conv2d(middle, fout, 3, padding=1)
        self.norm_0 = Spade(fin, label_channels, hidden)
        self.norm_1 = Spade(middle, label_channels, hidden)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, 1, bias=False)
            self.norm_s = Spade(fin, label_channels, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx


class SpadeDecoder(nn.Module):
    MIDDLE_BLOCKS = 6

    def __init__(self, cfg: LivePortraitConfig) -> None:
        super().__init__()
        ic, oc, hidden = cfg.warp_channels, cfg.generator_out_channels, cfg.spade_hidden
        self.fc = nn.Conv2d(ic, 2 * ic, 3, padding=1)
        for i in range(self.MIDDLE_BLOCKS):
            self.add_module(f"G_middle_{i}", SpadeResBlock(2 * ic, 2 * ic, ic, hidden))
        self.up_0 = SpadeResBlock(2 * ic, ic, ic, hidden)
        self.up_1 = SpadeResBlock(ic, oc, ic, hidden)
        self.conv_img = nn.Sequential(nn.Conv2d(oc, 3 * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, ic, H, W) -> (B, 3, 8H, 8W) RGB in [0, 1]."""
        seg = feature
        x = self.fc(feature)
        for i in range(self.MIDDLE_BLOCKS):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))
