"""The live channel in the HLS players viewers use: ffplay, mpv and VLC, each past one segment.

Each player runs headless against a running node's `/channel.m3u8` and must
play more than any single segment holds, so it crossed a slot boundary:
ffplay's playback clock runs past the longest segment and it fetched two
slots' segments; mpv decodes more frames than the largest segment has; VLC
records the stream it plays, and the recording has more frames than any one
segment. `.ci/run` installs the three players (ffmpeg, mpv, vlc-bin with
vlc-plugin-base); a missing one fails here rather than skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import trio

from tests.node.conftest import playing_node
from tests.node.test_playout import frames_of

pytestmark = [pytest.mark.trio, pytest.mark.slow]


def run_for(command: list[str], seconds: float, env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Run a player for at most `seconds`: (its exit code, None if it was stopped; its output so far).

    ffplay and VLC play a live playlist until stopped (ffplay ignores `-t` on live HLS)."""
    try:
        done = subprocess.run(
            command, capture_output=True, timeout=seconds, env={**os.environ, **(env or {})}, check=False
        )
    except subprocess.TimeoutExpired as stopped:
        out = (stopped.stdout or b"") + (stopped.stderr or b"")
        return None, out.decode("utf-8", "replace")
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")


def need(binary: str) -> str:
    path = shutil.which(binary)
    assert path is not None, f"{binary} is missing: .ci/run installs it"
    return path


def segments(url: str, folder: Path) -> list[tuple[float, int]]:
    """Each segment of the playlist's window, fetched: (its #EXTINF seconds, its video frames)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out = []
    for i, (seconds, uri) in enumerate(re.findall(r"#EXTINF:([0-9.]+),[^\n]*\n(\S+)", text)):
        path = folder / f"segment-{i}.ts"
        with urllib.request.urlopen(urllib.parse.urljoin(url, uri), timeout=10) as response:
            path.write_bytes(response.read())
        out.append((float(seconds), frames_of(path)[0]))
    return out


async def test_ffplay_mpv_and_vlc_play_the_live_channel_past_a_segment(
    tmp_path: Path, node_engine: object
) -> None:
    async with playing_node(tmp_path, node_engine, slots=3) as node:
        url = f"http://127.0.0.1:{node.public_port}/channel.m3u8"
        window = await trio.to_thread.run_sync(segments, url, tmp_path)
        longest = max(seconds for seconds, _ in window)
        most = max(frames for _, frames in window)

        # ffplay: no display or sound device here, so SDL's dummy drivers; -stats prints its clock
        code, out = await trio.to_thread.run_sync(
            lambda: run_for(
                [need("ffplay"), "-hide_banner", "-stats", "-live_start_index", "0", url],
                longest + 12,
                {"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"},
            )
        )
        clock = [float(t) for t in re.findall(r"(?:^|\r|\n)\s*([0-9]+\.[0-9]+) [AM]-[AV]:", out)]
        fetched = set(re.findall(r"/slots/([0-9]+)\.ts", out))
        assert code in (None, 0) and clock and max(clock) > longest + 0.5, out[-2000:]
        assert len(fetched) >= 2, out[-2000:]

        # mpv: decode, as fast as it can, more frames than any one segment holds
        frames = f"--frames={most + 5}"
        code, out = await trio.to_thread.run_sync(
            lambda: run_for(
                [
                    need("mpv"),
                    "--no-config",
                    "--vo=null",
                    "--ao=null",
                    "--untimed",
                    "--demuxer-lavf-o=live_start_index=0",
                    frames,
                    url,
                ],
                60,
            )  # fmt: skip
        )
        assert code == 0 and "VO: [null]" in out, out[-2000:]

        # VLC will not run as root: as nobody then, in a folder of its own (pytest's are 0700);
        # it records the stream it plays
        nobody = (
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []
        )
        with tempfile.TemporaryDirectory(prefix="icn-vlc-") as folder:
            os.chmod(folder, 0o777)
            recording = Path(folder) / "played.ts"
            play = [*nobody, need("cvlc"), "-I", "dummy", "--play-and-exit", f"--run-time={longest * 3 + 4:.0f}",
                    url, f"--sout=#std{{access=file,mux=ts,dst={recording}}}"]  # fmt: skip
            code, out = await trio.to_thread.run_sync(
                lambda: run_for(play, longest * 3 + 30, {"HOME": folder})
            )
            assert recording.exists(), f"VLC recorded nothing (exit {code}): {out[-2000:]}"
            assert frames_of(recording)[0] > most, f"VLC played one segment or less: {out[-2000:]}"
