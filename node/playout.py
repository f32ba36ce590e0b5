"""HLS playout: the channel as a live playlist whose segments are the committed slots.

`/channel.m3u8` lists one segment per slot over a sliding window ending at the
slot playing now (slot s plays during slot s + 1). The media sequence number is
the slot number, so every node serves the same playlist for the same chain. A
segment is the slot's MP4 remuxed, without re-encoding, into MPEG-TS (PyAV);
a slot the network did not commit, or whose media this node lacks, is a short
test card ("no broadcast in this slot") instead of a stall. Each segment starts
its own timeline, so every one is preceded by `#EXT-X-DISCONTINUITY` and the
discontinuity sequence is the slot number too.

Remuxed segments are cached on disk by content id (written whole, then
renamed), in a folder bounded to the newest `MAX_CACHED_SEGMENTS` files.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CARD_SEC = 2.0
CARD_SIZE = 256
CARD_FPS = 24
CARD_SAMPLE_RATE = 24_000
MAX_CACHED_SEGMENTS = 64


def remux_to_ts(mp4: Path, out: Path) -> float:
    """Copy the MP4's H.264 and AAC packets into MPEG-TS at `out`; the media's duration in seconds."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    with av.open(str(mp4)) as src, av.open(str(tmp), "w", format="mpegts") as dst:
        mapping = {}
        for stream in src.streams:
            if stream.type in ("video", "audio"):
                mapping[stream.index] = dst.add_stream_from_template(stream)
        for packet in src.demux(*[src.streams[i] for i in mapping]):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = mapping[packet.stream.index]
            dst.mux(packet)
        duration = float(src.duration / av.time_base) if src.duration else 0.0
    tmp.replace(out)
    return duration


def media_duration(mp4: Path) -> float:
    with av.open(str(mp4)) as src:
        return float(src.duration / av.time_base) if src.duration else 0.0


def write_card(out: Path) -> None:
    """A short test card with silence: what a slot without a broadcast shows."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    bars = np.array(
        [
            [192, 0, 0],
            [192, 192, 0],
            [0, 192, 0],
            [0, 192, 192],
            [0, 0, 192],
            [192, 0, 192],
            [192, 192, 192],
            [40, 40, 40],
        ],
        dtype=np.uint8,
    )
    frame = np.repeat(bars, CARD_SIZE // len(bars), axis=0)[None, :, :].repeat(CARD_SIZE, axis=0)
    with av.open(str(tmp), "w", format="mpegts") as dst:
        video = dst.add_stream("libx264", rate=CARD_FPS)
        video.width = video.height = CARD_SIZE
        video.pix_fmt = "yuv420p"
        audio = dst.add_stream("aac", rate=CARD_SAMPLE_RATE)
        audio.layout = "mono"
        for i in range(int(CARD_SEC * CARD_FPS)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            for packet in video.encode(vf):
                dst.mux(packet)
        for packet in video.encode():
            dst.mux(packet)
        samples = 1024
        for i in range(int(CARD_SEC * CARD_SAMPLE_RATE) // samples):
            af = av.AudioFrame.from_ndarray(
                np.zeros((1, samples), dtype=np.float32), format="fltp", layout="mono"
            )
            af.sample_rate = CARD_SAMPLE_RATE
            af.pts = i * samples
            af.time_base = Fraction(1, CARD_SAMPLE_RATE)
            for packet in audio.encode(af):
                dst.mux(packet)
        for packet in audio.encode():
            dst.mux(packet)
    tmp.replace(out)


class SegmentCache:
    """Remuxed segments and the card, on disk under `folder`. A slot's MP4 is keyed by its file
    name, which the content store makes its content id."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._durations: dict[str, float] = {}

    def card(self) -> Path:
        path = self.folder / "card.ts"
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            write_card(path)
        return path

    def segment(self, mp4: Path) -> Path:
        """The TS segment of one slot's MP4 (blocking: call from a worker thread)."""
        path = self.folder / f"{mp4.name}.ts"
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._durations[mp4.name] = remux_to_ts(mp4, path)
            self._trim()
        return path

    def duration(self, mp4: Path) -> float:
        if mp4.name not in self._durations:
            if len(self._durations) > 4 * MAX_CACHED_SEGMENTS:
                self._durations.clear()
            self._durations[mp4.name] = media_duration(mp4)
        return self._durations[mp4.name]

    def _trim(self) -> None:
        segments = sorted(
            (p for p in self.folder.glob("*.ts") if p.name != "card.ts"), key=lambda p: p.stat().st_mtime
        )
        for old in segments[:-MAX_CACHED_SEGMENTS]:
            old.unlink(missing_ok=True)


def playlist(entries: list[tuple[int, float]], slot_sec: float) -> str:
    """The live playlist for (slot, segment seconds) pairs in slot order, one per slot of the window."""
    first = entries[0][0] if entries else 0
    target = max([math.ceil(slot_sec)] + [math.ceil(d) for _, d in entries])
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target}",
        f"#EXT-X-MEDIA-SEQUENCE:{first}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{first}",
    ]
    for slot, seconds in entries:
        lines += ["#EXT-X-DISCONTINUITY", f"#EXTINF:{seconds:.3f},slot {slot}", f"/slots/{slot}.ts"]
    return "\n".join(lines) + "\n"
