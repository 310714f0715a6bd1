"""The tiny tiled run shared by the pipeline tests: reference, config, whole-image oracle
and one finished 64 px tiled run (package scope: computed once)."""

import pytest

from gigapatch.config import load_config

from .tiny import OVERRIDES, SEED, SIZE, run as _run


@pytest.fixture(scope="package")
def ref(balloons):
    return balloons[:40, :44].copy()


@pytest.fixture(scope="package")
def cfg():
    return load_config("default", OVERRIDES)


@pytest.fixture(scope="package")
def oracle(ref, cfg):
    from gigapatch.api import generate

    return generate(ref, size=SIZE, seed=SEED, config=cfg, device="cpu")


@pytest.fixture(scope="package")
def tiled64(ref, cfg, tmp_path_factory):
    from gigapatch.pipeline import read_result

    d = tmp_path_factory.mktemp("t64") / "run"
    res = _run(ref, cfg, d, tile=64, workers=1)
    return res, read_result(d)


@pytest.fixture()
def builds(monkeypatch):
    """Counts ``PatchIndex.from_image`` calls (the index builder) in this process, with
    the process caches (tiled tasks' and the batch's levels) emptied before and after."""
    from gigapatch.diffusion import patch_index
    from gigapatch.pipeline import batch, tasks

    n = [0]
    real = patch_index.PatchIndex.from_image.__func__

    def counting(cls, *a, **k):
        n[0] += 1
        return real(cls, *a, **k)

    monkeypatch.setattr(patch_index.PatchIndex, "from_image", classmethod(counting))
    tasks.CACHE.clear()
    batch.LEVELS.clear()
    yield n
    tasks.CACHE.clear()
    batch.LEVELS.clear()
