"""A tileable output through the tiled pipeline: edge tiles take their halo from the
opposite side, so a tiled run equals the whole-image torus for any tile size."""

from __future__ import annotations

import numpy as np
import pytest

from gigapatch.config import load_config
from gigapatch.metrics import wrap_seam_score
from gigapatch.pipeline import read_result
from gigapatch.storage import quantise

from .tiny import OVERRIDES, SEED, SIZE, run as _run


def _cfg(backend):
    return load_config("default", OVERRIDES + ["sampler.tileable=xy",
                                               f"denoiser.backend={backend}"])


@pytest.fixture(scope="module")
def whole(ref):
    from gigapatch.api import generate

    return {b: generate(ref, size=SIZE, seed=SEED, config=_cfg(b), device="cpu")
            for b in ("exact", "auto")}


@pytest.mark.parametrize("tile", [64, 128])
def test_tiled_tileable_equals_the_whole_torus(ref, whole, tile, tmp_path):
    # kills: edge windows clipped (no halo from the other side), the coarse read not
    # wrapping, noise not keyed modulo the level, global levels not sampled on the torus
    res = _run(ref, _cfg("exact"), tmp_path / "run", tile=tile, tiled=True)
    assert any(lv.mode == "tiled" and len(g) > 1 for lv, g in zip(res.plan.levels,
                                                                 res.plan.grids))
    img = read_result(tmp_path / "run")
    assert img.shape == whole["exact"].shape == (132, 152, 3)  # 150x130 rounded to x4
    assert np.array_equal(quantise(img, 8), quantise(whole["exact"], 8))
    assert 0.75 < wrap_seam_score(img).image < 1.33


def test_tiled_tileable_fast_backend_within_one_level(ref, whole, tmp_path):
    # the fast backend's query grid and candidate propagation on the whole torus are the
    # torus's, a tile's are its window's (plain grid ends, the window's last position), so
    # a few pixels differ by one 8-bit level from the tiles
    res = _run(ref, _cfg("auto"), tmp_path / "run", tile=64, tiled=True)
    assert "fast" in [lv.backend for lv in res.plan.levels]
    d = np.abs(quantise(read_result(tmp_path / "run"), 8).astype(int)
               - quantise(whole["auto"], 8).astype(int))
    assert d.max() <= 1 and (d > 0).mean() < 0.01
