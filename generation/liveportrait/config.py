"""LivePortrait's hyperparameters as data, full size and tiny.

The full values are those of upstream's `src/config/models.yaml`; the released
checkpoints only fit them. The tiny values keep every module, every layer and
the 21 keypoints, at widths a CPU builds and runs in seconds (64x64 frames
out of a 32x32 crop), so tests exercise the code path the GPU runs. A weights
directory may carry `icn_liveportrait.json` with these fields; the released
checkpoints have none and get `FULL`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from generation.errors import WeightsError

CONFIG_FILE = "icn_liveportrait.json"


@dataclass(frozen=True)
class LivePortraitConfig:
    input_size: int = 256  # the square crop F and M read; frames come out at twice this
    num_kp: int = 21
    num_bins: int = 66
    # F, the appearance feature extractor
    app_block_expansion: int = 64
    num_down_blocks: int = 2
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6
    # M, the motion extractor (ConvNeXt-V2)
    convnext_depths: tuple[int, ...] = (3, 3, 9, 3)
    convnext_dims: tuple[int, ...] = (96, 192, 384, 768)
    # W, the warping module and its dense-motion network
    warp_block_expansion: int = 64
    dmn_block_expansion: int = 32
    dmn_max_features: int = 1024
    dmn_num_blocks: int = 5
    dmn_compress: int = 4
    # G, the SPADE decoder
    spade_hidden: int = 128
    generator_out_channels: int = 64
    # S and the retargeting MLPs
    stitching_hidden: tuple[int, ...] = (128, 128, 64)
    lip_hidden: tuple[int, ...] = (128, 128, 64)
    eye_hidden: tuple[int, ...] = (256, 256, 128, 128, 64)

    @property
    def feature_channels(self) -> int:
        """Channels of F's 2D output before it is folded into (reshape_channel, reshape_depth)."""
        return self.reshape_channel * self.reshape_depth

    @property
    def feature_size(self) -> int:
        return self.input_size // 2**self.num_down_blocks

    @property
    def warp_channels(self) -> int:
        return self.warp_block_expansion * 2**self.num_down_blocks

    @property
    def output_size(self) -> int:
        return self.feature_size * 8  # two x2 upsamples and a x2 pixel shuffle

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def write(self, directory: Path) -> None:
        """Beside weights of other than the release's sizes (the tiny source), so `read` finds them."""
        (directory / CONFIG_FILE).write_text(self.to_json())

    @classmethod
    def read(cls, directory: Path) -> LivePortraitConfig:
        path = directory / CONFIG_FILE
        if not path.is_file():
            return FULL
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WeightsError(f"liveportrait: malformed {path}: {exc}") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            extra = sorted(set(data) - known) if isinstance(data, dict) else data
            raise WeightsError(f"liveportrait: {path} has unknown fields {extra}")
        try:
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
            config = cls(**values)
            if any(not isinstance(getattr(config, f.name), int | tuple) for f in fields(cls)):
                raise TypeError("every field is an integer or a list of integers")
        except TypeError as exc:
            raise WeightsError(f"liveportrait: {path}: {exc}") from None
        return config


FULL = LivePortraitConfig()

TINY = LivePortraitConfig(
    input_size=32,
    app_block_expansion=4,
    reshape_channel=4,
    reshape_depth=4,
    num_resblocks=2,
    convnext_depths=(1, 1, 1, 1),
    convnext_dims=(8, 8, 16, 16),
    warp_block_expansion=4,
    dmn_block_expansion=4,
    dmn_max_features=16,
    dmn_num_blocks=2,
    dmn_compress=2,
    spade_hidden=8,
    generator_out_channels=4,
    stitching_hidden=(16, 16),
    lip_hidden=(16, 16),
    eye_hidden=(16, 16),
)
