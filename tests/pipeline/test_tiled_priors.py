"""Tiled == whole with the composition priors on (position prior on every level, partial-
noise start), with its negative control: a position prior that took window-local instead of
global positions gives tiles that no longer match."""

import numpy as np

from gigapatch.config import load_config
from gigapatch.storage import quantise

from ..helpers import texture
from .tiny import OVERRIDES, SEED, SIZE, run as _run

PRIORS = ["prior.position_strength=100", "prior.position_axes=xy", "prior.position_levels=3",
          "prior.t0=0.6"]


def test_tiled_equals_whole_with_priors_on(tmp_path, monkeypatch):
    from gigapatch.api import generate
    from gigapatch.diffusion import backends
    from gigapatch.diffusion.fast import FastDenoiser
    from gigapatch.pipeline import read_result

    ref = ((texture(40, 44) + 1) / 2).permute(1, 2, 0).numpy()  # structured, unlike the sky
    cfg = load_config("default", OVERRIDES + PRIORS)
    whole = generate(ref, size=SIZE, seed=SEED, config=cfg, device="cpu")
    plain = generate(ref, size=SIZE, seed=SEED, config=load_config("default", OVERRIDES),
                     device="cpu")
    assert np.abs(whole - plain).max() > 0.2  # the priors change the image
    res = _run(ref, cfg, tmp_path / "run", tile=64, workers=1, tiled=True)
    assert res.plan.grids[-1].shape == (3, 3)  # really tiled
    assert [lv.backend for lv in res.plan.levels] == ["exact", "exact", "fast"]
    # the finest level is stored quantised: it equals the quantised whole-image sample
    assert np.array_equal(quantise(read_result(tmp_path / "run"), 8), quantise(whole, 8))
    # negative control: window-local positions (origin dropped) break the equality
    bind = backends._PositionDenoise.bind  # exact levels: the origin serves the prior only
    monkeypatch.setattr(backends._PositionDenoise, "bind",
                        lambda self, **kw: bind(self, **{**kw, "origin": (0, 0)}))
    coords = FastDenoiser._query_coords  # fast level: the origin also keys probes; keep it

    def local_coords(self, rows, cols):
        origin, self.origin = self.origin, (0, 0)
        try:
            return coords(self, rows, cols)
        finally:
            self.origin = origin

    monkeypatch.setattr(FastDenoiser, "_query_coords", local_coords)
    _run(ref, cfg, tmp_path / "bad", tile=64, workers=1, tiled=True)
    assert np.abs(read_result(tmp_path / "bad") - whole).max() > 2e-2


USAGE = ["prior.usage_strength=3", "prior.usage_levels=3"]


def test_tiled_equals_whole_with_usage_on(tmp_path, monkeypatch):
    """The usage prior on every level (exact, exact, fast): each tile weighs the entries by
    the counts of the WHOLE level's pilot, so tiles match the whole image. Negative
    control: counts from the tile's own window (a tile-local pilot) break the equality."""
    from gigapatch.api import generate
    from gigapatch.pipeline import read_result, tasks

    ref = ((texture(40, 44) + 1) / 2).permute(1, 2, 0).numpy()
    cfg = load_config("default", OVERRIDES + USAGE)
    whole = generate(ref, size=SIZE, seed=SEED, config=cfg, device="cpu")
    plain = generate(ref, size=SIZE, seed=SEED, config=load_config("default", OVERRIDES),
                     device="cpu")
    assert np.abs(whole - plain).max() > 0.2  # the usage term changes the image
    res = _run(ref, cfg, tmp_path / "run", tile=64, workers=1, tiled=True)
    assert res.plan.grids[1].shape != (1, 1) and res.plan.grids[-1].shape == (3, 3)
    assert [lv.backend for lv in res.plan.levels] == ["exact", "exact", "fast"]
    assert np.array_equal(quantise(read_result(tmp_path / "run"), 8), quantise(whole, 8))
    monkeypatch.setattr(tasks, "_pilot_window", lambda window, hw: window)
    _run(ref, cfg, tmp_path / "bad", tile=64, workers=1, tiled=True)
    assert np.abs(read_result(tmp_path / "bad") - whole).max() > 2e-2
