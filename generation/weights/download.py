"""`icn-node weights download`: fetch real weights for operators who have internet.

Files go through the Hugging Face cache (resumable, shared with other tools),
then are linked, or copied across file systems, into `DEST/<model>/` in the
layout the loaders check. Flux-Schnell is a gated repository: accept its licence
on the hub and pass a token (or set HF_TOKEN). Only the diffusers folders are
fetched, not the 23 GB single-file checkpoint beside them.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from generation.errors import WeightsError
from generation.weights.layout import LAYOUTS, ModelLayout, check_weights_dir


def download_weights(
    dest: str | Path,
    models: Iterable[str] | None = None,
    *,
    cache_dir: str | Path | None = None,
    token: str | None = None,
) -> dict[str, Path]:
    """Download `models` (default: all) into `dest`; return each model's checked directory."""
    from huggingface_hub import snapshot_download

    dest = Path(dest).expanduser()
    names = list(models) if models is not None else list(LAYOUTS)
    unknown = [n for n in names if n not in LAYOUTS]
    if unknown:
        raise WeightsError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(LAYOUTS)}")
    dest.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    for name in names:
        layout = LAYOUTS[name]
        snapshot = Path(
            snapshot_download(
                layout.repo_id,
                allow_patterns=list(layout.allow_patterns),
                cache_dir=str(cache_dir) if cache_dir else None,
                token=token,
            )
        )
        done[name] = install_snapshot(layout, snapshot, dest / layout.name)
    return done


def install_snapshot(layout: ModelLayout, snapshot: Path, target: Path) -> Path:
    """Place the files of `snapshot` that `layout` wants into `target`, atomically, and check them.

    An existing complete `target` is replaced only once the new one is complete.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{layout.name}-", dir=target.parent))
    try:
        for src in sorted(snapshot.rglob("*")):
            rel = src.relative_to(snapshot).as_posix()
            if not src.is_file() or not any(fnmatch.fnmatch(rel, pat) for pat in layout.allow_patterns):
                continue
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            real = src.resolve()  # the cache keeps blobs behind symlinks
            try:
                os.link(real, out)
            except OSError:
                shutil.copy2(real, out)
        check_weights_dir(layout, tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
