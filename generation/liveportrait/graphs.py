"""W and G replayed from one CUDA graph per slot (issue 21, step 2).

At the batch the 11.5 GB cap leaves (2 frames), a slot's warp stage runs W and
G 540 times, each a few hundred kernel launches; the profile (bench/RESULTS.md,
slot_gpu) shows the GPU idle about 1.2 s of the stage's 6.2, waiting on the
launching thread. A CUDA graph records one batch's launches once and replays
them with one call: the driving keypoints are copied into the graph's own
input first, and the frames read from its output before the next replay (the
animator does both on the same stream, so the order is the stream's).

Recorded per slot, after the slot's first batch has run plainly, and released
when the stage ends. A graph keeps its activations in a private memory pool
(709 MB at batch 2, measured) that the other models cannot use: recorded once
at load and kept, it left Flux too little under the 11.5 GB cap (out of memory
in the next actor stage, measured on an H200). The slot's source (appearance
feature and keypoints) is an input the graph reads in place, so it must be the
one the graph was recorded with. Recording uses this thread's stream capture
only (`thread_local`): the encoder thread keeps synchronising on its events
meanwhile.

Same kernels, same inputs, same order: a replay's frames equal the plain call's;
`bench/slot_gpu.py --cuda-graphs` compares them on the card.
"""

from __future__ import annotations

import torch

from generation.liveportrait.model import LivePortrait, SourceState


class GraphedRender:
    """`LivePortrait.render` for one slot's source, batches of up to `batch` frames, from a CUDA graph."""

    def __init__(self, model: LivePortrait, source: SourceState, batch: int) -> None:
        if model.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.batch = batch
        self._source = source
        self._kp: torch.Tensor | None = source.kp_source.expand(batch, -1, -1).clone()
        # the capture synchronises the device and empties the allocator's cache first (torch.cuda.graph),
        # so the graph's pool can take what Flux's activations left cached
        self._graph: torch.cuda.CUDAGraph | None = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self._graph, capture_error_mode="thread_local"):
            self._out: torch.Tensor | None = model.render(source, self._kp)

    @torch.inference_mode()
    def __call__(self, source: SourceState, kp_driving: torch.Tensor) -> torch.Tensor:
        """Frames for `kp_driving` (b <= batch frames): a view of the graph's output, valid until the next
        call (read it on the current stream before calling again)."""
        if self._graph is None or self._kp is None or self._out is None:
            raise RuntimeError("this graph was released")
        if source is not self._source:
            raise ValueError("a graph renders the source it was recorded with")
        b = kp_driving.shape[0]
        if not 0 < b <= self.batch:
            raise ValueError(f"a graphed batch holds 1 to {self.batch} frames, got {b}")
        self._kp[:b].copy_(kp_driving)
        if b < self.batch:  # the last, short batch: the padding frames are rendered and dropped
            self._kp[b:].copy_(source.kp_source.expand(self.batch - b, -1, -1))
        self._graph.replay()
        return self._out[:b]

    def release(self) -> None:
        """Give the graph's pool back (the allocator frees it when it next needs the memory)."""
        self._graph = self._out = self._kp = None
