"""Frames in [0, 1] to the pixels a buffer holds: every writer of video frames goes through here."""

from __future__ import annotations

import torch


def to_pixels(frames: torch.Tensor, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """Clamp to [0, 1]; for uint8, scale to 0..255 and round (not truncate), else cast to `dtype`."""
    frames = frames.clamp(0, 1)
    if dtype == torch.uint8:
        return (frames * 255.0).round_().to(torch.uint8)
    return frames.to(dtype)
