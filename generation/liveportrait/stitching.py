"""S, R_eyes and R_lip: three small MLPs on flattened keypoints.

Stitching keeps the animated face attached to the unmoving shoulders; the
two retargeting MLPs turn a scalar eye or lip openness into keypoint deltas,
which is how the speech reaches the face here.
"""

from __future__ import annotations

import torch
from torch import nn

from generation.liveportrait.config import LivePortraitConfig

# The released file's sub-dicts, by the module they load into.
SUBMODULES = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}


class Mlp(nn.Module):
    def __init__(self, cin: int, hidden: tuple[int, ...], cout: int) -> None:
        super().__init__()
        widths = (cin, *hidden, cout)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class StitchingRetargeting(nn.Module):
    def __init__(self, cfg: LivePortraitConfig) -> None:
        super().__init__()
        k3 = 3 * cfg.num_kp
        self.stitching = Mlp(2 * k3, cfg.stitching_hidden, k3 + 2)
        self.lip = Mlp(k3 + 2, cfg.lip_hidden, k3)
        self.eye = Mlp(k3 + 3, cfg.eye_hidden, k3)

    def stitch(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """x_d plus the stitching MLP's keypoint delta and its shared (tx, ty) shift."""
        b, k, _ = kp_source.shape
        delta = self.stitching(torch.cat([kp_source.reshape(b, -1), kp_driving.reshape(b, -1)], dim=1))
        out = kp_driving + delta[:, : 3 * k].view(b, k, 3)
        shift = torch.zeros_like(out)
        shift[..., :2] = delta[:, 3 * k : 3 * k + 2].view(b, 1, 2)
        return out + shift

    def lip_delta(self, kp_source: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        """ratios: (B, 2) = (source lip ratio, driving lip ratio) -> (B, K, 3)."""
        b, k, _ = kp_source.shape
        return self.lip(torch.cat([kp_source.reshape(b, -1), ratios], dim=1)).view(b, k, 3)

    def eye_delta(self, kp_source: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        """ratios: (B, 3) = (source left eye, source right eye, driving eye) -> (B, K, 3)."""
        b, k, _ = kp_source.shape
        return self.eye(torch.cat([kp_source.reshape(b, -1), ratios], dim=1)).view(b, k, 3)
