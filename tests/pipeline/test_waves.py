"""A tiled run's graph is built and computed in waves of bounded size (issue 12 item 3:
planning memory and time independent of the tile count); the done markers are read from
a listing of the store, not one lookup per tile.

- every wave has at most ``max_tasks`` tasks, together they are exactly the whole graph,
  and every edge either stays inside a wave or comes from an EARLIER wave (so computing
  the waves in order is computing the graph);
- a run computed in waves of 2 tasks is byte-identical to the tiny run's one-wave output
  (and so to the whole-image oracle, tests/pipeline/test_tiled_run.py);
- ``done_mask`` from the listing equals the markers: set, cleared, torn.
"""

import numpy as np

from gigapatch.pipeline import read_result, run
from gigapatch.pipeline.graph import build_graph, iter_graphs
from gigapatch.pipeline.run import TiledJob, TiledOptions

from .tiny import SEED, SIZE, run as _run


def _deps(task, keys):
    return [a for a in task[2:] if isinstance(a, str) and a in keys]


def _job(ref, cfg, run_dir):
    return TiledJob.prepare(ref, (SIZE[1], SIZE[0]), None, seed=SEED, config=cfg,
                            device="cpu",
                            options=TiledOptions(run_dir=run_dir, tile=64, tiled=True))


def test_waves_are_bounded_and_in_topological_order(ref, cfg, tmp_path):
    """Kills: a wave over its bound (memory grows with the tile count); a task put in a
    wave before one it depends on; a task lost or repeated at a wave boundary."""
    job = _job(ref, cfg, tmp_path / "run")
    try:
        whole = build_graph(job.plan, job.spec, job.store)
        waves = list(iter_graphs(job.plan, job.spec, job.store, max_tasks=3))
    finally:
        job.release()
    assert len(whole.keys) > 6 and len(waves) == -(-len(whole.keys) // 3)
    assert all(len(w.keys) <= 3 for w in waves)
    assert [k for w in waves for k in w.keys] == whole.keys
    wave_of = {k: n for n, w in enumerate(waves) for k in w.keys}
    all_keys = set(whole.keys)
    dropped = 0
    for k in whole.keys:
        deps = _deps(whole.dsk[k], all_keys)
        kept = _deps(waves[wave_of[k]].dsk[k], all_keys)
        assert all(wave_of[d] == wave_of[k] for d in kept)   # edges inside the wave
        assert set(kept) == {d for d in deps if wave_of[d] == wave_of[k]}
        assert all(wave_of[d] < wave_of[k] for d in set(deps) - set(kept))
        dropped += len(set(deps) - set(kept))
    assert dropped > 0  # the bound really cut edges


def test_run_in_waves_of_two_equals_one_wave(ref, cfg, tiled64, tmp_path, monkeypatch):
    """Kills: waves computed out of order or a wave's dropped edge to a task not yet
    computed (a tile reads a coarse window not written yet: the output differs or a
    chunk is missing)."""
    calls = []
    real = run._execute_local

    def counting(graph, workers, prog, **kw):
        calls.append(len(graph.keys))
        return real(graph, workers, prog, **kw)

    monkeypatch.setattr(run, "WAVE_TASKS", 2)
    monkeypatch.setattr(run, "_execute_local", counting)
    res = _run(ref, cfg, tmp_path / "run", tile=64, workers=2)
    assert len(calls) > 3 and max(calls) <= 2
    assert res.tasks_computed == res.tasks_total == sum(calls)
    assert np.array_equal(read_result(tmp_path / "run"), tiled64[1])


def test_done_mask_from_the_listing_equals_the_markers(ref, cfg, tmp_path):
    """Set, cleared (a 0 written: the file exists) and torn marker files. Kills: counting
    a marker file's existence as done; trusting a torn marker."""
    job = _job(ref, cfg, tmp_path / "run")
    job.release()
    store = job.store
    L = len(job.plan.levels) - 1
    ny, nx = job.plan.grids[L].shape
    assert ny * nx >= 4
    name = f"done/{L}"
    assert not store.done_mask(name).any()
    for iy, ix in [(0, 0), (0, 1), (1, 0), (ny - 1, nx - 1)]:
        store.mark_done(name, iy, ix)
    store.clear_done(name, 0, 1)
    torn = store._chunk_file(name, 1, 0)
    raw = torn.read_bytes()
    torn.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))  # its checksum no longer matches
    want = np.zeros((ny, nx), bool)
    want[0, 0] = want[ny - 1, nx - 1] = True
    assert np.array_equal(store.done_mask(name), want)
    assert np.array_equal(store.done_mask(name),
                          np.array([[store.is_done(name, y, x) for x in range(nx)]
                                    for y in range(ny)]))
