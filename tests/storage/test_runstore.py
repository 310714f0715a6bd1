"""The run store: 2x reduction of the output pyramid, stale metadata, checksummed chunks
(a torn, zeroed, bit-flipped or lost chunk is an error naming it, never values), owners of
chunks, and data flushed before its done marker."""

import numpy as np
import pytest

from gigapatch.storage.runstore import reduce2_box


def test_reduce2_box_odd_edges():
    a = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    r = reduce2_box(a)
    assert r.shape == (2, 2, 3)
    assert r[0, 0, 0] == np.rint((0 + 1 + 5 + 6) / 4)
    assert r[0, 1, 2] == a[0, 2, 4]  # corner pixel averaged with itself


def test_reduce2_box_written_out():
    # means 1.5, 2.5, 0.25 and 254.75: half to even (2, 2), and a quarter is no half
    # (kills floor, ceil, round-half-up and truncation in the 2x reduction)
    a = np.array([[[1, 2, 2, 3, 0, 0, 255, 255],
                   [1, 2, 2, 3, 0, 1, 254, 255]]], dtype=np.uint8)
    expected = np.array([[[2, 2, 0, 255]]], dtype=np.uint8)
    assert np.array_equal(reduce2_box(a), expected)


def _store(path, hw, key, c=1):
    # two levels: level 0 (hw, stored float32, tiled in 64 px chunks) and level 1, the
    # finest, which is stored only quantised as output/0
    from gigapatch.storage.runstore import RunStore

    grid = (-(-hw[0] // 64), -(-hw[1] // 64))
    return RunStore.create_or_open(path, run_key=key, meta={},
                                   reference=np.zeros((c, 4, 4), np.float32),
                                   level_shapes=[hw, hw], grid_shapes=[grid, grid],
                                   output_shapes=[hw], chunk=64, out_dtype="uint8")


def test_recreated_run_dir_is_not_seen_through_stale_metadata(tmp_path):
    # a process-wide array cache kept the first store's (1, 64, 64) level after the run dir
    # was deleted and made again with other sizes in the same process
    import shutil

    from gigapatch.tiling import Box

    d = tmp_path / "run"
    first = _store(d, (64, 64), "a")
    first.write("levels/0", Box(0, 0, 64, 64), np.ones((1, 64, 64), np.float32))
    shutil.rmtree(d)
    second = _store(d, (128, 64), "b")
    assert second.array("levels/0").shape == (1, 128, 64)
    second.write("levels/0", Box(64, 0, 128, 64), np.full((1, 64, 64), 2, np.float32))
    assert float(second.read("levels/0", Box(64, 0, 128, 64)).sum()) == 2 * 64 * 64


def _filled(tmp_path):
    from gigapatch.tiling import Box

    st = _store(tmp_path / "run", (128, 128), "k", c=3)
    rng = np.random.default_rng(0)
    level = rng.standard_normal((3, 128, 128)).astype(np.float32)
    out = rng.integers(0, 256, (3, 128, 128), dtype=np.uint8)
    for iy in range(2):
        for ix in range(2):
            b = Box(64 * iy, 64 * ix, 64 * iy + 64, 64 * ix + 64)
            st.write("levels/0", b, level[:, b.y0:b.y1, b.x0:b.x1])
            st.write("output/0", b, out[:, b.y0:b.y1, b.x0:b.x1])
            st.mark_done("done/0", iy, ix)
            st.mark_done("done/1", iy, ix)
    return st, level, out


def _chunk_file(st, name, iy, ix):
    return st.path / name / "c" / "0" / str(iy) / str(ix)


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "bitflip", "missing"])
@pytest.mark.parametrize("name", ["levels/0", "output/0"])
def test_damaged_chunk_is_an_error_never_values(tmp_path, damage, name):
    # mutants killed: no crc32c codec (a zeroed/bit-flipped chunk decodes to a grey or
    # wrong block, or to a zstd/reshape traceback); a missing chunk read as the fill value
    from gigapatch.storage.runstore import CorruptChunkError, RunStore
    from gigapatch.tiling import Box

    st, level, out = _filled(tmp_path)
    f = _chunk_file(st, name, 1, 0)
    raw = f.read_bytes()
    if damage == "zeroed":
        f.write_bytes(bytes(len(raw)))
    elif damage == "truncated":
        f.write_bytes(raw[: len(raw) // 2])
    elif damage == "bitflip":
        b = bytearray(raw)
        b[len(b) // 2] ^= 0x10
        f.write_bytes(bytes(b))
    else:
        f.unlink()
    st = RunStore.open(st.path)
    with pytest.raises(CorruptChunkError) as exc:
        st.read(name, Box(0, 0, 128, 128))
    assert exc.value.name == name and exc.value.chunks == [(1, 0)]
    assert "\n" not in str(exc.value) and "run the same command again" in str(exc.value)
    # the undamaged chunks still read exactly
    good = st.read(name, Box(0, 64, 64, 128))
    want = (level if name == "levels/0" else out)[:, 0:64, 64:128]
    assert np.array_equal(good, want)
    # its owner's marker is what invalidate clears (level 0 -> done/0, output/0 -> the
    # finest level's done/1); the other markers stay
    owner = "done/0" if name == "levels/0" else "done/1"
    assert st.invalidate(exc.value) == [(owner, 1, 0)]
    mask = st.done_mask(owner)
    assert not mask[1, 0] and mask.sum() == 3


def test_chunks_are_compressed_and_checksummed(tmp_path):
    # mutant killed: levels/output stored without compression (the scratch floor) or
    # without the checksum codec
    import json

    st, level, _ = _filled(tmp_path)
    for name in ("levels/0", "output/0", "reference", "done/0"):
        meta = json.loads((st.path / name / "zarr.json").read_text())
        codecs = [c["name"] for c in meta["codecs"]]
        assert codecs[-1] == "crc32c", (name, codecs)
        if not name.startswith("done"):
            assert "blosc" in codecs, (name, codecs)
    # a constant block compresses to almost nothing (noise does not: no claim on it)
    from gigapatch.tiling import Box

    st.write("levels/0", Box(0, 0, 64, 64), np.full((3, 64, 64), 0.25, np.float32))
    assert _chunk_file(st, "levels/0", 0, 0).stat().st_size < 3 * 64 * 64 * 4 / 20


def test_markers_are_written_after_their_data_is_flushed(tmp_path, monkeypatch):
    # mutants killed: marker written before the data; data chunks never fsynced (a machine
    # crash could leave a marker without its chunk)
    import os

    from gigapatch.storage import runstore
    from gigapatch.tiling import Box

    st = _store(tmp_path / "run", (128, 128), "k")
    chunk = _chunk_file(st, "levels/0", 1, 0)
    marker = st.path / "done/0/c/1/0"
    synced = {}
    real_fsync = os.fsync

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        synced.setdefault(path, marker.exists())  # was the marker there already?
        return real_fsync(fd)

    monkeypatch.setattr(runstore.os, "fsync", fsync)
    st.write("levels/0", Box(64, 0, 128, 64), np.ones((1, 64, 64), np.float32))
    st.mark_done("done/0", 1, 0)
    # the chunk file and its folder were flushed while no marker existed; the marker too
    assert synced[str(chunk)] is False and synced[str(chunk.parent)] is False
    assert str(marker) in synced


def test_done_markers_zeroed_count_as_not_done(tmp_path):
    st, _, _ = _filled(tmp_path)
    f = st.path / "done/0/c/1/1"
    f.write_bytes(bytes(len(f.read_bytes())))
    mask = st.done_mask("done/0")
    assert mask.tolist() == [[True, True], [True, False]]
    assert not st.is_done("done/0", 1, 1)


def test_reference_damage_says_delete_the_run_dir(tmp_path):
    from gigapatch.errors import GigapatchError
    from gigapatch.storage.runstore import CorruptChunkError, RunStore

    st, _, _ = _filled(tmp_path)
    f = st.path / "reference/c/0/0/0"
    f.write_bytes(bytes(len(f.read_bytes())))
    st = RunStore.open(st.path)
    with pytest.raises(CorruptChunkError) as exc:
        st.reference()
    with pytest.raises(GigapatchError, match="delete"):
        st.invalidate(exc.value)
