"""The tiny LivePortrait: `TINY` widths, seeded weights, written in the release's files and layout.

The loader then reads it exactly as it reads the released checkpoints,
spectral-norm triples and the stitching file's sub-dicts included.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generation.liveportrait.checkpoint import unfold_spectral_norm
from generation.liveportrait.config import TINY
from generation.liveportrait.model import LivePortrait, randomise_norms
from generation.liveportrait.stitching import SUBMODULES
from generation.weights.layout import LIVEPORTRAIT_FILES


def build_tiny_liveportrait(dest: Path, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LivePortrait(TINY, torch.device("cpu"), torch.float32)
        randomise_norms(model)
        generator = torch.Generator().manual_seed(seed + 1)
        for part, net in model.networks.items():
            path = dest / LIVEPORTRAIT_FILES[part]
            path.parent.mkdir(parents=True, exist_ok=True)
            if part == "stitching_retargeting_module":
                state = {
                    theirs: {f"module.{k}": v for k, v in getattr(net, ours).state_dict().items()}
                    for ours, theirs in SUBMODULES.items()
                }
            elif part == "spade_generator":
                state = unfold_spectral_norm(net.state_dict(), generator)
            else:
                state = net.state_dict()
            torch.save(state, path)
    TINY.write(dest)
