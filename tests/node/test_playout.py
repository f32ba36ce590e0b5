"""HLS playout: remuxing without re-encoding, the playlist, and a real player reading a node's channel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import trio

from generation.media import encode_mp4
from node.playout import CARD_SEC, playlist, remux_to_ts, write_card
from tests.node.conftest import playing_node


def frames_of(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as c:
        video = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        audio = sum(f.samples for f in c.decode(audio=0)) if c.streams.audio else 0
    return video, audio


def test_a_slot_is_remuxed_into_mpeg_ts_packet_for_packet(tmp_path: Path) -> None:
    frames = torch.randint(
        0, 255, (48, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    audio = np.sin(np.linspace(0, 600, 48_000)).astype(np.float32) * 0.1
    mp4 = tmp_path / "slot.mp4"
    encode_mp4(frames, audio, mp4, fps=24, sample_rate=24_000)
    ts = tmp_path / "slot.ts"
    duration = remux_to_ts(mp4, ts)
    assert 1.9 < duration < 2.2
    with av.open(str(ts)) as c:
        assert c.format.name == "mpegts"
        assert sorted(s.codec_context.name for s in c.streams) == ["aac", "h264"]
    video, samples = frames_of(ts)
    assert video == 48 and samples >= 47_000  # every frame and the audio, decoded from the copy


def test_the_card_is_a_playable_segment(tmp_path: Path) -> None:
    card = tmp_path / "card.ts"
    write_card(card)
    video, samples = frames_of(card)
    assert video == int(CARD_SEC * 24) and samples > 0


def test_the_playlist_is_a_function_of_the_slots() -> None:
    text = playlist([(40, 2.0), (41, 44.9), (42, 2.0)], 45.0)
    assert text.startswith("#EXTM3U\n")
    assert "#EXT-X-MEDIA-SEQUENCE:40\n" in text and "#EXT-X-DISCONTINUITY-SEQUENCE:40\n" in text
    assert "#EXT-X-TARGETDURATION:45\n" in text
    assert text.count("#EXT-X-DISCONTINUITY\n") == 3
    assert text.index("/slots/40.ts") < text.index("/slots/41.ts") < text.index("/slots/42.ts")
    assert playlist([(40, 2.0), (41, 44.9), (42, 2.0)], 45.0) == text  # every node serves the same


@pytest.mark.trio
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (.ci/run installs it)")
async def test_ffmpeg_plays_two_consecutive_slots_of_a_nodes_channel(
    tmp_path: Path, node_engine: object
) -> None:
    async with playing_node(tmp_path, node_engine, slots=3) as node:
        assert node.public_port
        url = f"http://127.0.0.1:{node.public_port}/channel.m3u8"
        probe = await trio.run_process(
            ["ffprobe", "-v", "error", "-show_entries", "format=format_name", "-of", "json", url],
            capture_stdout=True, capture_stderr=True,
        )  # fmt: skip
        assert json.loads(probe.stdout)["format"]["format_name"] == "hls"
        first = min(s for s in node.ledger.recent if node.media_path(s))
        for slot in (first, first + 1):  # two consecutive slots, as a player fetches them
            segment = tmp_path / f"{slot}.ts"
            got = await trio.run_process(
                ["ffmpeg", "-v", "error", "-i", f"http://127.0.0.1:{node.public_port}/slots/{slot}.ts",
                 "-map", "0", "-c", "copy", "-y", str(segment)],
                capture_stdout=True, capture_stderr=True,
            )  # fmt: skip
            assert got.returncode == 0, got.stderr
            video, _ = frames_of(segment)  # these nodes' tiny engine makes no speech: video only
            assert video > 0
        # and the live playlist itself decodes across the slot boundaries
        played = await trio.run_process(
            ["ffmpeg", "-v", "error", "-live_start_index", "0", "-i", url, "-t", "5", "-f", "null", "-"],
            capture_stdout=True, capture_stderr=True,
        )  # fmt: skip
        assert played.returncode == 0, played.stderr
