"""Model loaders of the Vortex engine: each reads a local directory in its upstream layout."""

from generation.models.clip import ClipEnsemble, ClipModel, VerificationResult, load_clip
from generation.models.flux import FluxActor, load_flux_schnell
from generation.models.warp import StillWarp

__all__ = [
    "ClipEnsemble",
    "ClipModel",
    "FluxActor",
    "StillWarp",
    "VerificationResult",
    "load_clip",
    "load_flux_schnell",
]
