"""LivePortrait: the architecture against the release's shapes, the checkpoint loader, the speech-driven motion."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from generation.errors import ConfigError, WeightsError
from generation.liveportrait.animator import LivePortraitWarp
from generation.liveportrait.checkpoint import fold_spectral_norm, unfold_spectral_norm
from generation.liveportrait.config import CONFIG_FILE, FULL, TINY
from generation.liveportrait.driving import PRESETS, drive, frame_span, viseme
from generation.liveportrait.face import FaceCheck
from generation.liveportrait.keypoints import LIP_KEYPOINTS, rotation, transform
from generation.liveportrait.model import LivePortrait, load_liveportrait
from generation.models.tiny import materialise
from generation.speech.kokoro_base import PhonemeTiming
from generation.weights.layout import LIVEPORTRAIT, LIVEPORTRAIT_FILES

SR, FPS = 24000, 24


@pytest.fixture(scope="module")
def tiny_dir(tiny_cache: Path) -> Path:
    return materialise(LIVEPORTRAIT, 0, tiny_cache)


@pytest.fixture(scope="module")
def tiny_model(tiny_dir: Path) -> LivePortrait:
    return load_liveportrait(tiny_dir, "cpu", "fp32")


def copy_dir(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def speech(*spans: tuple[str, float, float]) -> list[PhonemeTiming]:
    return [PhonemeTiming(p, round(a * SR), round(b * SR)) for p, a, b in spans]


# -- architecture ---------------------------------------------------------------------------------------
def test_full_size_parameter_counts_are_the_releases() -> None:
    model = LivePortrait(FULL, torch.device("cpu"), torch.float32)
    assert model.parameter_count() == {
        "appearance_feature_extractor": 836_224,
        "motion_extractor": 28_118_728,
        "warping_module": 45_529_829,
        "spade_generator": 55_365_388,
        "stitching_retargeting_module": 45_249 + 37_311 + 144_703,
    }
    g = model.generator.state_dict()
    assert g["up_0.conv_s.weight"].shape == (256, 512, 1, 1) and "up_0.conv_s.bias" not in g
    assert model.warping.state_dict()["dense_motion_network.occlusion.weight"].shape == (1, 2272, 7, 7)
    assert model.motion.state_dict()["detector.stages.2.8.grn.gamma"].shape == (1, 1, 1, 1536)


def test_tiny_shapes_follow_the_dataflow(tiny_model: LivePortrait) -> None:
    s = TINY.input_size
    source = tiny_model.prepare_source(torch.rand(3, s, s))
    assert source.feature.shape == (1, TINY.reshape_channel, TINY.reshape_depth, s // 4, s // 4)
    assert source.kp_source.shape == (1, 21, 3) and source.kp_source.dtype == torch.float32
    assert -97.5 <= float(source.motion.yaw) <= 97.5
    frames = tiny_model.render(source, source.kp_source.expand(3, -1, -1))
    assert frames.shape == (3, 3, 2 * s, 2 * s) and frames.min() >= 0 and frames.max() <= 1


def test_rotation_matches_the_papers_convention() -> None:
    zero = torch.zeros(1)
    assert torch.allclose(rotation(zero, zero, zero), torch.eye(3).unsqueeze(0))
    r = rotation(zero, zero, torch.tensor([90.0]))[0]  # roll 90: Rz, stored transposed, row vectors
    assert torch.allclose(torch.tensor([1.0, 0, 0]) @ r, torch.tensor([0.0, 1, 0]), atol=1e-6)  # = Rz x
    assert torch.allclose(r, torch.tensor([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]]), atol=1e-6)
    kp = torch.randn(1, 21, 3)
    out = transform(
        kp,
        torch.eye(3).unsqueeze(0),
        torch.zeros(1, 21, 3),
        torch.tensor([[2.0]]),
        torch.tensor([[1.0, 2, 3]]),
    )
    assert torch.allclose(out, 2 * kp + torch.tensor([1.0, 2, 0]))  # tz is dropped


def test_spectral_norm_folds_to_unit_largest_singular_value() -> None:
    g = torch.Generator().manual_seed(0)
    state = {
        "up_0.conv_0.weight": torch.randn(8, 4, 3, 3),
        "up_0.conv_0.bias": torch.randn(8),
        "fc.weight": torch.ones(2),
    }
    stored = unfold_spectral_norm(state, g)
    assert {"up_0.conv_0.weight_orig", "up_0.conv_0.weight_u", "up_0.conv_0.weight_v"} <= set(stored)
    assert "up_0.conv_0.weight" not in stored and torch.equal(stored["fc.weight"], state["fc.weight"])
    folded = fold_spectral_norm(stored, Path("x.pth"))
    w = folded["up_0.conv_0.weight"]
    assert w.shape == (8, 4, 3, 3)
    assert torch.linalg.matrix_norm(w.reshape(8, -1), ord=2) == pytest.approx(1.0, rel=1e-4)


# -- the loader -----------------------------------------------------------------------------------------
def test_tiny_weights_are_written_in_the_release_layout(tiny_dir: Path) -> None:
    for rel in LIVEPORTRAIT_FILES.values():
        assert (tiny_dir / rel).is_file()
    stitching = torch.load(tiny_dir / LIVEPORTRAIT_FILES["stitching_retargeting_module"], weights_only=True)
    assert set(stitching) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}
    assert "module.mlp.0.weight" in stitching["retarget_eye"]
    spade = torch.load(tiny_dir / LIVEPORTRAIT_FILES["spade_generator"], weights_only=True)
    assert "G_middle_0.conv_0.weight_orig" in spade and "G_middle_0.conv_0.weight" not in spade


def test_same_seed_same_model(tiny_dir: Path, tmp_path: Path, tiny_model: LivePortrait) -> None:
    again = load_liveportrait(materialise(LIVEPORTRAIT, 0, tmp_path), "cpu", "fp32")
    other = load_liveportrait(materialise(LIVEPORTRAIT, 1, tmp_path), "cpu", "fp32")
    a = tiny_model.generator.state_dict()
    assert all(torch.equal(a[k], v) for k, v in again.generator.state_dict().items())
    assert not all(torch.equal(a[k], v) for k, v in other.generator.state_dict().items())


def test_missing_file_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    root = copy_dir(tiny_dir, tmp_path / "lp")
    (root / LIVEPORTRAIT_FILES["warping_module"]).unlink()
    with pytest.raises(WeightsError, match="warping_module.pth"):
        load_liveportrait(root, "cpu", "fp32")


@pytest.mark.parametrize(
    ("part", "edit", "message"),
    [
        ("warping_module", lambda s: s.pop("third.conv.weight"), r"missing tensor third\.conv\.weight"),
        (
            "motion_extractor",
            lambda s: s.update({"detector.fc_t.weight": torch.zeros(4, 16)}),
            r"detector\.fc_t\.weight has shape \(4, 16\)",
        ),
        (
            "appearance_feature_extractor",
            lambda s: s.update({"extra.weight": torch.zeros(1)}),
            r"unexpected tensor\(s\) extra\.weight",
        ),
        ("spade_generator", lambda s: s.pop("up_1.conv_1.weight_u"), r"up_1\.conv_1\.weight_orig has no"),
        ("stitching_retargeting_module", lambda s: s.pop("retarget_mouth"), r"no 'retarget_mouth' sub-dict"),
    ],
)
def test_a_mismatched_checkpoint_names_the_tensor(
    tiny_dir: Path, tmp_path: Path, part: str, edit, message: str
) -> None:
    root = copy_dir(tiny_dir, tmp_path / "lp")
    path = root / LIVEPORTRAIT_FILES[part]
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=message):
        load_liveportrait(root, "cpu", "fp32")


def test_unreadable_checkpoint_and_config_are_named(tiny_dir: Path, tmp_path: Path) -> None:
    root = copy_dir(tiny_dir, tmp_path / "lp")
    (root / LIVEPORTRAIT_FILES["spade_generator"]).write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="cannot read .*spade_generator.pth"):
        load_liveportrait(root, "cpu", "fp32")
    (root / CONFIG_FILE).write_text('{"input_size": 32, "wings": 2}')
    with pytest.raises(WeightsError, match="unknown fields"):
        load_liveportrait(root, "cpu", "fp32")


def test_released_checkpoints_need_the_full_config(tiny_dir: Path, tmp_path: Path) -> None:
    """The release ships no config file: full sizes are assumed, and tiny tensors do not fit them."""
    root = copy_dir(tiny_dir, tmp_path / "lp")
    (root / CONFIG_FILE).unlink()
    with pytest.raises(WeightsError, match="has shape"):
        load_liveportrait(root, "cpu", "fp32")


def test_half_precision_is_refused_on_the_cpu(tiny_dir: Path) -> None:
    with pytest.raises(ConfigError, match="fp32"):
        load_liveportrait(tiny_dir, "cpu", "fp16")


# -- motion from speech ---------------------------------------------------------------------------------
def test_visemes() -> None:
    assert viseme("a") > viseme("i") and viseme("m") == (0.0, 0.0)
    assert viseme("u")[1] > 0.5 and viseme("ˈ") == (0.0, 0.0)


def test_lips_move_within_one_frame_of_the_phonemes() -> None:
    """The lip-sync rule: the mouth is half open on the frame a vowel starts (+-1) and half closed when it ends."""
    spans = [("a", 0.5, 0.9), ("m", 0.9, 1.3), ("ɑ", 1.3, 1.55), ("p", 1.55, 2.0), ("æ", 2.2125, 2.6)]
    track = drive(speech(*spans), None, sample_rate=SR, fps=FPS, num_frames=72, seed=0)
    lips = track.lip_open.numpy()
    for phoneme, start, end in spans:
        if viseme(phoneme)[0] < 0.5:
            continue
        first, last = round(start * FPS), round(end * FPS) - 1
        peak = lips[first + 2 : last - 1].max()
        onset = next(f for f in range(len(lips)) if f >= first - 3 and lips[f] >= peak / 2)
        offset = next(f for f in range(onset, len(lips)) if lips[f] < peak / 2)
        assert abs(onset - first) <= 1, (phoneme, onset, first)
        assert abs((offset - 1) - last) <= 1, (phoneme, offset, last)


def test_loudness_shapes_the_lips_without_delaying_them() -> None:
    phonemes = speech(("a", 0.0, 2.0))
    t = torch.arange(2 * SR) / SR
    audio = torch.sin(2 * torch.pi * 200 * t) * (t > 1.0)  # silent first second, loud second
    track = drive(phonemes, audio, sample_rate=SR, fps=FPS, num_frames=48, seed=0)
    quiet, loud = track.lip_open[:20].mean(), track.lip_open[28:].mean()
    assert loud > quiet * 1.5
    rise = int(torch.argmax((track.lip_open > (quiet + loud) / 2).int()))
    assert abs(rise - 24) <= 1


def test_blinks_and_head_motion_are_seeded_and_scaled_by_preset() -> None:
    args = dict(sample_rate=SR, fps=FPS, num_frames=FPS * 45)
    a = drive([], None, seed=7, **args)
    b = drive([], None, seed=7, **args)
    c = drive([], None, seed=8, **args)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("eye_open", "pitch", "yaw", "roll"))
    assert not torch.equal(a.yaw, c.yaw)
    closed = (a.eye_open < 0.2).numpy()
    blinks = int((closed[1:] & ~closed[:-1]).sum())
    assert 6 <= blinks <= 25  # every few seconds over 45 s
    assert a.yaw.abs().max() < 3 and (a.yaw[1:] - a.yaw[:-1]).abs().max() < 0.25  # small and smooth
    calm = drive([], None, seed=7, preset="calm", **args)
    manic = drive([], None, seed=7, preset="manic", **args)
    assert calm.yaw.abs().max() < a.yaw.abs().max() < manic.yaw.abs().max()
    assert set(PRESETS) == {"neutral", "excited", "manic", "calm"}
    with pytest.raises(ConfigError, match="unknown expression preset 'sleepy'"):
        drive([], None, preset="sleepy", **args)
    with pytest.raises(ValueError):
        drive([], None, sample_rate=SR, fps=FPS, num_frames=0)


def test_frame_span_uses_frame_centres() -> None:
    assert frame_span(0, SR, SR, FPS) == (0, 24)
    assert frame_span(SR // 48, SR // 48 * 3, SR, FPS) == (0, 1)  # [1/48 s, 3/48 s): frame 0's centre only
    assert frame_span(SR // 48 * 2, SR // 48 * 4, SR, FPS) == (1, 2)


def test_open_mouth_moves_the_lip_keypoints_and_closed_is_the_source(tiny_model: LivePortrait) -> None:
    warp = LivePortraitWarp(tiny_model, batch_size=4)
    source = tiny_model.prepare_source(torch.rand(3, TINY.input_size, TINY.input_size))
    spans = [("m", 0.0, 0.5), ("a", 0.5, 1.0)]
    track = drive(speech(*spans), None, sample_rate=SR, fps=FPS, num_frames=48, preset="calm", seed=0)
    still = type(track)(
        **{
            f: (getattr(track, f) * 0 if f in ("pitch", "yaw", "roll") else getattr(track, f))
            for f in track.__dataclass_fields__
        }
    )
    still = type(track)(**{**still.__dict__, "eye_open": torch.ones(48)})
    warp.driving = type(warp.driving)(stitching=False)
    kp = warp.driving_keypoints(source, still)
    lips = list(LIP_KEYPOINTS)
    moved = (kp[:, lips] - source.kp_source[:, lips]).norm(dim=-1).mean(dim=1)
    assert torch.allclose(
        kp[:5], source.kp_source.expand(5, -1, -1), atol=1e-6
    )  # closed, eyes open, no head motion
    assert moved[14:22].min() > 1e-4 and moved[30:].max() < 1e-5  # open while "a" sounds, closed after
    onset = int(torch.argmax((moved > moved.max() / 2).int()))
    assert abs(onset - 12) <= 1


# -- the stage ------------------------------------------------------------------------------------------
def test_renders_a_45_second_slot_into_the_buffer(tiny_model: LivePortrait) -> None:
    warp = LivePortraitWarp(tiny_model, batch_size=64)
    frames = 45 * FPS
    video = torch.zeros(frames, 3, 64, 64, dtype=torch.uint8)
    ptr = video.data_ptr()
    phonemes = speech(*[("a" if i % 2 else "m", i * 0.2, (i + 1) * 0.2) for i in range(200)])
    out = warp.render(torch.rand(3, 64, 64), video, frames, phonemes=phonemes, audio=None, seed=3)
    assert out.mode == "liveportrait" and out.frames.shape == (1080, 3, 64, 64)
    assert out.frames.data_ptr() == ptr  # written in place
    assert (video[1:].float() - video[:-1].float()).abs().amax() > 0


def test_deterministic_for_a_seed(tiny_model: LivePortrait) -> None:
    warp = LivePortraitWarp(tiny_model, batch_size=5)
    actor = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    phonemes = speech(("h", 0.1, 0.2), ("ɛ", 0.2, 0.5), ("l", 0.5, 0.6), ("oʊ", 0.6, 1.0))
    runs = []
    for seed in (1, 1, 2):
        video = torch.zeros(30, 3, 64, 64, dtype=torch.uint8)
        warp.render(actor, video, 30, phonemes=phonemes, seed=seed)
        runs.append(video)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_bad_frame_counts_are_refused(tiny_model: LivePortrait) -> None:
    warp = LivePortraitWarp(tiny_model, batch_size=4)
    video = torch.zeros(10, 3, 64, 64, dtype=torch.uint8)
    for n in (0, 11):
        with pytest.raises(ValueError, match="num_frames"):
            warp.render(torch.rand(3, 64, 64), video, n)


class _FixedClip:
    """A stand-in CLIP whose image embedding equals one chosen prompt's text embedding."""

    def __init__(self, favour: int) -> None:
        self.favour, self.texts = favour, []

    def embed_text(self, text: str) -> torch.Tensor:
        self.texts.append(text)
        return torch.nn.functional.one_hot(torch.tensor(len(self.texts) - 1), 16).float()

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor([self.favour]), 16).float()


def test_no_face_falls_back_to_a_gentle_drift_and_says_so(tiny_model: LivePortrait) -> None:
    landscape = FaceCheck(_FixedClip(favour=3), threshold=0.5)  # prompt 3: "a landscape photo"
    warp = LivePortraitWarp(tiny_model, batch_size=8, face_check=landscape)
    actor = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    video = torch.zeros(24, 3, 64, 64, dtype=torch.uint8)
    out = warp.render(actor, video, 24, phonemes=speech(("a", 0.0, 1.0)), seed=5)
    assert out.mode == "gentle" and out.face_probability < 0.01
    assert any("no face to animate" in n for n in out.notes)
    first = (actor * 255).round()
    assert (video[0].float() - first).abs().mean() < 20  # still the actor's picture, barely moved
    assert (video[-1].float() - video[0].float()).abs().mean() > 0.5  # but it drifts

    face = FaceCheck(_FixedClip(favour=0), threshold=0.5)
    warp.face_check = face
    out = warp.render(actor, video, 24, seed=5)
    assert out.mode == "liveportrait" and out.face_probability > 0.99


def test_the_still_mode_holds_the_actor_and_loads_no_liveportrait(tiny_cache: Path, recipe: dict) -> None:
    import anyio

    from generation.pipeline import VortexPipeline
    from tests.conftest import tiny_settings

    pipeline = VortexPipeline(settings=tiny_settings(tiny_cache, warp__model="still", speech__source="none"))
    assert "liveportrait" not in pipeline.registry
    result = anyio.run(pipeline.generate_slot, recipe, 7)
    assert result.success and result.warp_mode == "still"
    expected = (result.actor_image * 255).round().to(torch.uint8)
    assert all(torch.equal(frame, expected) for frame in result.video_frames)


def test_hold_frames_renders_every_nth_frame_and_holds_it(tmp_path: Path) -> None:
    """warp.hold_frames (quality for time, off by default): 4 renders 12 of 48 frames, each held for 4,
    and the held clip is the full-rate clip's every 4th frame repeated."""
    import anyio

    from generation.pipeline import VortexPipeline
    from tests.conftest import tiny_settings

    recipe = {
        "audio_track": {"script": "Welcome back, viewers.", "voice_id": "rick_c137"},
        "visual_track": {"prompt": "a talking head"},
    }
    full = VortexPipeline(settings=tiny_settings(tmp_path / "w", warp__face_threshold=0.0))
    held = VortexPipeline(
        settings=tiny_settings(tmp_path / "w", warp__face_threshold=0.0, warp__hold_frames=4)
    )
    rendered: list[int] = []
    render = held.warp.model.render
    held.warp.model.render = lambda source, kp: rendered.append(kp.shape[0]) or render(source, kp)  # type: ignore[method-assign]
    a = anyio.run(full.generate_slot, recipe, 3)
    b = anyio.run(held.generate_slot, recipe, 3)
    assert a.success and b.success and a.warp_mode == b.warp_mode == "liveportrait"
    assert sum(rendered) == 12 and b.video_frames.shape == a.video_frames.shape == (48, 3, 64, 64)
    for i in range(48):
        assert torch.equal(b.video_frames[i], b.video_frames[i - i % 4])
    # the same driving frames rendered in other batches: equal up to a pixel level of rounding
    assert (b.video_frames[::4].int() - a.video_frames[::4].int()).abs().max() <= 1


def test_cuda_graphs_need_a_cuda_device_and_the_cpu_renders_plainly(tiny_model: LivePortrait) -> None:
    """warp.cuda_graphs is for CUDA (generation.liveportrait.graphs; equality with the plain call is checked
    on the card by bench/slot_gpu.py --cuda-graphs): on the CPU the graph is refused and the warp ignores
    the setting instead of failing a slot."""
    from generation.liveportrait.graphs import GraphedRender

    size = tiny_model.cfg.input_size
    source = tiny_model.prepare_source(torch.rand(3, size, size))
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        GraphedRender(tiny_model, source, 2)
    warp = LivePortraitWarp(tiny_model, batch_size=2, cuda_graphs=True)
    assert not warp.cuda_graphs
    out = tiny_model.cfg.output_size
    video = torch.zeros(5, 3, out, out, dtype=torch.uint8)
    result = warp.render(torch.rand(3, out, out), video, 5, phonemes=speech(("a", 0.0, 0.2)))
    assert result.mode == "liveportrait" and result.frames.float().std() > 0
