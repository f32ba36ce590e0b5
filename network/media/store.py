"""Content-addressed media on disk, written so a crash never leaves a bad file in place.

Complete files live at `<root>/<hex content id>` and only get there by rename
after their content id has been checked, so a file under a content id is
that content (and is re-checked the first time it is served). Downloads in
progress live under `<root>/partial/`, which is never served; after a crash a
download resumes by re-checking each chunk already on disk against the chunk
list, so no separate bookkeeping can disagree with the data.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

from network.media.content import CHUNK_BYTES, ChunkList, sha256

log = logging.getLogger(__name__)

_HEX_ID_LEN = 64


class StoreError(ValueError):
    """Content that cannot be stored; the message names the content id and the problem."""


def _hex(cid: bytes) -> str:
    if not isinstance(cid, bytes) or len(cid) != 32:
        raise StoreError(f"content id must be 32 bytes, got {cid!r:.40}")
    return cid.hex()


def _read_chunk(path: Path, chunk_list: ChunkList, index: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(index * chunk_list.chunk_size)
        return f.read(chunk_list.chunk_length(index))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MediaStore:
    def __init__(self, root: str | Path, *, max_file_bytes: int = 64 * 1024 * 1024) -> None:
        self.root = Path(root)
        self.partial_dir = self.root / "partial"
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self.max_file_bytes = max_file_bytes
        self._lists: dict[bytes, ChunkList] = {}
        self._lock = threading.Lock()  # lists are filled from worker threads
        for leftover in self.root.glob("*.tmp"):  # an add_file cut short by a crash
            leftover.unlink(missing_ok=True)

    # -- complete files -----------------------------------------------------------------------------
    def path(self, cid: bytes) -> Path:
        return self.root / _hex(cid)

    def has(self, cid: bytes) -> bool:
        return self.path(cid).is_file()

    def ids(self) -> list[bytes]:
        return [
            bytes.fromhex(p.name) for p in self.root.iterdir() if len(p.name) == _HEX_ID_LEN and p.is_file()
        ]

    def chunk_list(self, cid: bytes) -> ChunkList | None:
        """The chunk list of a stored file, or None; a file whose content is not its id is quarantined."""
        with self._lock:
            if cid in self._lists:
                return self._lists[cid]
        path = self.path(cid)
        if not path.is_file():
            return None
        chunk_list = ChunkList.of_file(path)
        if chunk_list.content_id != cid:
            log.error("media %s does not match its content id; moved aside", path.name)
            path.rename(path.with_name(path.name + ".corrupt"))
            return None
        with self._lock:
            self._lists[cid] = chunk_list
        return chunk_list

    def read_chunk(self, cid: bytes, index: int, chunk_list: ChunkList) -> bytes:
        return _read_chunk(self.path(cid), chunk_list, index)

    def add_file(self, src: str | Path) -> bytes:
        """Copy a file in under its content id (a temporary name until it is complete)."""
        src = Path(src)
        size = src.stat().st_size
        if size > self.max_file_bytes:
            raise StoreError(f"{src}: {size} bytes exceeds the media limit of {self.max_file_bytes}")
        chunk_list = ChunkList.of_file(src)
        cid = chunk_list.content_id
        if self.has(cid):
            return cid
        tmp = self.root / f"{_hex(cid)}.{os.getpid()}.tmp"
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
            fout.flush()
            os.fsync(fout.fileno())
        if ChunkList.of_file(tmp).content_id != cid:
            tmp.unlink()
            raise StoreError(f"{src}: changed while being stored")
        os.replace(tmp, self.path(cid))
        _fsync_dir(self.root)
        with self._lock:
            self._lists[cid] = chunk_list
        return cid

    def add_bytes(self, data: bytes) -> bytes:
        tmp = self.root / f"incoming.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        try:
            return self.add_file(tmp)
        finally:
            tmp.unlink(missing_ok=True)

    # -- retention ----------------------------------------------------------------------------------
    def files(self) -> list[tuple[bytes, int, float]]:
        """Every complete file: (content id, bytes, when it was stored: its mtime)."""
        out = []
        with os.scandir(self.root) as entries:  # the walk retention repeats: no Path object per file
            for entry in entries:
                if len(entry.name) == _HEX_ID_LEN:
                    try:
                        st = entry.stat()
                    except FileNotFoundError:  # removed meanwhile
                        continue
                    out.append((bytes.fromhex(entry.name), st.st_size, st.st_mtime))
        return out

    def remove(self, cid: bytes) -> None:
        """Delete a complete file (a reader that has it open keeps reading it: POSIX unlink)."""
        with self._lock:
            self._lists.pop(cid, None)
        self.path(cid).unlink(missing_ok=True)

    def remove_stale_partials(self, older_than: float) -> int:
        """Delete downloads left unfinished since before `older_than` (a wall time); their bytes."""
        freed = 0
        for p in self.partial_dir.iterdir():
            try:
                st = p.stat()
                if st.st_mtime < older_than:
                    p.unlink()
                    freed += st.st_size
            except FileNotFoundError:
                continue
        return freed

    # -- downloads ----------------------------------------------------------------------------------
    def open_partial(self, chunk_list: ChunkList) -> PartialFile:
        if chunk_list.size > self.max_file_bytes:
            raise StoreError(
                f"{chunk_list.content_id.hex()}: {chunk_list.size} bytes exceeds the media limit of "
                f"{self.max_file_bytes}"
            )
        return PartialFile(self, chunk_list)


class PartialFile:
    """A download in progress: which chunks are on disk and verified, and the final rename."""

    def __init__(self, store: MediaStore, chunk_list: ChunkList) -> None:
        self.store = store
        self.chunk_list = chunk_list
        self.cid = chunk_list.content_id
        self.path = store.partial_dir / f"{_hex(self.cid)}.part"
        self.have = [False] * chunk_list.count
        if self.path.exists():
            self._recheck()
        else:
            with open(self.path, "wb") as f:
                f.truncate(chunk_list.size)

    def _recheck(self) -> None:
        with open(self.path, "r+b") as f:
            if os.fstat(f.fileno()).st_size != self.chunk_list.size:
                f.truncate(self.chunk_list.size)
            for i in range(self.chunk_list.count):
                f.seek(i * self.chunk_list.chunk_size)
                self.have[i] = sha256(f.read(self.chunk_list.chunk_length(i))) == self.chunk_list.leaves[i]

    def missing(self) -> list[int]:
        return [i for i, had in enumerate(self.have) if not had]

    def check_chunk(self, index: int, data: bytes) -> bool:
        return (
            len(data) == self.chunk_list.chunk_length(index) and sha256(data) == self.chunk_list.leaves[index]
        )

    def write_chunk(self, index: int, data: bytes) -> None:
        if not self.check_chunk(index, data):
            raise StoreError(f"{self.cid.hex()}: chunk {index} does not match the chunk list")
        with open(self.path, "r+b") as f:
            f.seek(index * self.chunk_list.chunk_size)
            f.write(data)
        self.have[index] = True

    def read_chunk(self, index: int) -> bytes:
        """A verified chunk, served to peers before the download is complete."""
        if not self.have[index]:
            raise StoreError(f"{self.cid.hex()}: chunk {index} is not here yet")
        return _read_chunk(self.path, self.chunk_list, index)

    def finish(self) -> Path:
        """Check the whole file, make it durable, and move it under its content id."""
        missing = self.missing()
        if missing:
            raise StoreError(f"{self.cid.hex()}: {len(missing)} chunks still missing")
        with open(self.path, "r+b") as f:
            os.fsync(f.fileno())
        if ChunkList.of_file(self.path, self.chunk_list.chunk_size) != self.chunk_list:
            self.path.unlink()
            raise StoreError(f"{self.cid.hex()}: assembled file does not match its chunk list")
        final = self.store.path(self.cid)
        os.replace(self.path, final)
        _fsync_dir(self.store.root)
        with self.store._lock:
            self.store._lists[self.cid] = self.chunk_list
        return final

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


__all__ = ["CHUNK_BYTES", "MediaStore", "PartialFile", "StoreError"]
