import random

import pytest

from consensus.messages import DecodeError, canonical
from network.media.content import CHUNK_BYTES, ChunkList, content_id_of_file
from network.media.store import MediaStore, StoreError


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def test_the_content_id_names_the_chunk_list_and_changes_with_any_byte() -> None:
    data = data_of(2 * CHUNK_BYTES + 5)
    cl = ChunkList.of_bytes(data)
    assert cl.count == 3 and cl.chunk_length(2) == 5
    assert ChunkList.decode(cl.encode()) == cl
    flipped = bytearray(data)
    flipped[CHUNK_BYTES + 7] ^= 1
    other = ChunkList.of_bytes(bytes(flipped))
    assert other.content_id != cl.content_id and other.leaves[0] == cl.leaves[0]
    assert ChunkList.of_bytes(b"").count == 0
    with pytest.raises(IndexError):
        cl.chunk_length(3)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        canonical(["other-format", 1, CHUNK_BYTES, [b"\x00" * 32]]),
        canonical(["icn-media-v1", 10, CHUNK_BYTES, []]),  # size needs one leaf
        canonical(["icn-media-v1", 10, CHUNK_BYTES, [b"\x00" * 31]]),
        canonical(["icn-media-v1", -1, CHUNK_BYTES, []]),
        canonical(["icn-media-v1", 10, 3, [b"\x00" * 32]]),  # chunk size below the minimum
    ],
)
def test_malformed_chunk_lists_are_decode_errors(data) -> None:
    with pytest.raises(DecodeError):
        ChunkList.decode(data)


def test_store_adds_under_the_content_id_and_quarantines_a_corrupted_file(tmp_path) -> None:
    store = MediaStore(tmp_path / "s")
    data = data_of(CHUNK_BYTES + 1)
    src = tmp_path / "slot.mp4"
    src.write_bytes(data)
    cid = store.add_file(src)
    assert cid == content_id_of_file(src) and store.has(cid) and store.ids() == [cid]
    assert store.read_chunk(cid, 1, store.chunk_list(cid)) == data[-1:]
    assert store.add_bytes(data) == cid  # adding again is a no-op
    # a second store over the same directory finds the file and notices it was tampered with
    store.path(cid).write_bytes(b"x" * len(data))
    fresh = MediaStore(tmp_path / "s")
    assert fresh.chunk_list(cid) is None and not fresh.has(cid)
    assert (tmp_path / "s" / (cid.hex() + ".corrupt")).exists()


def test_store_refuses_oversize_files_and_clears_temporary_leftovers(tmp_path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "abc.123.tmp").write_bytes(b"half a file")
    store = MediaStore(root, max_file_bytes=1024)
    assert not (root / "abc.123.tmp").exists()
    with pytest.raises(StoreError, match="exceeds the media limit"):
        store.add_bytes(b"\x00" * 2048)
    with pytest.raises(StoreError, match="exceeds the media limit"):
        store.open_partial(ChunkList.of_bytes(b"\x00" * 2048))
    with pytest.raises(StoreError, match="32 bytes"):
        store.path(b"short")


def test_a_partial_file_rechecks_what_is_on_disk_and_only_a_complete_match_is_renamed(tmp_path) -> None:
    store = MediaStore(tmp_path)
    data = data_of(3 * CHUNK_BYTES, seed=1)
    cl = ChunkList.of_bytes(data)
    part = store.open_partial(cl)
    part.write_chunk(1, data[CHUNK_BYTES : 2 * CHUNK_BYTES])
    with pytest.raises(StoreError, match="does not match"):
        part.write_chunk(0, b"\x00" * CHUNK_BYTES)
    with pytest.raises(StoreError, match="2 chunks still missing"):
        part.finish()
    assert not store.has(cl.content_id)
    again = store.open_partial(cl)  # as after a restart
    assert again.missing() == [0, 2]
    again.write_chunk(0, data[:CHUNK_BYTES])
    again.write_chunk(2, data[2 * CHUNK_BYTES :])
    path = again.finish()
    assert path.read_bytes() == data and store.has(cl.content_id)
    assert not again.path.exists()
