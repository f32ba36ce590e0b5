"""W, the warping module: a 3D flow from the driving keypoints back to the source, applied to F's volume.

Sampling grids and keypoint maps are computed in float32 whatever the
network's precision: half precision cannot hold grid coordinates finely enough
(a 64-cell axis needs steps of 1/32 near 1.0, at fp16's resolution), and the
convolutions around them are where the time goes anyway.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from generation.liveportrait.appearance import ConvBnRelu2d
from generation.liveportrait.config import LivePortraitConfig

KP_VARIANCE = 0.01


class Block3d(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm3d(cout)


class DownBlock3d(Block3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), (1, 2, 2))


class UpBlock3d(Block3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class Encoder(nn.Module):
    def __init__(self, cin: int, width: int, max_features: int, blocks: int) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(
                cin if i == 0 else min(max_features, width * 2**i), min(max_features, width * 2 ** (i + 1))
            )
            for i in range(blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    def __init__(self, cin: int, width: int, max_features: int, blocks: int) -> None:
        super().__init__()
        ups = []
        for i in reversed(range(blocks)):
            factor = 1 if i == blocks - 1 else 2
            ups.append(
                UpBlock3d(factor * min(max_features, width * 2 ** (i + 1)), min(max_features, width * 2**i))
            )
        self.up_blocks = nn.ModuleList(ups)
        self.out_channels = width + cin
        self.conv = nn.Conv3d(self.out_channels, self.out_channels, 3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_channels)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    def __init__(self, cin: int, width: int, max_features: int, blocks: int) -> None:
        super().__init__()
        self.encoder = Encoder(cin, width, max_features, blocks)
        self.decoder = Decoder(cin, width, max_features, blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def identity_grid(depth: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(D, H, W, 3) coordinates in [-1, 1], ordered (x along W, y along H, z along D)."""
    axes = [
        torch.linspace(-1.0, 1.0, n, device=device) if n > 1 else torch.zeros(1, device=device)
        for n in (depth, height, width)
    ]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


class DenseMotionNetwork(nn.Module):
    def __init__(self, cfg: LivePortraitConfig) -> None:
        super().__init__()
        k1 = cfg.num_kp + 1
        self.compress = nn.Conv3d(cfg.reshape_channel, cfg.dmn_compress, 1)
        self.norm = nn.BatchNorm3d(cfg.dmn_compress)
        cin = k1 * (cfg.dmn_compress + 1)
        self.hourglass = Hourglass(cin, cfg.dmn_block_expansion, cfg.dmn_max_features, cfg.dmn_num_blocks)
        out = self.hourglass.decoder.out_channels
        self.mask = nn.Conv3d(out, k1, 7, padding=3)
        self.occlusion = nn.Conv2d(out * cfg.reshape_depth, 1, 7, padding=3)

    def forward(
        self, feature: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the deformation (B, D, H, W, 3) in float32 and the occlusion map (B, 1, H, W)."""
        b, _, d, h, w = feature.shape
        dtype = feature.dtype
        compressed = F.relu(self.norm(self.compress(feature))).float()
        grid = identity_grid(d, h, w, feature.device)  # (D, H, W, 3)
        xs = kp_source.float().view(b, -1, 1, 1, 1, 3)
        xd = kp_driving.float().view(b, -1, 1, 1, 1, 3)
        k = xs.shape[1]
        motions = torch.cat([grid.expand(b, 1, d, h, w, 3), grid - xd + xs], dim=1)  # (B, K+1, D, H, W, 3)

        c = compressed.shape[1]
        sampled = F.grid_sample(
            compressed.unsqueeze(1).expand(b, k + 1, c, d, h, w).reshape(b * (k + 1), c, d, h, w),
            motions.view(b * (k + 1), d, h, w, 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        ).view(b, k + 1, c, d, h, w)
        heat = torch.exp(-0.5 * ((grid - xd) ** 2).sum(-1) / KP_VARIANCE) - torch.exp(
            -0.5 * ((grid - xs) ** 2).sum(-1) / KP_VARIANCE
        )
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2)
        net_in = torch.cat([heat, sampled], dim=2).view(b, -1, d, h, w).to(dtype)

        prediction = self.hourglass(net_in)
        mask = torch.softmax(self.mask(prediction).float(), dim=1)  # (B, K+1, D, H, W)
        deformation = torch.einsum("bkdhw,bkdhwc->bdhwc", mask, motions)
        occlusion = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return deformation, occlusion


class WarpingNetwork(nn.Module):
    def __init__(self, cfg: LivePortraitConfig) -> None:
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(cfg)
        self.third = ConvBnRelu2d(cfg.feature_channels, cfg.warp_channels, slope=0.01)
        self.fourth = nn.Conv2d(cfg.warp_channels, cfg.warp_channels, 1)

    def forward(
        self, feature: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> torch.Tensor:
        """F's volume (B, C, D, H, W) and keypoints (B, K, 3) -> warped 2D features (B, warp_channels, H, W)."""
        deformation, occlusion = self.dense_motion_network(feature, kp_source, kp_driving)
        warped = F.grid_sample(
            feature.float(), deformation, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.to(feature.dtype).view(b, c * d, h, w)))
        return out * occlusion.to(out.dtype)
