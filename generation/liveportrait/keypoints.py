"""The paper's keypoint transform (Eq. 2): x = s * (x_c R + delta) + t, in float32.

Keypoints are row vectors multiplied on the right; the stored rotation is
(Rz Ry Rx) transposed, and t moves only x and y, exactly as upstream, because
the released networks were trained against that convention.
"""

from __future__ import annotations

import math

import torch

# Keypoint indices that upstream's regional modes treat as the lips and the eyes.
LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)
EYE_KEYPOINTS = (11, 13, 15, 16, 18)


def rotation(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B,) angles in degrees -> (B, 3, 3) matrices R = (Rz Ry Rx)^T."""
    p, y, r = (a.float() * (math.pi / 180.0) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], -1).view(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], -1).view(-1, 3, 3)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], -1).view(-1, 3, 3)
    return (rz @ ry @ rx).transpose(1, 2)


def transform(
    kp: torch.Tensor, rot: torch.Tensor, exp: torch.Tensor, scale: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """kp, exp: (B, K, 3); rot: (B, 3, 3); scale: (B, 1); t: (B, 3) -> (B, K, 3)."""
    shift = t.float().clone()
    shift[:, 2] = 0.0
    return scale.float().view(-1, 1, 1) * (kp.float() @ rot + exp.float()) + shift.view(-1, 1, 3)
