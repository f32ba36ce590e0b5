"""A director's own output for a slot: generate, encode, store, and summarise for consensus.

The engine runs its models in worker threads (anyio) and encodes the MP4 in a
thread of its own while the warp renders (`generate_slot(encode_to=...)`), so
the node's trio loop keeps serving gossip while the GPU works, and the encode
is not a phase of its own after the warp (issue 21).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import trio

from consensus.agreement import LocalOutput
from consensus.messages import embedding_to_bytes
from generation.media import SlotMedia, write_slot_media
from generation.pipeline import GenerationResult, VortexPipeline
from generation.recipe import Recipe
from network.media.store import MediaStore
from node.storage import Storage


class ProductionError(RuntimeError):
    """The engine could not make this slot; the message says which stage and why."""


@dataclass(frozen=True)
class Production:
    result: GenerationResult
    media: SlotMedia
    cid: bytes
    output: LocalOutput


def recipe_hash(recipe: Recipe) -> bytes:
    return bytes.fromhex(recipe.content_hash())


def slot_dir(workdir: Path, slot: int) -> Path:
    return workdir / f"slot-{slot}"


class EngineMaker:
    """The studio's maker on the real engine: generate, then encode (if not streamed), store and record.

    The two steps are separate so the studio can time generation and verification apart."""

    def __init__(self, engine: VortexPipeline, store: MediaStore, storage: Storage, workdir: Path) -> None:
        self._engine = engine
        self._store = store
        self._storage = storage
        self._workdir = workdir

    async def generate(self, recipe: Recipe, slot: int, timeout_sec: float) -> GenerationResult:
        """The slot's frames, speech, CLIP embeddings and its MP4 (encoded under the work folder as the warp
        renders).

        A slot that fails or is cut short leaves nothing in the work folder: `package` removes the folder
        of one that succeeds, so the folder does not fill over months of slots."""
        where = slot_dir(self._workdir, slot)
        try:
            result = await self._engine.generate_slot(
                recipe, slot, timeout_sec=max(timeout_sec, 0.001), encode_to=where
            )
            if not result.success or result.verification is None:
                raise ProductionError(result.error_msg or "the engine returned no verification")
        except BaseException:
            shutil.rmtree(where, ignore_errors=True)  # at most an empty folder and a WAV: quick enough inline
            raise
        return result

    async def package(self, result: GenerationResult, recipe: Recipe) -> Production:
        """Add the result's MP4 to the media store (encoding it first if the engine did not) and record it,
        and build the announcement's content."""
        b = self._engine.settings.buffers
        where = slot_dir(self._workdir, result.slot_id)
        store = self._store

        def encode_and_store() -> tuple[SlotMedia, bytes]:
            try:
                media = result.media or write_slot_media(
                    result.video_frames,
                    result.audio_waveform,
                    where,
                    fps=b.video.fps,
                    sample_rate=b.audio.sample_rate,
                )
                return media, store.add_file(media.mp4_path)
            finally:
                shutil.rmtree(where, ignore_errors=True)  # the store holds its own copy

        media, cid = await trio.to_thread.run_sync(encode_and_store)
        self._storage.put_media(cid, result.slot_id, media.size_bytes, "produced")
        v = result.verification
        assert v is not None  # checked by generate()
        output = LocalOutput(
            recipe_hash=recipe_hash(recipe),
            embedding_b=embedding_to_bytes(v.embedding_b.float()),
            embedding_l=embedding_to_bytes(v.embedding_l.float()),
            self_check=bool(v.self_check_passed),
            content_hash=cid,
        )
        return Production(result, media, cid, output)
