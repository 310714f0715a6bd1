"""A batch gives the same bytes on 1 worker process with 2 torch threads as on 2 worker
processes with 1 thread each (the local cluster's split of this 2-core machine; issue 14
item 1 through the batch path).

The balloons item (a 160x120 crop, default preset with the fast backend, T=3) is one
whose output moves with the torch thread count without ``diffusion.numerics``'s
one-MKL-thread GEMMs: 21 values changed, by up to 2 grey levels, between 1 and 2 threads
in one process (measured with the guard switched off, 2026-11-27).
"""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from gigapatch.pipeline.batch import run_batch
from gigapatch.pipeline.clusters import open_client
from gigapatch.pipeline.manifest import load_manifest
from gigapatch.storage import read_image

DATA = Path(__file__).resolve().parents[1] / "data"
CHEAP = ["sampler.patch_size=5", "sampler.steps=3", "sampler.eta=0.5"]


def _threads(client) -> set[int]:
    import torch

    return set(client.run(torch.get_num_threads).values())


def test_one_worker_two_threads_equals_two_workers_one_thread(tmp_path):
    """Kills: GEMMs whose summation order follows the thread count (numerics'
    one-thread guard removed: the balloons item differs); a worker thread count that is
    not the one asked for (the check on the workers' torch threads)."""
    shutil.copy(DATA / "wild_bush_crop.png", tmp_path / "bush.png")
    Image.open(DATA / "balloons.png").crop((0, 0, 160, 120)).save(tmp_path / "balloons.png")
    outs = {}
    for workers, threads in ((1, 2), (2, 1)):
        d = tmp_path / f"w{workers}"
        d.mkdir()
        (d / "out").mkdir()
        (d / "m.yaml").write_text(
            "items:\n"
            "  - {reference: ../balloons.png, output: out/balloons.png, "
            "set: [denoiser.backend=fast, sampler.steps=3]}\n"
            f"  - {{reference: ../bush.png, output: out/bush.png, size: 64x48, seeds: [0, 1], "
            f"set: {CHEAP}}}\n")
        jobs = load_manifest(d / "m.yaml")
        with open_client(workers=workers, threads=threads, device="cpu") as h:
            assert _threads(h.client) == {threads}
            res = run_batch(jobs, h.client, batch_dir=d / "b", device="cpu", progress=False)
        assert res.counts["done"] == len(jobs) == 3, [r.error for r in res.rows]
        outs[workers] = {Path(j.output).name: read_image(j.output)[0] for j in jobs}
    assert outs[1].keys() == outs[2].keys()
    for name in outs[1]:
        assert np.array_equal(outs[1][name], outs[2][name]), name
