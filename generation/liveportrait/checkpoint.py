"""Reading LivePortrait's released checkpoints into our modules, and writing that format (tiny source).

The release is five torch pickles of plain state dicts (see
`generation.weights.layout.LIVEPORTRAIT_FILES`). Their keys are our module
trees' keys, with three differences this file absorbs:

- the motion extractor's keys sit under `detector.`, as ours do;
- the SPADE generator's spectral-normalised convolutions store `weight_orig`,
  `weight_u`, `weight_v`; we fold them into `weight = weight_orig / sigma`,
  sigma = u^T mat(weight_orig) v, which is what eval mode computes each call;
- the stitching file holds three sub-dicts (`retarget_shoulder`,
  `retarget_mouth`, `retarget_eye`) whose keys may carry `module.`, stripped.

Every tensor is matched by name and shape before loading; the first missing,
unexpected or mis-shaped one is a `WeightsError` naming file and key.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from generation.errors import WeightsError
from generation.liveportrait.spade import SPECTRAL_CONVS
from generation.liveportrait.stitching import SUBMODULES
from generation.weights.layout import LIVEPORTRAIT, LIVEPORTRAIT_FILES, check_weights_dir

StateDict = dict[str, torch.Tensor]


def read_pickle(path: Path) -> Mapping:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise WeightsError(f"liveportrait: cannot read {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, Mapping):
        raise WeightsError(f"liveportrait: {path} holds a {type(data).__name__}, not a state dict")
    return data


def fold_spectral_norm(state: Mapping[str, torch.Tensor], path: Path) -> StateDict:
    """Replace each `<conv>.weight_orig/_u/_v` triple by the effective `<conv>.weight`."""
    out: StateDict = {}
    for key, value in state.items():
        if key.endswith(("weight_u", "weight_v")):
            continue
        if not key.endswith(".weight_orig"):
            out[key] = value
            continue
        stem = key[: -len(".weight_orig")]
        u, v = state.get(f"{stem}.weight_u"), state.get(f"{stem}.weight_v")
        if u is None or v is None:
            raise WeightsError(f"liveportrait: {path}: {key} has no {stem}.weight_u / weight_v beside it")
        w = value.double()
        mat = w.reshape(w.shape[0], -1)
        if u.shape != (mat.shape[0],) or v.shape != (mat.shape[1],):
            raise WeightsError(
                f"liveportrait: {path}: {stem}.weight_u/_v have shapes {tuple(u.shape)}/{tuple(v.shape)}, "
                f"expected ({mat.shape[0]},)/({mat.shape[1]},)"
            )
        sigma = torch.dot(u.double(), mat @ v.double())
        if not torch.isfinite(sigma) or sigma.abs() < 1e-12:
            raise WeightsError(
                f"liveportrait: {path}: {stem} has a degenerate spectral norm ({float(sigma)})"
            )
        out[f"{stem}.weight"] = (w / sigma).to(value.dtype)
    return out


def match_state(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load `state` into `module` strictly, naming the first tensor that does not fit."""
    expected = module.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise WeightsError(f"liveportrait: {path}: missing tensor {key} {tuple(ref.shape)}")
        got = state[key]
        if not isinstance(got, torch.Tensor):
            raise WeightsError(f"liveportrait: {path}: {key} is a {type(got).__name__}, not a tensor")
        if got.shape != ref.shape:
            raise WeightsError(
                f"liveportrait: {path}: tensor {key} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise WeightsError(f"liveportrait: {path}: unexpected tensor(s) {', '.join(extra[:5])}")
    module.load_state_dict(dict(state), strict=True)


def load_stitching(module: nn.Module, path: Path) -> None:
    data = read_pickle(path)
    for ours, theirs in SUBMODULES.items():
        sub = data.get(theirs)
        if not isinstance(sub, Mapping):
            raise WeightsError(
                f"liveportrait: {path}: no '{theirs}' sub-dict (has: {', '.join(map(str, data))})"
            )
        match_state(getattr(module, ours), {k.replace("module.", ""): v for k, v in sub.items()}, path)


def check_directory(root: Path) -> Path:
    return check_weights_dir(LIVEPORTRAIT, root)


def file_of(root: Path, part: str) -> Path:
    return root / LIVEPORTRAIT_FILES[part]


# -- writing the release's format (the tiny source) ------------------------------------------------------
def unfold_spectral_norm(state: Mapping[str, torch.Tensor], generator: torch.Generator) -> StateDict:
    """The inverse of `fold_spectral_norm` for the generator's spectral convolutions.

    u and v are the leading singular pair of a seeded weight_orig, as the power
    iteration of training would leave them, so sigma is its largest singular value.
    """
    out: StateDict = {}
    for key, value in state.items():
        stem, _, leaf = key.rpartition(".")
        if leaf != "weight" or stem.rpartition(".")[2] not in SPECTRAL_CONVS:
            out[key] = value
            continue
        orig = torch.randn(value.shape, generator=generator) * value.std().clamp_min(1e-3)
        u, s, vh = torch.linalg.svd(orig.reshape(orig.shape[0], -1).double(), full_matrices=False)
        out[f"{stem}.weight_orig"] = orig
        out[f"{stem}.weight_u"] = u[:, 0].float().contiguous()
        out[f"{stem}.weight_v"] = vh[0].float().contiguous()
    return out
