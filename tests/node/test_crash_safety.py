"""SIGKILL at any moment leaves no partial media file under a content id and no corrupt row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from network.media.store import MediaStore
from node.storage import Storage

WRITER = r"""
import os, sys
sys.path.insert(0, {root!r})
from network.media.store import MediaStore
from node.storage import Storage
store = MediaStore({media!r})
db = Storage({db!r}, b"c" * 32)
i = 0
while True:
    data = os.urandom(3 * 1024 * 1024 + i)
    cid = store.add_bytes(data)
    db.put_media(cid, i, len(data), "produced")
    db.record(i, 0, "prevote", cid)
    db.put_outcome(i, "director", "committed", {{"n": i}})
    print(i, flush=True)
    i += 1
"""


@pytest.mark.parametrize("writes, extra_sec", [(1, 0.0), (2, 0.013), (3, 0.031), (4, 0.057)])
def test_sigkill_while_writing_media_and_rows(tmp_path: Path, writes: int, extra_sec: float) -> None:
    media, db = tmp_path / "media", tmp_path / "node.sqlite"
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=root, media=str(media), db=str(db))],
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(writes):  # kill it mid-stream: after some complete writes, inside a later one
        assert proc.stdout.readline(), "the writer died on its own"
    time.sleep(extra_sec)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = MediaStore(media)  # what a restarted node does first
    assert not list(media.glob("*.tmp")), "temporary files are cleared on start"
    for cid in store.ids():  # everything under a content id is that content, complete
        assert store.chunk_list(cid) is not None, cid.hex()
    storage = Storage(db, b"c" * 32)  # opens, passes its integrity check, same chain
    rows = storage.outcomes()
    assert len(rows) >= writes  # every write reported done is there
    stored = set(store.ids())
    for slot, _role, _outcome, detail in rows:
        assert detail == {"n": slot}
        ((_, _, voted, _),) = storage.votes(slot)
        assert voted in stored  # a row is written only after its file is in place
    for slot in range(len(rows)):
        assert storage.media_for_slot(slot)[0] in stored  # the index never names a missing file
