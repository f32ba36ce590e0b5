"""The `tiny` model source: seeded toy-size weights written in the upstream layouts.

Rather than a second code path, the tiny source *materialises a weights
directory*: each model is built at toy size under `torch.manual_seed(seed)` and
saved exactly as its upstream repository lays it out. The loaders then read it
with the same `from_pretrained` code they use for real weights. Every node with
the same seed and library versions builds identical weights; the directory is
keyed by both, and written atomically so concurrent nodes can share a cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from generation.weights.layout import CLIP_B, CLIP_L, FLUX_SCHNELL, KOKORO, LIVEPORTRAIT, ModelLayout

logger = logging.getLogger(__name__)

# Bump when a tiny architecture changes, so stale caches are not reused.
TINY_SPEC_VERSION = 1
_VERSIONED = ("torch", "diffusers", "transformers", "open_clip_torch", "tokenizers")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "icn-node" / "tiny-weights"


def fingerprint(seed: int) -> str:
    versions = ",".join(f"{name}={metadata.version(name)}" for name in _VERSIONED)
    text = f"spec={TINY_SPEC_VERSION};seed={seed};{versions}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _builders() -> dict[str, Callable[[Path, int], None]]:
    from generation.liveportrait.tiny import build_tiny_liveportrait
    from generation.models.tiny.clip import build_tiny_clip_b, build_tiny_clip_l
    from generation.models.tiny.flux import build_tiny_flux
    from generation.speech.kokoro_torch import build_tiny_kokoro

    return {
        FLUX_SCHNELL.name: build_tiny_flux,
        KOKORO.name: build_tiny_kokoro,
        CLIP_B.name: build_tiny_clip_b,
        CLIP_L.name: build_tiny_clip_l,
        LIVEPORTRAIT.name: build_tiny_liveportrait,
    }


def materialise(layout: ModelLayout, seed: int, cache_dir: Path | None = None) -> Path:
    """Return the directory holding `layout`'s tiny weights for `seed`, building it if absent."""
    root = (cache_dir or default_cache_dir()) / f"seed{seed}-{fingerprint(seed)}"
    dest = root / layout.name
    if dest.is_dir():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    build = _builders()[layout.name]
    tmp = Path(tempfile.mkdtemp(prefix=f".{layout.name}-", dir=root))
    try:
        build(tmp, seed)
        try:
            os.rename(tmp, dest)  # atomic; fails if another process got there first
        except OSError:
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("built tiny %s weights in %s", layout.name, dest)
    return dest
