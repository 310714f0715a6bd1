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
