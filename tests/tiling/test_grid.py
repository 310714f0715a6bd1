"""Tile grids, boxes and chunk spans (numpy only, no sampling)."""

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


@pytest.mark.parametrize("hw,tile,halo", [((300, 260), 64, 30), ((1000, 130), 128, 0),
                                          ((64, 64), 64, 10), ((517, 999), 192, 88)])
def test_computed_pixels_is_the_sum_of_window_areas(hw, tile, halo):
    # oracle: the per-tile sum (the closed form must not drift from it; a 10^6 x 10^6
    # plan cannot afford the per-tile loop)
    g = grid_for_level(*hw, tile=tile, halo=halo)
    assert g.computed_pixels() == sum(t.window.area for t in g)


def test_overhead_of_a_huge_grid_is_cheap():
    g = grid_for_level(10**6, 10**6, tile=1024, halo=230)
    assert len(g) == 977**2
    assert 2.0 < g.overhead() < ((1024 + 460) / 1024) ** 2


@pytest.mark.parametrize("halo", [12, 32, 80, 230])
@pytest.mark.parametrize("max_overhead", [1.1, 1.2, 1.5])
def test_auto_tile_is_the_smallest_tile_within_the_overhead_bound(halo, max_overhead):
    # kills: auto_tile rounding down (bound exceeded) or returning a larger multiple than
    # needed (a step of 512 less would still do)
    from gigapatch.tiling import auto_tile, worst_overhead

    t = auto_tile(halo, max_overhead=max_overhead)
    assert t % 512 == 0 and worst_overhead(t, halo) <= max_overhead
    assert t == 512 or worst_overhead(t - 512, halo) > max_overhead


def test_default_preset_auto_tile_is_5120():
    from gigapatch.tiling import auto_tile

    # T(P-1) + (T-1)*blur = 10*14 + 9*10 = 230 px: (1 + 460/t)^2 <= 1.2 needs t >= 4821
    assert auto_tile(230, max_overhead=1.2) == 5120


@pytest.mark.parametrize("tile,halo", [(512, 230), (1024, 230), (5120, 230), (64, 32)])
def test_worst_overhead_bounds_every_level_size(tile, halo):
    # the oracle is TileGrid.overhead (sum of the clipped windows); kills a bound that
    # forgets the clipping (4 * halo per core) or counts one halo per side only
    from gigapatch.tiling import worst_overhead

    rng = np.random.default_rng(0)
    sizes = [tile + 2, 2 * tile + 2, 3 * tile - 2] + list(rng.integers(tile, 6 * tile, 6))
    worst = 0.0
    for h in sizes:
        for w in sizes[:4]:
            g = TileGrid(int(h), int(w), tile, halo)
            worst = max(worst, g.overhead())
            assert g.overhead() <= worst_overhead(tile, halo) + 1e-12
    # and the bound is tight: nearly reached by a level just over k cores per axis
    assert worst >= 1 + 0.5 * (worst_overhead(tile, halo) - 1)
