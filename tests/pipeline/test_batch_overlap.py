"""A batch's tiled items are on the scheduler together with each other and with the small
items: two tiled items and one small item must all be running at the same time to pass a
3-party barrier (their bodies are replaced by the barrier; in-process cluster)."""

import shutil
import threading
from pathlib import Path

from gigapatch.pipeline import batch
from gigapatch.pipeline.batch import run_batch
from gigapatch.pipeline.manifest import load_manifest

DATA = Path(__file__).resolve().parents[1] / "data"
BARRIER = threading.Barrier(3, timeout=30)


def small(job, device, batch_dir):  # module level: tasks pickle it by reference
    BARRIER.wait()
    return {"seconds": 0.0, "pixels": job.pixels, "pid": 0}


def tiled(job, device, batch_dir, address, progress):
    BARRIER.wait()
    return {"seconds": 0.0, "pixels": job.pixels, "pid": 0}


def test_tiled_items_run_together_and_beside_the_small_items(tmp_path, monkeypatch):
    """Kills: tiled items one after another (the barrier breaks: 2 of 3 parties), tiled
    items submitted after the small items finished (same)."""
    from distributed import Client

    monkeypatch.setattr(batch, "run_job", small)
    monkeypatch.setattr(batch, "_run_tiled_job", tiled)
    BARRIER.reset()
    shutil.copy(DATA / "wild_bush_crop.png", tmp_path / "bush.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "m.yaml").write_text(
        "items:\n"
        "  - {reference: bush.png, output: out/t1.png, size: 64x48, tiled: true}\n"
        "  - {reference: bush.png, output: out/t2.png, size: 64x48, tiled: true}\n"
        "  - {reference: bush.png, output: out/s.png, size: 64x48}\n")
    jobs = load_manifest(tmp_path / "m.yaml")
    with Client(processes=False, n_workers=1, threads_per_worker=2,
                dashboard_address=None) as client:
        res = run_batch(jobs, client, batch_dir=tmp_path / "b", device="cpu",
                        progress=False)
    assert res.counts["done"] == 3, [r.error for r in res.rows]
