"""Shared fixtures: tiny engine settings with a private weights cache, and one pipeline per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from generation.config import GenerationSettings

DELETE = object()  # as a value for `set_path`: remove the key


def set_path(data: dict, path: str, value: Any, sep: str = ".") -> None:
    """Set (or, with DELETE, remove) the nested key `path` of `data` in place."""
    *parents, leaf = path.split(sep)
    node = data
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value


def tiny_settings(cache_dir: Path, **overrides: Any) -> GenerationSettings:
    """The packaged tiny profile with its weights cached under `cache_dir`, plus overrides (`a__b=value`)."""
    data = GenerationSettings.packaged("tiny").model_dump(mode="json")
    data["models"]["cache_dir"] = str(cache_dir)
    for dotted, value in overrides.items():
        set_path(data, dotted, value, sep="__")
    return GenerationSettings.from_mapping(data)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-weights")


@pytest.fixture(scope="session")
def pipeline(tiny_cache: Path):
    from generation.pipeline import VortexPipeline

    return VortexPipeline(settings=tiny_settings(tiny_cache))


@pytest.fixture
def recipe() -> dict:
    return {
        "audio_track": {"script": "Welcome, viewers!", "voice_id": "rick_c137"},
        "visual_track": {
            "prompt": "a mad scientist in a laboratory",
            "negative_prompt": "blurry, low quality",
        },
    }
