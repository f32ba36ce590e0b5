"""The warp stage without LivePortrait (`warp.model: still`): the actor held still.

This is not animation and does not pretend to be: every frame is the actor
image, resized to the video size, and the pipeline marks the result with
`WARP_MODE` so that downstream code and viewers can tell. Operators choose it
to save LivePortrait's memory and time.
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF

from generation.models.cancel import cancel_point
from generation.utils.pixels import to_pixels

WARP_MODE = "still"


class StillWarp:
    """Writes the actor image into the first `num_frames` frames of the video buffer."""

    mode = WARP_MODE

    def render(self, actor: torch.Tensor, video: torch.Tensor, num_frames: int) -> torch.Tensor:
        """`actor`: (3, h, w) floats in [0, 1]; `video`: (F, 3, H, W) buffer. Returns the written frames."""
        check_num_frames(video, num_frames)
        cancel_point()
        frame = actor.to(video.device, torch.float32)
        if frame.shape[-2:] != video.shape[-2:]:
            frame = TF.resize(frame, list(video.shape[-2:]), antialias=True)
        frames = video[:num_frames]
        frames.copy_(to_pixels(frame, video.dtype).expand_as(frames))
        return frames


def check_num_frames(video: torch.Tensor, num_frames: int) -> None:
    """Every warp stage writes frames 0..num_frames-1 of the buffer: refuse counts it cannot hold."""
    if not 1 <= num_frames <= video.shape[0]:
        raise ValueError(f"num_frames must be in 1..{video.shape[0]}, got {num_frames}")
