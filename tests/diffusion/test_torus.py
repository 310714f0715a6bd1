"""Periodic levels (diffusion.torus): the image denoiser, the blend's blur and the coarse
upsampling on a torus, against written-out oracles, and a whole tileable level sampled on
a torus equals the roll of itself when its noise is rolled."""

from __future__ import annotations

import pytest
import torch

from gigapatch.config import load_config
from gigapatch.diffusion.backends import make_denoise as _make_denoise
from gigapatch.diffusion.denoiser import fold_window, posterior_mean_exact
from gigapatch.diffusion.generator import sample_level
from gigapatch.diffusion.patch_index import PatchIndex
from gigapatch.diffusion.pyramid import blur2, up2
from gigapatch.diffusion.schedules import flow_linear, signal_scale
from gigapatch.diffusion.torus import (PeriodicDenoiser, Wrap, circular_pad,
                                       periodic_blur2, periodic_size, periodic_up2)
from gigapatch.pipeline.plan import denoiser_settings

from ..helpers import rand

#: the default config's denoiser settings
SETTINGS = denoiser_settings(load_config())


def make_denoise(index, **kw):
    """The exact-backend image denoiser with the default settings."""
    return _make_denoise(index, backend="exact", settings=SETTINGS, **kw)


def _torus_denoise_oracle(x, index, p, rho, s, wrap):
    """Every patch of the torus (all H*W positions on a wrapped axis, H-P+1 on a plain
    one) denoised and folded back with indices modulo the size: a plain loop."""
    c, h, w = x.shape
    a = signal_scale(s)
    win = fold_window(p, rho)
    num = torch.zeros((c, h, w), dtype=torch.float64)
    den = torch.zeros((h, w), dtype=torch.float64)
    ys = range(h) if wrap.y else range(h - p + 1)
    xs = range(w) if wrap.x else range(w - p + 1)
    for y0 in ys:
        ry = torch.arange(y0, y0 + p) % h
        for x0 in xs:
            rx = torch.arange(x0, x0 + p) % w
            q = x[:, ry][:, :, rx].reshape(1, -1)
            out = posterior_mean_exact(q, index, a, s).reshape(c, p, p).double()
            for i in range(p):
                num[:, ry[i], rx] += out[:, i] * win[i]
                den[ry[i], rx] += win[i].double()
    return (num / den).float()


@pytest.mark.parametrize("wrap", [Wrap(y=True, x=True), Wrap(x=True), Wrap(y=True)])
def test_periodic_denoiser_is_the_circular_unfold_and_fold(wrap):
    # kills: padding by P-2 (a patch missing per pixel), padding one side only, a crop off
    # by one, the fold not wrapping (plain denoiser)
    p = 5
    index = PatchIndex.from_image(rand(2, 12, 12, seed=1), p)
    x = rand(2, 9, 11, seed=2)
    den = PeriodicDenoiser(make_denoise(index, patch_size=p, rho=0.4), p, wrap)
    got = den(x, 0.5)
    want = _torus_denoise_oracle(x, index, p, 0.4, 0.5, wrap)
    assert got.shape == x.shape
    assert (got - want).abs().max() < 1e-5


def test_circular_pad_any_size():
    x = torch.arange(6.0).reshape(1, 2, 3)
    got = circular_pad(x, 3, 4)
    rows = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0])  # -3..4 mod 2
    cols = torch.tensor([2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0])  # -4..6 mod 3
    assert torch.equal(got, x[:, rows][:, :, cols])


def _roll_equivariant(f, x, shift, scale=1):
    """f(roll(x, s)) == roll(f(x), scale * s)"""
    a = f(torch.roll(x, shift, dims=(1, 2)))
    b = torch.roll(f(x), (scale * shift[0], scale * shift[1]), dims=(1, 2))
    return (a - b).abs().max().item()


def test_periodic_blur_is_shift_equivariant_across_the_wrap_and_blur2_inside():
    # a linear filter on a torus: commutes with every even roll (the 2x grid), and equals
    # the plain blur2 away from the edges. kills: the replicate border (plain blur2), an
    # odd pad (the 2x grid shifted by one), a crop off by one
    x = rand(3, 40, 36, seed=3)
    wrap = Wrap(y=True, x=True)
    f = lambda t: periodic_blur2(t, wrap)  # noqa: E731
    for shift in [(2, 0), (0, 6), (14, 22)]:
        assert _roll_equivariant(f, x, shift) < 1e-5
    assert _roll_equivariant(blur2, x, (2, 6)) > 1e-2  # the plain blur is not
    r = 12
    torch.testing.assert_close(f(x)[:, r:-r, r:-r], blur2(x)[:, r:-r, r:-r])
    # one wrapped axis: the other keeps blur2's border
    fx = periodic_blur2(x, Wrap(x=True))
    assert _roll_equivariant(lambda t: periodic_blur2(t, Wrap(x=True)), x, (0, 4)) < 1e-5
    torch.testing.assert_close(fx[:, :, r:-r], blur2(x)[:, :, r:-r])


def test_periodic_up2_is_shift_equivariant_across_the_wrap():
    # kills: no wrap (replicate border), a crop off by one coarse pixel
    c = rand(3, 10, 9, seed=4)
    wrap = Wrap(y=True, x=True)
    f = lambda t: periodic_up2(t, wrap)  # noqa: E731
    for shift in [(1, 0), (0, 1), (3, 7)]:
        assert _roll_equivariant(f, c, shift, scale=2) < 1e-5
    torch.testing.assert_close(f(c)[:, 8:-8, 8:-8], up2(c)[:, 8:-8, 8:-8])


def test_periodic_size_halves_exactly_at_every_level():
    assert periodic_size((38, 50), 3, Wrap(y=True, x=True)) == (40, 52)
    assert periodic_size((38, 50), 3, Wrap(x=True)) == (38, 52)
    assert periodic_size((38, 50), 1, Wrap(y=True, x=True)) == (38, 50)
    assert periodic_size((64, 64), 5, Wrap(y=True, x=True)) == (64, 64)


def test_periodic_level_rolled_noise_gives_the_rolled_level():
    # a tileable level is a sample of a process on the torus: with the noise and the coarse
    # level rolled, the output is the roll of the output (any offset on a level without a
    # blend, even offsets with one). kills: any part that does not wrap (denoiser, blend)
    p, t = 5, 3
    index = PatchIndex.from_image(rand(3, 16, 16, seed=5), p)
    wrap = Wrap(y=True, x=True)
    h, w = 20, 24
    sig = flow_linear(t)
    noise = rand(t + 1, 3, h, w, seed=6)  # x_T and one z per step

    def run(shift, coarse):
        rolled = torch.roll(noise, shift, dims=(2, 3))
        den = PeriodicDenoiser(make_denoise(index, patch_size=p, rho=0.2), p, wrap)
        up = None
        if coarse is not None:
            c = torch.roll(coarse, (shift[0] // 2, shift[1] // 2), dims=(1, 2))
            up = periodic_up2(c, wrap)
        from gigapatch.diffusion.sampling import laplacian_blend, sample_ddim

        blend = None if up is None else laplacian_blend(up, lambda v: periodic_blur2(v, wrap))
        return sample_ddim(den, rolled[0], sig, eta=0.7, noise=lambda i: rolled[i + 1],
                           blend=blend)

    whole = run((0, 0), None)
    for shift in [(3, 0), (0, 5), (7, 11)]:
        got = run(shift, None)
        assert (got - torch.roll(whole, shift, dims=(1, 2))).abs().max() < 1e-4
    coarse = rand(3, h // 2, w // 2, seed=7) * 0.5
    whole = run((0, 0), coarse)
    for shift in [(2, 0), (0, 6), (10, 14)]:
        got = run(shift, coarse)
        assert (got - torch.roll(whole, shift, dims=(1, 2))).abs().max() < 1e-4
    # and the plain sampler does not have the property (the test can fail)
    den = make_denoise(index, patch_size=p, rho=0.2)
    a = sample_level(den, box=(0, 0, h, w), channels=3, seed=1, level=0, sigmas=sig, eta=0.0)
    from gigapatch.diffusion.noise import INIT_STEP, gaussian_noise
    from gigapatch.diffusion.sampling import sample_ddim

    x0 = gaussian_noise(1, 0, INIT_STEP, (0, 0, h, w), 3)
    b = sample_ddim(den, torch.roll(x0, (3, 5), dims=(1, 2)), sig)
    assert (b - torch.roll(a, (3, 5), dims=(1, 2))).abs().max() > 1e-2


# ---- windows of a torus: tiles whose halo comes from the opposite side ----------------

def _torus_level(index, p, t, hw, coarse, seed, box=None):
    """A whole tileable level sampled on the torus (box: the level, or a rolled layout)."""
    wrap = Wrap(y=True, x=True)
    box = box or (0, 0, *hw)
    den = PeriodicDenoiser(make_denoise(index, patch_size=p, rho=0.2), p, wrap)
    up = periodic_up2(coarse, wrap)
    oy, ox = box[0], box[1]
    up = torch.roll(up, (-oy, -ox), dims=(1, 2))[:, :hw[0], :hw[1]]
    return sample_level(den, box=box, channels=3, seed=seed, level=1, sigmas=flow_linear(t),
                        eta=0.5, coarse_up=up, wrap=wrap, period=hw)


def _tiled_level(index, p, t, hw, coarse, seed, tile, halo):
    """The same level tile by tile: each window is the core grown by ``halo`` WITHOUT
    clipping, its pixels, noise and coarse values taken modulo the level's size."""
    from gigapatch.diffusion.generator import coarse_box_for, upsample_to_box

    h, w = hw
    den = make_denoise(index, patch_size=p, rho=0.2)
    out = torch.full((3, h, w), float("nan"))
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            win = (y0 - halo, x0 - halo, y1 + halo, x1 + halo)
            cb = coarse_box_for(win, coarse.shape[1:], (True, True))
            ch, cw = coarse.shape[1:]
            c = coarse[:, torch.arange(cb[0], cb[2]) % ch][:, :, torch.arange(cb[1], cb[3]) % cw]
            up = upsample_to_box(c, cb[:2], win)
            x = sample_level(den, box=win, channels=3, seed=seed, level=1,
                             sigmas=flow_linear(t), eta=0.5, coarse_up=up, period=hw)
            out[:, y0:y1, x0:x1] = x[:, halo:halo + y1 - y0, halo:halo + x1 - x0]
    return out


def test_tiles_with_wrapped_halos_equal_the_whole_torus():
    # tiled == whole with wrapping for 2 tile sizes; a too-small halo fails (negative
    # control). kills: noise not keyed modulo the level (edge tiles draw other noise),
    # coarse windows clipped instead of wrapped, the whole level not a torus
    from gigapatch.diffusion.generator import level_halo

    p, t = 5, 3
    index = PatchIndex.from_image(rand(3, 16, 16, seed=8), p)
    hw = (40, 36)
    coarse = rand(3, 20, 18, seed=9) * 0.5
    whole = _torus_level(index, p, t, hw, coarse, 4)
    halo = level_halo(p, t, blended=True)
    for tile in (16, 24):
        got = _tiled_level(index, p, t, hw, coarse, 4, tile, halo)
        assert (got - whole).abs().max() < 1e-4, tile
    bad = _tiled_level(index, p, t, hw, coarse, 4, 16, 4)
    assert (bad - whole).abs().max() > 1e-3


def test_rolled_layout_is_the_roll_of_the_whole_torus():
    # a tileable output rolled by an (even) offset is the same process: sampling the
    # window [dy, dy + H) x [dx, dx + W) of the torus gives the roll of the whole level.
    # kills: period not reaching the noise (sample_level's period wiring)
    p, t = 5, 3
    index = PatchIndex.from_image(rand(3, 16, 16, seed=10), p)
    hw = (24, 28)
    coarse = rand(3, 12, 14, seed=11) * 0.5
    whole = _torus_level(index, p, t, hw, coarse, 6)
    for dy, dx in [(6, 0), (0, 10), (14, 22)]:
        got = _torus_level(index, p, t, hw, coarse, 6, box=(dy, dx, dy + hw[0], dx + hw[1]))
        want = torch.roll(whole, (-dy, -dx), dims=(1, 2))
        assert (got - want).abs().max() < 1e-4, (dy, dx)
