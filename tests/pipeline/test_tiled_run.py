"""The tiled pipeline equals the whole-image sampler; resume after kill -9, refusal of
another config's run dir, the lock, the local thread policy.

Tiny runs on CPU: a 40x44 reference, P=5, T=3, eta=0.5 (so per-step noise is exercised),
output 150x130 (3 levels), tiles of 64 and 128 (fixtures in conftest.py).
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from gigapatch.config import load_config
from gigapatch.errors import GigapatchError
from gigapatch.storage import quantise

from .tiny import OVERRIDES, SEED, SIZE, run as _run


@pytest.mark.parametrize("tile,workers", [(128, 2)])
def test_tiled_equals_whole_image(ref, cfg, oracle, tiled64, tile, workers, tmp_path):
    from gigapatch.pipeline import read_result

    res64, img64 = tiled64
    assert res64.plan.grids[-1].shape == (3, 3)  # really tiled
    assert img64.shape == oracle.shape
    # the finest level is stored only quantised (output/0): it equals the quantised
    # whole-image sample exactly
    assert np.array_equal(quantise(img64, 8), quantise(oracle, 8))
    res = _run(ref, cfg, tmp_path / "run", tile=tile, workers=workers)
    assert res.tasks_computed == res.tasks_total
    img = read_result(tmp_path / "run")
    assert np.array_equal(quantise(img, 8), quantise(oracle, 8))
    # the coarser levels, kept in float32 for the next level, equal the whole-image run's
    import zarr

    q = zarr.open_array(str(tmp_path / "run" / "output" / "0"))[...]
    assert np.array_equal(np.moveaxis(q, 0, -1), np.rint(np.clip(oracle, 0, 1) * 255))
    assert not (tmp_path / "run" / "levels" / str(len(res.plan.levels) - 1)).exists()


def test_tiled_equals_whole_with_a_small_level_at_full_stride(ref, tmp_path):
    # the fast level under denoiser.full_stride_pixels queries every patch
    # (diffusion.backends.level_settings): the tiles must use the level's settings too
    from gigapatch.api import generate
    from gigapatch.pipeline import read_result

    cfg = load_config("default", OVERRIDES + ["denoiser.full_stride_pixels=20000"])
    res = _run(ref, cfg, tmp_path / "run", tile=64)
    fast = [lv for lv in res.plan.levels if lv.backend == "fast"]
    assert fast and all(lv.out_hw[0] * lv.out_hw[1] <= 20000 for lv in fast)
    whole = generate(ref, size=SIZE, seed=SEED, config=cfg, device="cpu")
    assert np.array_equal(quantise(read_result(tmp_path / "run"), 8), quantise(whole, 8))


def test_global_coarse_levels_then_tiles(ref, oracle, tmp_path):
    from gigapatch.pipeline import read_result

    cfg = load_config("default", OVERRIDES + ["tiling.global_max_pixels=3000"])
    res = _run(ref, cfg, tmp_path / "run", tile=64, tiled=None)
    assert [lv.mode for lv in res.plan.levels] == ["global", "tiled", "tiled"]
    assert np.array_equal(quantise(read_result(tmp_path / "run"), 8), quantise(oracle, 8))


def test_resume_after_kill_9(ref, cfg, tiled64, tmp_path):
    from gigapatch.pipeline import read_result
    from gigapatch.storage.runstore import RunStore

    run_dir = tmp_path / "run"
    np.save(tmp_path / "ref.npy", ref)
    # the child slows every done marker by 0.5 s so it can be killed part-way
    script = textwrap.dedent(f"""
        import time
        import numpy as np
        import pytest
        from gigapatch.api import generate_tiled
        from gigapatch.config import load_config
        from gigapatch.pipeline import TiledOptions
        from gigapatch.storage.runstore import RunStore
        mark_done = RunStore.mark_done
        def slow_mark_done(self, *a, **k):
            time.sleep(0.5)
            return mark_done(self, *a, **k)
        pytest.MonkeyPatch().setattr(RunStore, "mark_done", slow_mark_done)
        ref = np.load({str(tmp_path / 'ref.npy')!r})
        cfg = load_config("default", {OVERRIDES!r})
        generate_tiled(ref, None, size={SIZE!r}, seed={SEED}, config=cfg, device="cpu",
                       options=TiledOptions(run_dir={str(run_dir)!r}, tile=64, workers=1))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 120
        done = 0
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:
                store = RunStore.open(run_dir)
                if "run_key" not in store.attrs:
                    continue
                done = sum(int(store.done_mask(f"done/{k}").sum()) for k in range(3))
            except Exception:
                continue
            if done >= 3:
                break
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert (run_dir / "lock").exists()  # left behind by the killed run: stale, taken over
    res = _run(ref, cfg, run_dir, tile=64)
    assert 0 < res.tasks_computed < res.tasks_total
    assert not (run_dir / "lock").exists()
    _, img64 = tiled64
    assert np.array_equal(read_result(run_dir), img64)
    again = _run(ref, cfg, run_dir, tile=64)
    assert again.tasks_computed == 0


def test_other_config_refuses(ref, cfg, tiled64, tmp_path):
    res64, _ = tiled64
    with pytest.raises(GigapatchError) as exc:
        _run(ref, load_config("default", OVERRIDES + ["sampler.rho=0.3"]), res64.run_dir)
    msg = str(exc.value)
    assert "different run" in msg and "--run-dir" in msg and "delete" in msg
    assert "\n" not in msg
    with pytest.raises(GigapatchError, match="different run"):
        _run(ref, cfg, res64.run_dir, seed=SEED + 1)


def test_lock_refuses_live_owner_and_takes_over_dead(ref, cfg, tiled64):
    from gigapatch.storage.runstore import RunLock

    res64, _ = tiled64
    lock = res64.run_dir / "lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f'{{"pid": {sleeper.pid}, "host": "{socket.gethostname()}", '
                        f'"started": 0}}')
        with pytest.raises(GigapatchError, match="in use by another run"):
            _run(ref, cfg, res64.run_dir)
        # another host's lock is never taken over
        lock.write_text('{"pid": 1, "host": "elsewhere.example", "started": 0}')
        with pytest.raises(GigapatchError, match="elsewhere.example"):
            RunLock(res64.run_dir).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    lock.write_text(f'{{"pid": {sleeper.pid}, "host": "{socket.gethostname()}", '
                    f'"started": 0}}')
    res = _run(ref, cfg, res64.run_dir)  # dead owner: taken over; all done already
    assert res.tasks_computed == 0 and not lock.exists()


def test_local_threads_policy(cfg):
    from gigapatch.pipeline.run import GPU_THREADS, local_threads

    assert local_threads("cpu", None, cfg) == (1, False)
    assert local_threads("cpu", 3, cfg) == (3, False)
    # a GPU: several threads, tile tasks take turns on the device
    assert local_threads("cuda:0", None, cfg) == (GPU_THREADS, True) and GPU_THREADS > 1
    assert local_threads("cuda", 2, cfg) == (2, True)


def test_device_turns_overlap_io_with_tiles(ref, cfg, tiled64, tmp_path, monkeypatch):
    # the GPU policy exercised on the CPU: 3 threads, tiles' device work under one lock;
    # while a tile holds the device, another task's store write must be able to run
    import importlib
    import threading

    import gigapatch.pipeline.tasks as tasks
    from gigapatch.pipeline import read_result
    from gigapatch.storage.runstore import RunStore

    run_mod = importlib.import_module("gigapatch.pipeline.run")
    monkeypatch.setattr(run_mod, "local_threads", lambda device, workers, config: (3, True))
    state = {"inside": 0, "max_inside": 0, "overlapped": 0}
    guard = threading.Lock()
    busy = threading.Event()  # set while some tile holds the device
    real_sample, real_write = tasks.sample_level, RunStore.write

    def sample(*a, **k):
        with guard:
            state["inside"] += 1
            state["max_inside"] = max(state["max_inside"], state["inside"])
            busy.set()
        try:
            return real_sample(*a, **k)
        finally:
            with guard:
                state["inside"] -= 1
                if state["inside"] == 0:
                    busy.clear()

    def write(self, name, box, data):
        # Until one overlap is seen, a write waits (bounded) for a tile to be on the device:
        # with I/O beside the device work another tile starts meanwhile; a pipeline that
        # writes under the device lock never lets one start, and the test fails. (Counting
        # only writes that happened to land during a sample raced with the lock hand-over
        # on a loaded machine.)
        if state["overlapped"] == 0:
            busy.wait(10.0)
        with guard:
            if state["inside"] > 0:
                state["overlapped"] += 1
        return real_write(self, name, box, data)

    monkeypatch.setattr(tasks, "sample_level", sample)
    monkeypatch.setattr(RunStore, "write", write)
    res = _run(ref, cfg, tmp_path / "run", tile=64)
    assert res.tasks_computed == res.tasks_total
    assert state["max_inside"] == 1  # tiles never share the device
    assert state["overlapped"] >= 1  # I/O ran beside the device work
    _, img64 = tiled64
    assert np.array_equal(read_result(tmp_path / "run"), img64)


@pytest.mark.parametrize("damaged", ["output/0", "levels/1"])
def test_damaged_chunk_is_recomputed_on_resume(ref, cfg, tiled64, tmp_path, damaged):
    # a zeroed chunk of a kept run dir (and, for a level, the finest tiles that read it
    # made to run again): the same command detects it by its checksum, recomputes its tile
    # and gives the uninterrupted run's image. Mutants killed: no checksum (a grey/black
    # block in the output, exit 0); the damaged chunk's marker not cleared (the run fails
    # again and again instead of recomputing it)
    import shutil

    from gigapatch.pipeline import read_result
    from gigapatch.storage.runstore import RunStore

    res64, img64 = tiled64
    run_dir = tmp_path / "run"
    shutil.copytree(res64.run_dir, run_dir)
    f = run_dir / damaged / "c" / "0" / "1" / "1"
    f.write_bytes(bytes(len(f.read_bytes())))
    store = RunStore.open(run_dir)
    if damaged == "levels/1":  # the finest tiles around it must read it again
        for iy in range(3):
            for ix in range(3):
                store.clear_done("done/2", iy, ix)
    from gigapatch.api import generate_tiled
    from gigapatch.pipeline import TiledOptions
    from gigapatch.storage import read_image

    out = tmp_path / "out.tif"  # the TIFF writer reads every output/0 chunk
    res = generate_tiled(ref, out, size=SIZE, seed=SEED, config=cfg, device="cpu",
                         options=TiledOptions(run_dir=run_dir, tile=64, keep_run=True))
    assert res.tasks_computed >= 1
    assert store.chunk_ok(damaged, 1, 1)
    assert np.array_equal(read_result(run_dir), img64)
    img = read_image(out)
    img = np.asarray(img[0] if isinstance(img, tuple) else img)
    assert np.array_equal(quantise(img, 8), quantise(img64, 8))


def test_markers_only_after_their_chunks_are_readable(ref, cfg, tiled64, tmp_path, monkeypatch):
    # mutant killed: a task that sets its done marker before writing its chunks (a crash
    # in between would leave a marker without data)
    from gigapatch.storage.runstore import RunStore

    seen = []
    real = RunStore.mark_done

    def mark_done(self, name, iy, ix):
        if name.startswith("done/"):
            level = int(name.split("/")[1])
            arr = "output/0" if level == 2 else f"levels/{level}"
            shape = self.array(name).shape
            chunks = [(y, x) for y in range(shape[0]) for x in range(shape[1])] \
                if shape == (1, 1) and level < 2 else [(iy, ix)]
            seen.append(all(self.chunk_ok(arr, *c) for c in chunks))
        return real(self, name, iy, ix)

    monkeypatch.setattr(RunStore, "mark_done", mark_done)
    _run(ref, cfg, tmp_path / "run", tile=128)
    assert seen and all(seen)
