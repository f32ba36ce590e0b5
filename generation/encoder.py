"""The MP4 encoder as a stream: frames are encoded while the warp is still rendering the next batches.

Measured on an H200 (bench/RESULTS.md, 2026-11-30) the one-shot encode after
the warp took 6.4 s of a 13.4 s slot: it was half the slot, and it only waited
for frames that had long left the GPU. Here the warp hands each finished batch
to `StreamingEncoder.put` and goes on rendering; one encoder thread takes the
batches from a bounded queue, in order, and feeds the codec; `finish` flushes
the codec, adds the audio (known before the warp starts) and renames the file
into place, so the MP4 is done shortly after the last batch.

The batches are views into the pipeline's host video buffer, not copies. A
batch copied from the GPU asynchronously (pinned memory) comes with the CUDA
event recorded after its copy, and the encoder thread waits on that event
before it reads the frames.

Which encoder: NVENC (`h264_nvenc`, through PyAV's FFmpeg) where the card has
one and FFmpeg was built with it, else libx264 with its thread count set from
the settings (the cores the machine has by default). The choice is made once
per process, by opening the encoder on a tiny frame, and reported with its
reason (`EncoderChoice`). For the same frames and the same choice the bytes are
the same, streamed or not: `encode_mp4` is this encoder fed all at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generation.utils.pixels import to_pixels

AAC_FRAME = 1024  # samples per AAC frame
QUEUE_BATCHES = 64  # batches waiting for the encoder; a put past this blocks the warp (back-pressure)
_DONE = object()


class EncodeError(RuntimeError):
    """The encoder failed; the message says why. Raised by `put` or `finish` in the caller's thread."""


@dataclass(frozen=True)
class EncoderChoice:
    codec: str  # "libx264" or "h264_nvenc"
    threads: int  # libx264's worker threads (0 for NVENC, which runs on the card)
    reason: str

    def describe(self) -> str:
        threads = f", {self.threads} threads" if self.codec == "libx264" else ""
        return f"{self.codec}{threads} ({self.reason})"


def _nvenc_opens() -> str | None:
    """None if PyAV's FFmpeg can open h264_nvenc here, else why not."""
    import av

    if "h264_nvenc" not in av.codecs_available:
        return "PyAV's FFmpeg was built without h264_nvenc"
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        ctx = av.CodecContext.create("h264_nvenc", "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        ctx.time_base = Fraction(1, 24)
        ctx.open()
        ctx.close()
    except Exception as exc:  # any refusal from the driver or the library means: not usable here
        return f"h264_nvenc does not open on this card ({type(exc).__name__}: {str(exc)[:120]})"
    return None


@functools.cache
def choose_encoder(codec: str = "auto", threads: int = 0) -> EncoderChoice:
    """The encoder this process uses: `codec` 'auto', 'libx264' or 'h264_nvenc'; `threads` 0 = every core."""
    cores = threads or os.cpu_count() or 1
    if codec == "libx264":
        return EncoderChoice("libx264", cores, "chosen in the settings")
    why_not = _nvenc_opens()
    if why_not is None:
        return EncoderChoice("h264_nvenc", 0, "the card has NVENC")
    if codec == "h264_nvenc":
        raise EncodeError(f"encode.codec is h264_nvenc, but {why_not}")
    return EncoderChoice("libx264", cores, why_not)


def audio_array(audio: torch.Tensor | np.ndarray) -> np.ndarray:
    """Mono audio as float32 in [-1, 1]; ValueError for another shape or a NaN."""
    array = (
        audio.detach().float().cpu().numpy()
        if isinstance(audio, torch.Tensor)
        else np.asarray(audio, np.float32)
    )
    if array.ndim != 1:
        raise ValueError(f"audio must be (num_samples,), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("audio holds NaN or Inf")
    return np.clip(array.astype(np.float32), -1.0, 1.0)


class StreamingEncoder:
    """One MP4 (H.264 + AAC) written by its own thread from batches of (N, 3, H, W) frames.

    Use: `start()`, `put(batch)` as batches are ready, `finish()` -> (frames, samples). Any error, or
    `abort()`, removes the partial file; the final name only ever holds a complete MP4.
    """

    def __init__(
        self,
        path: str | Path,
        audio: torch.Tensor | np.ndarray,
        *,
        width: int,
        height: int,
        fps: int = 24,
        sample_rate: int = 24000,
        crf: int = 20,
        preset: str = "veryfast",
        choice: EncoderChoice | None = None,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
        self.path = Path(path)
        self._partial = self.path.with_name(f".{self.path.name}.partial")
        self._audio = audio_array(audio)
        self._size = (height, width)
        self._fps, self._rate, self._crf, self._preset = fps, sample_rate, crf, preset
        self.choice = choice or choose_encoder("libx264")
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
        self._thread = threading.Thread(target=self._run, name=f"encode {self.path.name}", daemon=True)
        self._error: BaseException | None = None
        self._aborted = threading.Event()
        self.frames = 0
        self.finished = False  # finish() returned: the MP4 is in place

    # -- the caller's side -----------------------------------------------------------------------------
    def start(self) -> StreamingEncoder:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def put(self, batch: torch.Tensor, ready: torch.cuda.Event | None = None) -> None:
        """Queue a (N, 3, H, W) batch (uint8, or floats in [0, 1]); `ready` is the event its copy recorded."""
        if batch.dim() != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != self._size:
            raise ValueError(
                f"frames must be (N, 3, {self._size[0]}, {self._size[1]}), got {tuple(batch.shape)}"
            )
        self._raise_if_failed()
        self._queue.put((batch, ready))

    def finish(self) -> tuple[int, int]:
        """Wait for every queued frame, add the audio, close, and rename into place."""
        self._queue.put(_DONE)
        self._thread.join()
        self._raise_if_failed()
        if self.frames == 0:
            raise EncodeError("no frames to encode")
        self.finished = True
        return self.frames, len(self._audio)

    def abort(self) -> None:
        """Stop after the frame being encoded and remove the partial file (safe to call at any time)."""
        self._aborted.set()
        if self._thread.is_alive():
            while True:  # make room for the end marker: the thread stops at the next batch anyway
                try:
                    self._queue.put_nowait(_DONE)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
            self._thread.join()
        self._partial.unlink(missing_ok=True)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise EncodeError(f"encoding {self.path.name} failed: {self._error}") from self._error

    # -- the encoder thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._encode()
        except BaseException as exc:  # reported to the caller by put/finish, with the file removed
            self._error = exc
            self._partial.unlink(missing_ok=True)
            while True:  # let a blocked put return; it then sees the error
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _encode(self) -> None:
        import av

        height, width = self._size
        with av.open(str(self._partial), "w", format="mp4") as container:
            video = container.add_stream(self.choice.codec, rate=self._fps)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            if self.choice.codec == "libx264":
                video.options = {
                    "crf": str(self._crf),
                    "preset": self._preset,
                    "threads": str(self.choice.threads),
                }
            else:
                video.options = {"cq": str(self._crf), "preset": "p4"}
            sound = container.add_stream("aac", rate=self._rate)
            sound.layout = "mono"
            while (item := self._queue.get()) is not _DONE:
                if self._aborted.is_set():
                    return
                batch, ready = item
                if ready is not None:
                    ready.synchronize()
                if batch.dtype != torch.uint8:
                    batch = to_pixels(batch.float())
                for array in batch.permute(0, 2, 3, 1).cpu().numpy():
                    if self._aborted.is_set():
                        return
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
                    for packet in video.encode(frame):
                        container.mux(packet)
                    self.frames += 1
            if self._aborted.is_set():
                return
            for packet in video.encode():
                container.mux(packet)
            for start in range(0, len(self._audio), AAC_FRAME):
                chunk = self._audio[start : start + AAC_FRAME][None, :]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                af.sample_rate, af.pts = self._rate, start
                for packet in sound.encode(af):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
        if self.frames:
            os.replace(self._partial, self.path)


def encode_mp4(
    frames: Iterable[torch.Tensor],
    audio: torch.Tensor | np.ndarray,
    path: str | Path,
    *,
    fps: int = 24,
    sample_rate: int = 24000,
    crf: int = 20,
    choice: EncoderChoice | None = None,
) -> tuple[int, int]:
    """Encode frames (each (3, H, W)) and mono audio into an MP4 at `path`; return (frames, samples).

    The one-shot path: every frame through a `StreamingEncoder`, then finish; written to a temporary
    name and renamed when complete, so a crash never leaves a truncated file under the final name."""
    encoder: StreamingEncoder | None = None
    try:
        for frame in frames:
            if frame.dim() != 3 or frame.shape[0] != 3:
                raise ValueError(f"frames must be (3, H, W), got {tuple(frame.shape)}")
            if encoder is None:
                encoder = StreamingEncoder(
                    path, audio, width=frame.shape[2], height=frame.shape[1], fps=fps,
                    sample_rate=sample_rate, crf=crf, choice=choice,
                ).start()  # fmt: skip
            encoder.put(frame.unsqueeze(0))
        if encoder is None:
            raise ValueError("no frames to encode")
        return encoder.finish()
    except BaseException:
        if encoder is not None:
            encoder.abort()
        raise
