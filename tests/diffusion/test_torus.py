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


# ---- the torus's own unfold and fold: each torus patch denoised once ------------------

def _roll_fold_oracle(x, f, p, rho, wrap):
    """Written out with np.roll: the patch starting at (y0, x0) is the top-left P x P of x
    rolled by (-y0, -x0); its denoised copy, weighted, is added to the top-left of a
    zero canvas rolled back by (y0, x0). A torus smaller than P is first laid k x k times
    (the same torus) and the canvas summed back over its k x k copies."""
    import numpy as np

    xn = x.double().numpy()
    c, h, w = xn.shape
    ky = -(-p // h) if wrap[0] else 1
    kx = -(-p // w) if wrap[1] else 1
    big = np.tile(xn, (1, ky, kx))
    win = fold_window(p, rho).double().numpy()
    num = np.zeros_like(big)
    den = np.zeros(big.shape[1:])
    for y0 in range(h if wrap[0] else h - p + 1):
        for x0 in range(w if wrap[1] else w - p + 1):
            patch = np.roll(big, (-y0, -x0), axis=(1, 2))[:, :p, :p]
            out = f(torch.from_numpy(patch).float().reshape(1, -1)).double().numpy()
            canvas = np.zeros_like(big)
            canvas[:, :p, :p] = out.reshape(c, p, p) * win
            num += np.roll(canvas, (y0, x0), axis=(1, 2))
            weights = np.zeros(big.shape[1:])
            weights[:p, :p] = win
            den += np.roll(weights, (y0, x0), axis=(0, 1))
    num = num.reshape(c, ky, h, kx, w).sum((1, 3))
    den = den.reshape(ky, h, kx, w).sum((0, 2))
    return torch.from_numpy(num / den).float()


def _patch_fn(q):
    """A fixed nonlinear per-patch map (each output pixel depends on the whole patch)."""
    return torch.tanh(q * 1.7 + q.mean(1, keepdim=True) * 0.5) - q.pow(2) * 0.3


@pytest.mark.parametrize("hw,wrap", [((9, 11), (True, True)), ((9, 11), (False, True)),
                                     ((10, 8), (True, False)), ((3, 4), (True, True))])
def test_image_denoise_on_a_torus_is_the_rolled_unfold_and_fold(hw, wrap):
    # kills: the seam's patches denoised twice (the P - 1 pad on both sides: the count
    # would be (H + P - 1) per wrapped axis instead of H), a wrapped patch read without
    # the modulo, a fold that does not add the overflow back at the start, a seam copy
    # taken from the wrong kept row; (3, 4): a torus smaller than the patch (wraps twice)
    from gigapatch.diffusion.denoiser import image_denoise

    p, rho = 5, 0.4
    x = rand(2, *hw, seed=12)
    seen = []

    def f(q, ys, xs):
        seen.append(torch.stack([ys, xs], 1))
        return _patch_fn(q)

    got = image_denoise(x, f, p, rho, with_positions=True, wrap=wrap,
                        memory_budget_mb=0.01)  # several row bands
    want = _roll_fold_oracle(x, _patch_fn, p, rho, wrap)
    assert (got - want).abs().max() < 1e-5
    pos = torch.cat(seen)
    h, w = hw
    ny, nx = (h if wrap[0] else h - p + 1), (w if wrap[1] else w - p + 1)
    assert pos.shape[0] == ny * nx  # every torus patch exactly once
    assert sorted(map(tuple, pos.tolist())) == [(i, j) for i in range(ny) for j in range(nx)]


def test_native_torus_equals_the_padded_torus_bit_for_bit():
    # the exact backend's own torus (on_torus) and the generic circular pad + crop fold the
    # same terms in the same order: equal bits, so a tile running past the seam (a plain
    # window) reproduces the whole torus exactly. kills: a wrap-around fold that adds the
    # overflow in another order (equal only to rounding: the tiled == whole tests fail)
    p = 5
    index = PatchIndex.from_image(rand(3, 14, 14, seed=13), p)
    x = rand(3, 16, 18, seed=14)
    plain = make_denoise(index, patch_size=p, rho=0.3)
    for wrap in (Wrap(y=True, x=True), Wrap(x=True), Wrap(y=True)):
        native = PeriodicDenoiser(plain, p, wrap)
        padded = PeriodicDenoiser(lambda v, s: plain(v, s), p, wrap)  # no on_torus: pads
        assert native.native and not padded.native
        for s in (0.9, 0.3, 0.01):
            assert torch.equal(native(x, s), padded(x, s)), (wrap, s)


@pytest.mark.parametrize("wrap", [(True, True), (True, False), (False, True)])
def test_grid_unfold_and_fold_wrap_like_np_roll(wrap):
    # the fast backend's gather/scatter on a torus, against the np.roll oracle with the
    # same per-patch map on every stride-1 position; a stride-2 grid covers exactly the
    # even positions of a wrapped axis. kills: _grid_index without the modulo (out of
    # range or reading the next row), the fold not wrapping, the wrapped grid keeping the
    # plain window's "last position" or stopping at n - P
    from gigapatch.diffusion.fast import grid_fold, grid_unfold, query_positions

    p, rho = 5, 0.4
    x = rand(2, 9, 12, seed=15)
    h, w = x.shape[1:]
    rows = query_positions(0, h, p, 1, wrap=wrap[0])
    cols = query_positions(0, w, p, 1, wrap=wrap[1])
    assert rows.tolist() == list(range(h if wrap[0] else h - p + 1))
    q = grid_unfold(x, rows, cols, p, wrap=wrap)
    got = grid_fold(_patch_fn(q), rows, cols, p, fold_window(p, rho), (h, w), wrap=wrap)
    want = _roll_fold_oracle(x, _patch_fn, p, rho, wrap)
    assert (got - want).abs().max() < 1e-5
    assert query_positions(0, 12, p, 2, wrap=True).tolist() == [0, 2, 4, 6, 8, 10]
    assert query_positions(0, 12, p, 2).tolist() == [0, 2, 4, 6, 7]


def test_fast_backend_on_a_torus_with_all_candidates_is_the_exact_torus():
    # with every entry a candidate, stride 1 and the whole index as dictionary the fast
    # backend is the exact denoiser; on a torus too. kills: the fast backend's torus not
    # wrapping its queries or its fold (on_torus ignored), neighbours across the seam
    # propagated with a wrong offset (a wrong candidate is still exact with all of them,
    # so this checks only the fold and the queries)
    from dataclasses import replace

    p = 5
    index = PatchIndex.from_image(rand(3, 12, 12, seed=16), p)
    params = replace(SETTINGS, candidates=index.size, broad_steps=2, broad_stride=1,
                     query_stride=1, init="exhaustive", dictionary_size=10**9)
    fast = _make_denoise(index, patch_size=p, rho=0.3, backend="fast", settings=params)
    wrap = Wrap(y=True, x=True)
    den = PeriodicDenoiser(fast, p, wrap).bind(origin=(0, 0), seed=1, level=0,
                                                period=(10, 14))
    assert den.native
    x = rand(3, 10, 14, seed=17)
    for s in (1.0, 0.7, 0.4, 0.1):
        got = den(x, s)
        want = _torus_denoise_oracle(x, index, p, 0.3, s, wrap)
        assert (got - want).abs().max() < 1e-4, s
        x = 0.6 * got + 0.4 * x


def test_fast_propagation_crosses_the_seam_with_the_short_offset():
    # on a torus the first grid row's "up" neighbour is the last row, one stride away
    # across the seam: its candidates arrive shifted by +stride (not by -(H - stride), not
    # clamped onto the query's own row). kills: clamped neighbours on a wrapped axis, the
    # plain offset rows[i] - rows[i - 1 mod nr] without the shortest way round
    from dataclasses import replace

    from gigapatch.diffusion.fast import FastDenoiser, build_fast_level, query_positions

    p = 5
    index = PatchIndex.from_image(rand(3, 20, 20, seed=18), p, merge_duplicates=False)
    lv = build_fast_level(index, pca_dims=4, dictionary_size=8)
    dn = FastDenoiser(lv, patch_size=p, rho=0.3,
                      params=replace(SETTINGS, candidates=2)).on_torus((True, True))
    h, w, g = 12, 16, 2
    rows = query_positions(0, h, p, g, wrap=True)
    cols = query_positions(0, w, p, g, wrap=True)
    nr, nc = rows.numel(), cols.numel()
    # every query's candidates: the entries at reference positions (5, 5) and (6, 7)
    pmap = index.position_map
    prev = torch.tensor([[int(pmap[5, 5]), int(pmap[6, 7])]]).repeat(nr * nc, 1)
    qid = torch.tensor([0, nc - 1])  # grid (0, 0) and (0, nc - 1)
    out = dn._propagate(prev, qid, rows, cols, (h, w)).reshape(2, 4, 2)
    pos = index.positions[out]  # (q, neighbour: up, down, left, right, k, 2)
    # up (the last row, across the seam) and down: shifted by +g and -g rows
    assert pos[0, 0].tolist() == [[7, 5], [8, 7]]
    assert pos[0, 1].tolist() == [[3, 5], [4, 7]]
    # (0, 0)'s left is the last column (across the seam): +g columns; (0, nc-1)'s right
    # is the first column: -g columns
    assert pos[0, 2].tolist() == [[5, 7], [6, 9]]
    assert pos[1, 3].tolist() == [[5, 3], [6, 5]]
