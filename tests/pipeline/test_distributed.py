"""The tiled run on a dask distributed cluster (two local worker processes) equals the
local run."""

import numpy as np


from .tiny import run as _run


def test_distributed_local_cluster(ref, cfg, tiled64, tmp_path):
    from distributed import LocalCluster

    from gigapatch.pipeline import read_result

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        res = _run(ref, cfg, tmp_path / "run", tile=64, cluster=cluster.scheduler_address)
    assert res.tasks_computed == res.tasks_total
    _, img64 = tiled64
    # byte for byte: one-thread worker processes and the local run (all torch threads)
    # give the same image (diffusion/numerics.py)
    assert np.array_equal(read_result(tmp_path / "run"), img64)
