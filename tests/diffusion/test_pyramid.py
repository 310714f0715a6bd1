"""The 2x pyramid filters: window equivariance and the blur's support."""

from __future__ import annotations

import torch

from gigapatch.diffusion.pyramid import BLUR_RADIUS, blur2, down2, up2

from ..helpers import rand


def test_pyramid_filters_are_window_equivariant():
    x = rand(2, 37, 29, seed=16)
    # down2 of an even-origin window = the matching crop of down2 of the whole, away from
    # the window's edges (3 coarse pixels)
    full = down2(x)
    win = down2(x[:, 10:36, 6:28])  # coarse origin (5, 3), shape (13, 11)
    torch.testing.assert_close(win[:, 3:-3, 3:-3], full[:, 8:15, 6:11])
    # likewise up2 (6 fine pixels)
    up_full = up2(full)
    up_win = up2(full[:, 4:15, 3:12])  # fine origin (8, 6), shape (22, 18)
    torch.testing.assert_close(up_win[:, 6:-6, 6:-6], up_full[:, 14:24, 12:18])
    assert full.shape[1:] == (19, 15) and up2(x).shape[1:] == (74, 58)


def test_blur_radius_bounds_the_support():
    x = torch.zeros(1, 64, 64)
    x[0, 32, 33] = 1
    support = blur2(x)[0].abs() > 0
    ys, xs = support.nonzero(as_tuple=True)
    assert (ys - 32).abs().max() <= BLUR_RADIUS and (xs - 33).abs().max() <= BLUR_RADIUS
    # constant images pass unchanged (filters sum to one)
    torch.testing.assert_close(blur2(torch.full((1, 9, 11), 0.3)), torch.full((1, 9, 11), 0.3))
