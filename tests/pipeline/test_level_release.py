"""A tiled run forgets a level's denoisers once the level's last task is done (issue 12:
a 13 MP reference at 4096^2 kept levels 5-7's indexes, ~2 GB apiece, through the finest
level: 15.2 GB peak RSS).

Mutants killed: the release never wired into the local run (denoisers left after the
run); a release that drops another level's, another reference's or another level count's
denoisers (a batch sharing the process would lose them); the progress never saying a
label is complete (or saying it early)."""

from types import SimpleNamespace

import numpy as np
import pytest

from gigapatch.pipeline import read_result
from gigapatch.pipeline.graph import label_level, level_label
from gigapatch.pipeline.progress import TileProgress
from gigapatch.pipeline.tasks import CACHE, DenoiserKey, UsageKey, release_level

from .tiny import run as _run


def test_progress_says_when_a_label_is_complete():
    prog = TileProgress({"level 1/2": 3, "pyramid": 1}, {"level 1/2": 1}, enabled=False)
    assert prog.update("level 1/2") is False   # 2 of 3 (one done before: resume)
    assert prog.update("level 1/2") is True    # 3 of 3
    assert prog.update("pyramid") is True


def test_level_labels_round_trip():
    assert level_label(2, 5) == "level 3/5" and label_level("level 3/5") == 2
    assert label_level("pyramid") is None


def test_release_drops_only_that_level_of_that_run(tmp_path):
    CACHE.clear()
    def dk(ref, n, level, backend="fast"):
        return DenoiserKey("denoiser", ref, n, level, backend, 15, 1.0, "s", "None", None,
                           "cpu")

    keys = [dk("ref", 3, 0), dk("ref", 3, 1),
            dk("ref", 3, 1, "exact"),              # the same level, other settings
            dk("other", 3, 1),                     # another reference
            dk("ref", 4, 1),                       # another level count
            ("pyramid", "ref", 3, "cpu"),
            UsageKey("usage", "run-a", 1, "cpu", (0, 0, 8, 8)),
            UsageKey("usage", "run-b", 1, "cpu", (0, 0, 8, 8)),
            ("denoiser", "ref", 3, 1, "fast")]     # not a DenoiserKey: never matched
    for k in keys:
        CACHE.get(k, lambda: object())
    spec = SimpleNamespace(ref_key="ref", run_dir="run-a", levels=[None] * 3)
    assert release_level(spec, 1) == 3
    assert set(CACHE._values) == set(keys) - {keys[1], keys[2], keys[6]}
    CACHE.clear()


@pytest.fixture()
def built(monkeypatch):
    """The levels whose shared denoiser this process builds (``CACHE`` emptied before and
    after)."""
    import gigapatch.pipeline.tasks as tasks

    CACHE.clear()
    levels = []
    real = tasks.shared_level_denoiser

    def spy(spec, level, device):
        levels.append(level)
        return real(spec, level, device)

    monkeypatch.setattr(tasks, "shared_level_denoiser", spy)
    yield levels
    CACHE.clear()


def test_a_tiled_run_leaves_no_level_denoiser(ref, cfg, tiled64, tmp_path, built):
    _run(ref, cfg, tmp_path / "run", tile=64, workers=2)
    assert built  # negative control: denoisers were cached during the run
    assert not [k for k in CACHE._values if k[0] == "denoiser"]
    assert np.array_equal(read_result(tmp_path / "run"), tiled64[1])  # same image


def test_cluster_workers_drop_a_finished_levels_denoisers(ref, cfg, tiled64, tmp_path,
                                                         built):
    """Workers in this process (``processes=False``) share ``CACHE``: after the run it
    holds no level denoiser, though every level built one (the usage levels their own,
    per run: ``usage_level_denoiser``) (mutant killed: the release never sent to the
    workers)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        _run(ref, cfg, tmp_path / "run", tile=64, cluster=cluster.scheduler_address)
    usage = set(range(cfg.prior.usage_levels)) if cfg.prior.usage_strength > 0 else set()
    assert set(built) | usage == set(range(len(tiled64[0].plan.levels)))
    assert set(built) - usage  # negative control: shared denoisers were built
    assert not [k for k in CACHE._values if k[0] == "denoiser"]
    assert np.array_equal(read_result(tmp_path / "run"), tiled64[1])


def test_a_tiled_run_with_the_usage_prior_leaves_no_usage_denoiser(ref, tmp_path,
                                                                  monkeypatch):
    """The usage prior's per-run denoisers (``UsageKey``) are released with their level
    too (mutant killed: the usage key built as a plain tuple again, which
    ``release_level`` no longer recognises)."""
    import gigapatch.pipeline.tasks as tasks
    from gigapatch.config import load_config

    from .tiny import OVERRIDES

    CACHE.clear()
    used = []
    real = tasks.usage_level_denoiser

    def spy(spec, level, *a):
        used.append(level)
        return real(spec, level, *a)

    monkeypatch.setattr(tasks, "usage_level_denoiser", spy)
    cfg = load_config("composition", OVERRIDES + ["prior.usage_levels=2"])
    _run(ref, cfg, tmp_path / "run", tile=64, workers=1)
    assert set(used) == {0, 1}  # negative control: usage denoisers were built
    assert not [k for k in CACHE._values if k[0] in ("usage", "denoiser")]
    CACHE.clear()
