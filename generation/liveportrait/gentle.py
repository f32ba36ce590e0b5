"""The fallback when the actor image has no face: the whole frame drifts slowly (zoom and pan).

A landscape cannot be lip-synced, and a still frame for 45 s reads as a
broken stream; a slow push-in with a little sway is what an editor would do
with a still. Deterministic: the drift's direction comes from the slot's seed.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from generation.utils.pixels import to_pixels

ZOOM_END = 1.08  # the crop at the last frame is 1/1.08 of the image
SWAY = 0.015  # of the frame width, peak


def drift_frames(
    actor: torch.Tensor, video: torch.Tensor, start: int, stop: int, total: int, seed: int
) -> None:
    """Write frames [start, stop) of a `total`-frame drift of `actor` (3, h, w) into `video` (F, 3, H, W)."""
    n = stop - start
    if n <= 0:
        return
    device = actor.device  # the buffer may be pinned host memory: compute beside the actor, then copy
    angle = (seed % 360) * math.pi / 180.0
    t = (torch.arange(start, stop, device=device, dtype=torch.float32) + 0.5) / max(total, 1)
    zoom = 1.0 + (ZOOM_END - 1.0) * t
    dx = 0.5 * (1 - 1 / zoom) * math.cos(angle) + SWAY * torch.sin(2 * math.pi * t)
    dy = 0.5 * (1 - 1 / zoom) * math.sin(angle)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = 1 / zoom
    theta[:, 1, 1] = 1 / zoom
    theta[:, 0, 2] = dx
    theta[:, 1, 2] = dy
    grid = F.affine_grid(theta, [n, 3, video.shape[-2], video.shape[-1]], align_corners=False)
    src = actor.to(device, torch.float32).unsqueeze(0).expand(n, -1, -1, -1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    video[start:stop].copy_(to_pixels(out, video.dtype))
