import os
import shutil
from pathlib import Path

import pytest

from generation.errors import WeightsError
from generation.models.tiny import fingerprint, materialise
from generation.weights.download import download_weights, install_snapshot
from generation.weights.layout import CLIP_B, FLUX_SCHNELL, LAYOUTS, check_weights_dir


def test_tiny_weights_follow_the_upstream_layouts(tiny_cache: Path) -> None:
    for layout in LAYOUTS.values():
        path = materialise(layout, 0, tiny_cache)
        assert check_weights_dir(layout, path) == path
    assert (materialise(FLUX_SCHNELL, 0, tiny_cache) / "transformer" / "config.json").is_file()


def test_tiny_weights_are_identical_across_builds(tiny_cache: Path, tmp_path: Path) -> None:
    """Two nodes building from the same seed get byte-identical weights."""
    first = materialise(CLIP_B, 0, tiny_cache) / "open_clip_model.safetensors"
    second = materialise(CLIP_B, 0, tmp_path) / "open_clip_model.safetensors"
    assert first != second
    assert first.read_bytes() == second.read_bytes()
    other_seed = materialise(CLIP_B, 1, tmp_path) / "open_clip_model.safetensors"
    assert other_seed.read_bytes() != first.read_bytes()


def test_cache_key_depends_on_seed() -> None:
    assert fingerprint(0) != fingerprint(1)
    assert fingerprint(0) == fingerprint(0)


@pytest.fixture
def flux_copy(tiny_cache: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "flux-schnell"
    shutil.copytree(materialise(FLUX_SCHNELL, 0, tiny_cache), dst)
    return dst


def test_missing_file_is_named(flux_copy: Path) -> None:
    (flux_copy / "vae" / "config.json").unlink()
    with pytest.raises(WeightsError, match=r"flux-schnell: missing vae/config.json in"):
        check_weights_dir(FLUX_SCHNELL, flux_copy)


def test_missing_weights_name_both_accepted_forms(flux_copy: Path) -> None:
    (flux_copy / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(
        WeightsError,
        match=r"missing transformer/diffusion_pytorch_model.safetensors or "
        r"transformer/diffusion_pytorch_model.safetensors.index.json",
    ):
        check_weights_dir(FLUX_SCHNELL, flux_copy)


def test_malformed_json_is_named(flux_copy: Path) -> None:
    (flux_copy / "model_index.json").write_text("{ not json")
    with pytest.raises(WeightsError, match=r"malformed JSON in .*model_index.json"):
        check_weights_dir(FLUX_SCHNELL, flux_copy)


def test_empty_file_is_named(flux_copy: Path) -> None:
    (flux_copy / "tokenizer" / "merges.txt").write_text("")
    with pytest.raises(WeightsError, match=r"empty file .*tokenizer/merges.txt"):
        check_weights_dir(FLUX_SCHNELL, flux_copy)


def test_absent_directory(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"clip-vit-b-32: weights directory .* does not exist"):
        check_weights_dir(CLIP_B, tmp_path / "nowhere")


def _fake_hub_cache(root: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """A Hugging Face cache as `snapshot_download` leaves it: blobs behind symlinks, refs/main."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    sha = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / sha
    for i, (name, data) in enumerate(files.items()):
        blob = repo / "blobs" / f"blob{i}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(blob, link)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)


def test_download_through_a_local_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may leave this machine
    cache = tmp_path / "hub"
    _fake_hub_cache(
        cache,
        CLIP_B.repo_id,
        {
            "open_clip_config.json": b'{"model_cfg": {}}',
            "open_clip_model.safetensors": b"weights",
            "README.md": b"not wanted",
        },
    )
    done = download_weights(tmp_path / "weights", ["clip-vit-b-32"], cache_dir=cache)
    target = done["clip-vit-b-32"]
    assert target == tmp_path / "weights" / "clip-vit-b-32"
    assert sorted(p.name for p in target.iterdir()) == [
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    assert (target / "open_clip_model.safetensors").read_bytes() == b"weights"


def test_download_rejects_unknown_models(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"unknown model\(s\) sd-xl"):
        download_weights(tmp_path, ["sd-xl"])


def test_incomplete_snapshot_leaves_the_existing_install_alone(tmp_path: Path) -> None:
    target = tmp_path / "clip-vit-b-32"
    target.mkdir()
    (target / "open_clip_config.json").write_text("{}")
    (target / "open_clip_model.safetensors").write_bytes(b"old")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "open_clip_config.json").write_text("{}")  # checkpoint missing
    with pytest.raises(WeightsError, match="missing open_clip_model.safetensors"):
        install_snapshot(CLIP_B, snapshot, target)
    assert (target / "open_clip_model.safetensors").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip-vit-b-32", "snapshot"]
