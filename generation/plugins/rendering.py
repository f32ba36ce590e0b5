"""Turning renderer output (PNG images, base64) into the pipeline's buffers.

The renderer contract: an actor renderer returns ``{"image_png_base64": str}``;
a warp renderer returns ``{"frames_png_base64": [str, ...]}``, repeated in order
to fill the slot's frames. Images of another size are resized to the buffer's.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from generation.plugins.errors import PluginError

MAX_PNG_BYTES = 16 * 1024 * 1024


def _decode(data: str, height: int, width: int) -> torch.Tensor:
    """A (3, H, W) uint8 tensor from a base64 PNG."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise PluginError("renderer output is not valid base64") from None
    if len(raw) > MAX_PNG_BYTES:
        raise PluginError(f"renderer image larger than {MAX_PNG_BYTES} bytes")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.format != "PNG":
                raise PluginError(f"renderer image is {im.format}, not PNG")
            rgb = im.convert("RGB")
            if rgb.size != (width, height):
                rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
            array = np.asarray(rgb, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise PluginError(f"renderer image cannot be decoded: {exc}") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def _field(output: dict, key: str, kind: type) -> object:
    value = output.get(key) if isinstance(output, dict) else None
    if not isinstance(value, kind):
        raise PluginError(f"renderer output has no {key} ({kind.__name__})")
    return value


def decode_png_into(output: dict, actor: torch.Tensor) -> torch.Tensor:
    """Write an actor renderer's PNG into the (3, H, W) float actor buffer, as values in [0, 1]."""
    image = _decode(_field(output, "image_png_base64", str), actor.shape[1], actor.shape[2])
    actor.copy_(image.to(actor.device, torch.float32) / 255.0)
    return actor


def decode_png_frames_into(output: dict, video: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Fill the first `num_frames` of the (F, 3, H, W) uint8 video buffer with a warp renderer's PNGs, in order."""
    frames = _field(output, "frames_png_base64", list)
    if not frames or not all(isinstance(f, str) for f in frames):
        raise PluginError("renderer output frames_png_base64 must be a non-empty list of strings")
    decoded = [_decode(f, video.shape[2], video.shape[3]) for f in frames]
    for i in range(num_frames):
        video[i].copy_(decoded[i % len(decoded)].to(video.device))
    return video[:num_frames]
