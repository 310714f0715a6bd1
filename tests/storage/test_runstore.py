"""The run store's 2x reduction of the output pyramid."""

import numpy as np

from gigapatch.storage.runstore import reduce2_box


def test_reduce2_box_odd_edges():
    a = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    r = reduce2_box(a)
    assert r.shape == (2, 2, 3)
    assert r[0, 0, 0] == np.rint((0 + 1 + 5 + 6) / 4)
    assert r[0, 1, 2] == a[0, 2, 4]  # corner pixel averaged with itself


def _store(path, hw, key):
    from gigapatch.storage.runstore import RunStore

    return RunStore.create_or_open(path, run_key=key, meta={},
                                   reference=np.zeros((1, 4, 4), np.float32),
                                   level_shapes=[hw], grid_shapes=[(1, 1)], output_shapes=[hw],
                                   chunk=64, out_dtype="uint8")


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
    assert float(second.read("levels/0", Box(0, 0, 128, 64)).sum()) == 2 * 64 * 64
