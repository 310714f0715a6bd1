"""Tile grids, boxes and the halo derivation (numpy only, no sampling)."""

import numpy as np
import pytest

from gigapatch.tiling import Box, TileGrid, chunk_span, grid_for_level


def test_box_ops():
    b = Box(10, 20, 30, 50)
    assert b.shape == (20, 30) and b.area == 600
    assert b.grow(4) == Box(6, 16, 34, 54)
    assert b.grow(40).clip((35, 60)) == Box(0, 0, 35, 60)
    assert Box(5, 5, 8, 8).relative_to(Box(4, 2, 9, 9)) == Box(1, 3, 4, 6)
    assert b.intersects(Box(29, 49, 40, 60)) and not b.intersects(Box(30, 0, 40, 60))
    assert b.contains(Box(11, 21, 29, 49)) and not b.contains(Box(9, 21, 29, 49))
    with pytest.raises(ValueError):
        Box(5, 0, 4, 3)


@pytest.mark.parametrize("h,w,tile,halo", [(150, 130, 64, 32), (130, 150, 128, 12),
                                           (64, 64, 64, 0), (1, 7, 2, 2)])
def test_grid_covers_level_once_and_windows_are_even(h, w, tile, halo):
    g = TileGrid(h, w, tile, halo)
    assert np.array_equal(g.coverage(), np.ones((h, w), np.int32))
    assert len(g) == g.shape[0] * g.shape[1] == len(list(g))
    for t in g:
        assert t.window.contains(t.core)
        assert t.window.y0 % 2 == 0 and t.window.x0 % 2 == 0
        assert t.core.y0 % tile == 0 and t.core.x0 % tile == 0
        # the window is the core grown by the halo, clipped to the level
        assert t.window == t.core.grow(halo).clip((h, w))
        c = t.core_in_window
        assert (c.height, c.width) == t.core.shape


def test_tiles_under_and_chunk_span():
    g = TileGrid(300, 200, 64, 16)
    assert list(chunk_span(0, 64, 64)) == [0]
    assert list(chunk_span(63, 65, 64)) == [0, 1]
    assert list(chunk_span(5, 5, 64)) == []
    assert g.tiles_under(Box(60, 0, 130, 10)) == [(0, 0), (1, 0), (2, 0)]
    assert g.tiles_under(Box(-50, -50, 1000, 1000)) == [(iy, ix) for iy in range(5)
                                                        for ix in range(4)]


def test_overhead_and_whole_grid():
    g = TileGrid(1024, 1024, 256, 32)
    # inner tiles compute (256 + 64)^2, edge tiles less
    assert 1.0 < g.overhead() < (320 / 256) ** 2
    whole = grid_for_level(33, 38, tile=64, halo=30, whole=True)
    assert len(whole) == 1 and whole.tile_at(0, 0).window == Box(0, 0, 33, 38)
    assert whole.overhead() == 1.0
    with pytest.raises(ValueError):
        TileGrid(10, 10, 64, 3)  # odd halo: window origins would leave the 2x grid


def test_halo_is_derived_from_sampler_parameters(monkeypatch):
    from gigapatch.config import load_config
    from gigapatch.diffusion.generator import level_halo
    from gigapatch.diffusion.pyramid import BLUR_RADIUS
    from gigapatch.pipeline import plan as plan_mod

    for p, t in [(5, 3), (15, 10), (7, 1)]:
        cfg = load_config("default", [f"sampler.patch_size={p}", f"sampler.steps={t}"])
        want = t * (p - 1) + (t - 1) * BLUR_RADIUS
        want += want % 2
        assert plan_mod.sampler_halo(cfg, True) == want == level_halo(p, t, True)
        assert plan_mod.sampler_halo(cfg, False) == t * (p - 1) + (t * (p - 1)) % 2
    # a backend's extra halo comes from the diffusion package, not from the pipeline
    monkeypatch.setattr(plan_mod, "backend_extra_halo", lambda cfg, backend: 7)
    cfg = load_config("default", ["sampler.patch_size=5", "sampler.steps=3"])
    assert plan_mod.sampler_halo(cfg, True) == level_halo(5, 3, True) + 8


def test_plan_global_and_tiled_levels():
    from gigapatch.config import load_config
    from gigapatch.pipeline import make_plan

    cfg = load_config("default", ["sampler.patch_size=5", "sampler.steps=3",
                                  "tiling.global_max_pixels=5000"])
    plan = make_plan((40, 44), (130, 150), 3, cfg, seed=0, ref_digest="x", tile=64,
                     force_tiled=None)
    modes = [lv.mode for lv in plan.levels]
    assert modes[0] == "global" and modes[-1] == "tiled"
    assert all(lv.halo == 0 for lv in plan.levels if lv.mode == "global")
    assert plan.levels[-1].grid.shape == (3, 3)
    forced = make_plan((40, 44), (130, 150), 3, cfg, seed=0, ref_digest="x", tile=64,
                       force_tiled=True)
    assert all(lv.mode == "tiled" for lv in forced.levels)
    assert forced.run_key != plan.run_key
    other_seed = make_plan((40, 44), (130, 150), 3, cfg, seed=1, ref_digest="x", tile=64,
                           force_tiled=True)
    assert other_seed.run_key != forced.run_key
