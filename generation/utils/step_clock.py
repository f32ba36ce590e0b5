"""Where a stage's time goes, step by step, on the host's clock and on the GPU's.

A stage's wall time on a worker thread is what the slot pays; the GPU's time
between the same two points is what the kernels took. Marks are CUDA events
(recorded on the current stream, no synchronisation), so timing a stage's
steps does not change how it runs; the GPU times are read once, after the
stage has waited for its kernels. Off CUDA only the wall times are kept.
"""

from __future__ import annotations

import time
from itertools import pairwise

import torch


class StepClock:
    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._marks: list[tuple[str, float, torch.cuda.Event | None]] = []
        self.mark("start")

    def mark(self, step: str) -> None:
        """The end of `step` (and the start of the next one)."""
        event = None
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        self._marks.append((step, time.perf_counter(), event))

    def times_ms(self) -> dict[str, float]:
        """Each step's wall ms, and on CUDA its GPU ms as "<step>.gpu"; call after the kernels have run."""
        last = self._marks[-1][2]
        if last is not None:
            last.synchronize()  # every earlier mark has then completed too
        out: dict[str, float] = {}
        for (_, wall0, event0), (step, wall1, event1) in pairwise(self._marks):
            out[step] = out.get(step, 0.0) + (wall1 - wall0) * 1000.0
            if event0 is not None and event1 is not None:
                out[f"{step}.gpu"] = out.get(f"{step}.gpu", 0.0) + event0.elapsed_time(event1)
        return out
