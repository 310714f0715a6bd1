"""A batch's tiled items resolve ``--device auto`` on a worker, not on the driver.

The driver of a cluster batch is often a login node without a GPU: the tiled items' plan
and tile tasks must use the device the workers see. Here the batch runs on an in-process
cluster whose worker threads "see" a GPU (``torch.cuda.is_available`` patched to be true
inside a dask task only) while the driver sees none; the tile task records the device it
was given (in a file) and stops.
"""

import shutil
from pathlib import Path

import pytest
import torch

from gigapatch.pipeline import graph
from gigapatch.pipeline.batch import run_batch
from gigapatch.pipeline.manifest import load_manifest

DATA = Path(__file__).resolve().parents[1] / "data"


def test_tiled_item_tiles_see_the_workers_device(tmp_path, monkeypatch):
    """Kills: resolving ``auto`` on the driver (the tile would get ``cpu``)."""
    from distributed import Client, get_worker

    def on_a_worker() -> bool:
        try:
            get_worker()
            return True
        except ValueError:
            return False

    monkeypatch.setattr(torch.cuda, "is_available", on_a_worker)
    log = tmp_path / "seen.txt"  # the task is pickled even in-process: record in a file

    def tile(spec, level, iy, ix, *deps):
        with open(log, "a") as f:
            f.write(f"{spec.device} {on_a_worker()}\n")
        raise RuntimeError("stop here: no CUDA in this test")

    monkeypatch.setattr(graph, "run_level_tile", tile)
    shutil.copy(DATA / "wild_bush_crop.png", tmp_path / "bush.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "m.yaml").write_text(
        "items:\n  - {reference: bush.png, output: out/t.png, size: 64x48, tiled: true, "
        "set: [sampler.patch_size=5, sampler.steps=3]}\n")
    jobs = load_manifest(tmp_path / "m.yaml")
    assert not torch.cuda.is_available()  # the driver has no GPU
    with Client(processes=False, n_workers=1, threads_per_worker=1,
                dashboard_address=None) as client:
        res = run_batch(jobs, client, batch_dir=tmp_path / "b", device="auto",
                        progress=False)
    assert res.counts["failed"] == 1 and "stop here" in res.rows[0].error
    seen = log.read_text().split("\n")[:-1]
    assert seen and all(line == "cuda True" for line in seen), seen
