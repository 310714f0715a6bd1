"""Tests that a wrong denoiser cannot pass (issue 9 item 3).

Each test names the mutants of ``benchmarks/mutants.py`` it kills. The oracles are the
exact denoiser (``posterior_mean_exact``), the whole-image sampler, and values written out
here from their definitions (docs/ALGORITHM.md), never the code under test.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from gigapatch.config import load_config
from gigapatch.diffusion import fast as fast_mod
from gigapatch.diffusion.backends import make_denoise as _make_denoise
from gigapatch.diffusion.denoiser import fold_window, image_denoise, posterior_mean_exact
from gigapatch.diffusion.fast import (FastDenoiser, build_fast_level, dictionary_ess,
                                      fast_extra_halo)
from gigapatch.diffusion.generator import level_halo, sample_level
from gigapatch.diffusion.noise import INIT_STEP, gaussian_noise
from gigapatch.diffusion.patch_index import PatchIndex
from gigapatch.diffusion.priors import PositionPrior
from gigapatch.diffusion.pyramid import down2
from gigapatch.diffusion.schedules import flow_linear, signal_scale
from gigapatch.pipeline.plan import denoiser_settings

from ..helpers import texture

P = 5
_texture = texture
#: the default config's denoiser settings; tests replace the fast backend's knobs
SETTINGS = denoiser_settings(load_config())


def make_denoise(idx, **kw):
    """The exact-backend image denoiser with the default settings."""
    return _make_denoise(idx, settings=SETTINGS, **kw)


def _fast_denoiser(idx: PatchIndex, **kw) -> FastDenoiser:
    prm = dict(candidates=8, broad_steps=0, query_stride=1, probes=4, broad_stride=1)
    prm.update(kw)
    lv = build_fast_level(idx, pca_dims=8, dictionary_size=64)
    return FastDenoiser(lv, patch_size=P, rho=0.2, params=replace(SETTINGS, **prm)).bind(
        origin=(0, 0), seed=1, level=1)


def test_candidate_means_are_the_exact_posterior_over_their_candidates():
    """Kills temperature4, mult_fast: each fast mean equals the exact denoiser run on the
    index of that query's own candidates (with their multiplicities)."""
    idx = PatchIndex.from_image(_texture(), P)
    assert float(idx.log_counts.max()) > 1.0  # the flat corner merged into one entry
    s = 0.5
    a = signal_scale(s)
    x = a * _texture() + s * gaussian_noise(4, 0, 0, (0, 0, 28, 32), 3)
    dn = _fast_denoiser(idx)
    dn(x, s)
    qid = torch.arange(0, 24 * 28, 3)
    xq, means, support, mode = dn.query_posterior(x, qid)
    assert mode == "candidates" and support.shape == (qid.numel(), 8)
    sensitive = 0
    for i in range(qid.numel()):
        u = torch.unique(support[i])
        sub = PatchIndex.from_patches(idx.patches[u], P, 3, idx.log_counts[u].exp())
        want = posterior_mean_exact(xq[i:i + 1], sub, a, s)
        torch.testing.assert_close(means[i:i + 1], want, atol=2e-5, rtol=1e-4)
        # the same candidates without multiplicities give a visibly different mean here
        flat = PatchIndex.from_patches(idx.patches[u], P, 3)
        sensitive += bool((posterior_mean_exact(xq[i:i + 1], flat, a, s) - want).abs().max()
                          > 1e-2)
    assert sensitive >= 3  # multiplicities matter for some tested queries


def test_fast_posterior_means_track_the_exact_denoiser_along_a_trajectory():
    """Kills nn1 (one candidate, no probes), temperature4: at every low-noise step of a
    sampling run, the fast means of all query patches are within 2% (median relative L2)
    of the exact denoiser's on the SAME noisy input, and at s = 0 within 1e-4."""
    idx = PatchIndex.from_image(_texture(), P)
    dn = _fast_denoiser(idx, broad_steps=2)
    errs = []

    class Probe:
        def bind(self, **kw):
            self.d = dn.bind(**kw)
            return self

        def __call__(self, x, s):
            out = self.d(x, s)
            a = signal_scale(s)
            q = (30 - P + 1) * (34 - P + 1)
            xq, fm, _, mode = self.d.query_posterior(x, torch.arange(q))
            if a > 0:
                ex = posterior_mean_exact(xq, idx, a, s)
                errs.append((s, mode, float(((fm - ex).norm(dim=1) / ex.norm(dim=1)).median())))
            return out

    sample_level(Probe(), box=(0, 0, 30, 34), channels=3, seed=3, level=1,
                 sigmas=flow_linear(8), eta=0.0)
    late = [e for s, mode, e in errs if s < 0.3]
    assert [m for _, m, _ in errs].count("candidates") == 6
    assert len(late) == 3 and max(late) < 0.02, errs
    assert errs[-1][2] < 1e-4, errs


def test_fold_window_values_written_out():
    """Kills window_half: the window is exp(-u^2 / (2 rho^2)) on u in [-1, 1]; for P = 5
    and rho = 0.5 the 1-D profile is (e^-2, e^-0.5, 1, e^-0.5, e^-2)."""
    g = torch.tensor([math.exp(-2.0), math.exp(-0.5), 1.0, math.exp(-0.5), math.exp(-2.0)])
    torch.testing.assert_close(fold_window(5, 0.5), torch.outer(g, g))
    # and image_denoise folds with it: a denoiser that maps patch k (row-major) to the
    # constant k^2 gives, at an interior pixel, the window-weighted mean of the k^2 covering it
    x = torch.zeros((1, 9, 9))
    out = image_denoise(x, lambda q: (torch.arange(q.shape[0], dtype=torch.float32) ** 2)[:, None]
                        .expand(-1, q.shape[1]).contiguous(), 5, 0.5)
    w2 = torch.outer(g, g)
    ks = torch.tensor([[((4 - dy) * 5 + (4 - dx)) ** 2 for dx in range(5)] for dy in range(5)],
                      dtype=torch.float32)  # patch whose offset (dy, dx) covers pixel (4, 4)
    assert float(out[0, 4, 4]) == pytest.approx(float((w2 * ks).sum() / w2.sum()), rel=1e-5)
    assert float(out[0, 4, 4]) != pytest.approx(float(ks.mean()), rel=1e-2)


def test_noise_values_written_out():
    """Kills noise_shift: the noise at given global coordinates is fixed (a pure function of
    the key), recorded below; a key shifted by a pixel reads another pixel's values."""
    got = gaussian_noise(0, 0, INIT_STEP, (0, 0, 2, 3), 1)[0]
    want = torch.tensor(NOISE_0_0_INIT)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # a window with another origin reads the same global pixels
    torch.testing.assert_close(gaussian_noise(0, 0, INIT_STEP, (1, 1, 2, 3), 1)[0],
                               want[1:, 1:], atol=0, rtol=0)


#: gaussian_noise(seed 0, level 0, INIT_STEP, rows 0-1, columns 0-2, one channel), recorded
#: from noise.py at commit 98c3d69 (SplitMix64 counter hash + Box-Muller)
NOISE_0_0_INIT = [[1.6937963962554932, 0.11595749109983444, 2.4920899868011475],
                  [3.1171929836273193, 1.0246232748031616, -1.293099045753479]]


def test_fine_level_keeps_the_coarse_level_lows():
    """Kills no_blend: with the coarse-to-fine blend, the finished fine level's down2 stays
    close to the coarse level it was blended with; without it the fine level is a fresh,
    unrelated sample."""
    idx = PatchIndex.from_image(_texture(), P)
    den = make_denoise(idx, patch_size=P, rho=0.2, backend="exact")
    coarse = sample_level(den, box=(0, 0, 20, 22), channels=3, seed=2, level=0,
                          sigmas=flow_linear(6), eta=0.0)
    from gigapatch.diffusion.generator import upsample_to_box

    up = upsample_to_box(coarse, (0, 0), (0, 0, 40, 44))
    fine = sample_level(den, box=(0, 0, 40, 44), channels=3, seed=2, level=1,
                        sigmas=flow_linear(6), eta=0.0, coarse_up=up)
    free = sample_level(den, box=(0, 0, 40, 44), channels=3, seed=2, level=1,
                        sigmas=flow_linear(6), eta=0.0)
    err = (down2(fine) - coarse)[:, 3:-3, 3:-3].pow(2).mean().sqrt()
    err_free = (down2(free) - coarse)[:, 3:-3, 3:-3].pow(2).mean().sqrt()
    assert float(err) < 0.5 * float(err_free), (float(err), float(err_free))


def test_image_denoise_reads_exactly_p_minus_1_pixels_around_a_pixel():
    """Kills halo_short_exact: the receptive field of one denoiser call, measured. A pixel's
    output changes when an input pixel P - 1 away changes and is bit-identical when one P
    away does: ``generator.step_radius`` (and so ``level_halo``) must be P - 1."""
    from gigapatch.diffusion.generator import step_radius

    idx = PatchIndex.from_image(_texture(), P)
    x = gaussian_noise(1, 0, 0, (0, 0, 21, 21), 3) * 0.5

    def den(img):
        return make_denoise(idx, patch_size=P, rho=math.inf, backend="exact")(img, 0.5)

    base = den(x)
    for dist, changes in ((P - 1, True), (P, False)):
        y = x.clone()
        y[:, 10, 10 + dist] += 1.0
        diff = float((den(y)[:, 10, 10] - base[:, 10, 10]).abs().max())
        assert (diff > 1e-6) == changes, (dist, diff)
    assert step_radius(P) == P - 1
    assert level_halo(P, 3, blended=False) == 3 * (P - 1)


class _Recording(FastDenoiser):
    """A fast denoiser that appends each call's mode to ``self.modes``."""

    modes: list = []

    def bind(self, **kw):
        out = _Recording(self.level, patch_size=self.patch_size, rho=self.rho,
                         params=self.params, origin=kw["origin"], seed=kw["seed"],
                         level_id=kw["level"])
        out.modes = self.modes
        return out

    def __call__(self, x, s):
        y = super().__call__(x, s)
        self.modes.append(self._grid[2] + ("+groups" if self._expand else ""))
        return y


@pytest.mark.parametrize("stride", [2, 6])
def test_fast_window_with_halo_matches_whole_image_and_a_short_halo_does_not(stride):
    """Tiled == whole for the fast backend, with its negative control: the window with
    ``level_halo + fast_extra_halo`` reproduces the whole image's core, one with a 2-pixel
    halo does not (so the equality is not a window that sees everything)."""
    idx = PatchIndex.from_image(_texture(), P)
    steps = 4
    h, w = 64, 70

    lv0 = build_fast_level(idx, pca_dims=6, dictionary_size=32)
    sig = flow_linear(steps).tolist()
    # the dictionary up to the step whose reference ESS falls below the threshold (s = 1/3
    # here), before the step cap (3): the ESS switch is part of what must tile
    thr = (dictionary_ess(lv0, sig[1]) + dictionary_ess(lv0, sig[2])) / 2
    modes = []

    def run(box):
        lv = build_fast_level(idx, pca_dims=6, dictionary_size=32)
        dn = _Recording(lv, patch_size=P, rho=0.2, params=replace(
            SETTINGS,
            candidates=4, broad_steps=3, broad_min_ess=thr, query_stride=stride, probes=2,
            broad_stride=max(2, stride), expand_below_ess=1e9))
        dn.modes = modes
        return sample_level(dn, box=box, channels=3, seed=5, level=1,
                            sigmas=flow_linear(steps), eta=0.0)

    whole = run((0, 0, h, w))
    # (the broad step expands its queries' heaviest groups: that must tile too)
    assert modes[:3] == ["mean", "dictionary+groups", "candidates"], modes
    need = level_halo(P, steps, blended=False) + fast_extra_halo(P, stride, steps)
    core = (30, 32, 36, 38)
    diffs = {}
    for halo in (need, 2):
        box = (core[0] - halo, core[1] - halo, core[2] + halo, core[3] + halo)
        assert box[0] > 0 and box[1] > 0 and box[2] < h and box[3] < w
        win = run(box)
        diffs[halo] = float((win[:, halo:halo + 6, halo:halo + 6]
                             - whole[:, core[0]:core[2], core[1]:core[3]]).abs().max())
    assert diffs[need] <= 1e-4, diffs
    assert diffs[2] > 1e-2, diffs


def test_group_seeding_finds_the_exact_best_entry():
    """The first late step's seeds (``init="groups"``): every entry sits in the group of
    its nearest representative, and at low noise the seeded candidates hold the exact
    posterior's best entry for nearly every query (oracle: the exact weights over the
    whole index)."""
    idx = PatchIndex.from_image(_texture(), P)
    lv = build_fast_level(idx, pca_dims=8, dictionary_size=64)
    assert torch.equal(torch.sort(lv.members).values, torch.arange(idx.size))
    for m in range(lv.dict_ids.numel()):
        grp = lv.members[lv.member_start[m]:lv.member_start[m] + lv.member_count[m]]
        d = torch.cdist(lv.proj[grp].float(), lv.proj[lv.dict_ids].float())
        assert bool((d.argmin(1) == m).all())
    s = 0.15
    a = signal_scale(s)
    x = a * _texture() + s * gaussian_noise(6, 0, 0, (0, 0, 28, 32), 3)
    dn = _fast_denoiser(idx, probes=0)
    dn(x, s)
    qid = torch.arange(24 * 28)
    xq, _, support, _ = dn.query_posterior(x, qid)
    logits = (2 * a * xq @ idx.patches.T - a * a * idx.sq_norms) / (2 * s * s) + idx.log_counts
    best = logits.argmax(1)
    hit = (support == best[:, None]).any(1).float().mean()
    assert float(hit) >= 0.9, float(hit)


def _broad_step(idx, s, monkeypatch, seeds, **kw):
    """One expanded broad step at noise s: (noisy query patches, their means, level)."""
    monkeypatch.setattr(fast_mod, "EXPAND_SEEDS", seeds)
    lv = build_fast_level(idx, pca_dims=6, dictionary_size=24)
    assert lv.dictionary is not lv.index
    prm = dict(broad_steps=5, broad_min_ess=0.0, broad_stride=1, query_stride=1,
               expand_below_ess=1e9)
    prm.update(kw)
    dn = FastDenoiser(lv, patch_size=P, rho=0.2, params=replace(SETTINGS, **prm)).bind(
        origin=(0, 0), seed=1, level=1)
    a = signal_scale(s)
    x = a * _texture() + s * gaussian_noise(7, 0, 0, (0, 0, 28, 32), 3)
    dn(x, 1.0)
    dn(x, s)
    xq, means, support, mode = dn.query_posterior(x, torch.arange(0, 24 * 28, 5))
    assert mode == "dictionary" and support is None and dn._expand
    return xq, means, lv


def test_broad_step_with_every_group_expanded_is_the_exact_posterior(monkeypatch):
    """Kills expand_double, expand_mult: with every group expanded in full, the broad
    step's mean is the exact denoiser's over the whole index (each entry once, with its
    multiplicity), though the dictionary alone is far from it."""
    idx = PatchIndex.from_image(_texture(), P)
    assert float(idx.log_counts.max()) > 1.0  # merged entries: multiplicities matter
    s = 0.4
    lv0 = build_fast_level(idx, pca_dims=6, dictionary_size=24)
    xq, means, lv = _broad_step(idx, s, monkeypatch, int(lv0.member_count.max()),
                                expand_groups=24)
    want = posterior_mean_exact(xq, idx, signal_scale(s), s)
    torch.testing.assert_close(means, want, atol=2e-5, rtol=1e-4)
    coarse = posterior_mean_exact(xq, lv.dictionary, signal_scale(s), s)
    assert float((coarse - want).abs().max()) > 0.1


def test_expanded_broad_step_is_the_exact_posterior_over_its_union(monkeypatch):
    """Kills expand_mass, expand_double, expand_mult: with the 2 heaviest groups
    expanded and at most 3 entries per group, each query's mean is the exact denoiser over
    the index built from its own union: the other representatives (multiplicity = their
    group's), and per expanded group its entries at the regular spacing j * n // 3, each
    standing for n / 3 of a group of n > 3 (its own multiplicity times n / 3)."""
    idx = PatchIndex.from_image(_texture(), P)
    s = 0.5
    a = signal_scale(s)
    xq, means, lv = _broad_step(idx, s, monkeypatch, 3, expand_groups=2)
    dic = lv.dictionary
    logits = ((2 * a * xq.double() @ dic.patches.double().T
               - a * a * (dic.patches.double() ** 2).sum(1)) / (2 * s * s)
              + dic.log_counts.double())
    subsampled = 0
    for i in range(xq.shape[0]):
        top = torch.topk(logits[i], 2).indices.tolist()
        rest = [m for m in range(dic.size) if m not in top]
        pats = [dic.patches[rest]]
        mult = [dic.log_counts[rest].exp()]
        for m in top:
            st, n = int(lv.member_start[m]), int(lv.member_count[m])
            grp = lv.members[st:st + n]
            if n > 3:
                subsampled += 1
                ids = grp[[j * n // 3 for j in range(3)]]
                pats.append(idx.patches[ids])
                mult.append(idx.log_counts[ids].exp() * (n / 3))
            else:
                pats.append(idx.patches[grp])
                mult.append(idx.log_counts[grp].exp())
        sub = PatchIndex.from_patches(torch.cat(pats), P, 3, torch.cat(mult))
        want = posterior_mean_exact(xq[i:i + 1], sub, a, s)
        torch.testing.assert_close(means[i:i + 1], want, atol=2e-5, rtol=1e-4)
    assert subsampled >= 10  # the count / EXPAND_SEEDS weighting is exercised


def test_groups_expanded_only_below_the_reference_ess():
    """Kills expand_ess_ignored: a broad step expands its queries' heaviest groups exactly
    when the level's ``dictionary_ess`` at that s is below ``expand_below_ess`` (a global
    per-level decision, like the switch from the dictionary)."""
    idx = PatchIndex.from_image(_texture(), P)
    lv = build_fast_level(idx, pca_dims=6, dictionary_size=24)
    sig = flow_linear(8).tolist()
    ess = [dictionary_ess(lv, s) for s in sig[1:5]]
    assert ess == sorted(ess, reverse=True) and ess[0] > ess[-1] * 1.5
    for thr in (ess[1] * 0.999, ess[2] * 1.001, 0.0):
        dn = _Recording(lv, patch_size=P, rho=0.2, params=replace(
            SETTINGS, broad_steps=5, broad_min_ess=0.0, broad_stride=2,
            expand_below_ess=thr))
        dn.modes = []
        sample_level(dn, box=(0, 0, 20, 22), channels=3, seed=2, level=1,
                     sigmas=flow_linear(8), eta=0.0)
        want = ["dictionary+groups" if e < thr else "dictionary" for e in ess]
        assert dn.modes[1:5] == want, (thr, dn.modes)


def test_fully_expanded_broad_step_with_a_position_prior_is_exact(monkeypatch):
    """The expanded broad step applies the position prior to both its supports (the
    representatives and the expanded entries): fully expanded, it is the exact denoiser
    with the prior's pair term over the whole index."""
    img = _texture()
    idx = PatchIndex.from_image(img, P)
    lv = build_fast_level(idx, pca_dims=6, dictionary_size=24)
    monkeypatch.setattr(fast_mod, "EXPAND_SEEDS", int(lv.member_count.max()))
    h, w = img.shape[1:]
    prior = PositionPrior((30.0, 7.0), (h, w), (h, w), P)
    dn = FastDenoiser(lv, patch_size=P, rho=0.2, prior=prior, params=replace(
        SETTINGS, expand_groups=24, broad_steps=5, broad_min_ess=0.0, broad_stride=1,
        query_stride=1, expand_below_ess=1e9)).bind(origin=(0, 0), seed=1, level=1)
    s = 0.4
    a = signal_scale(s)
    x = a * img + s * gaussian_noise(8, 0, 0, (0, 0, h, w), 3)
    dn(x, 1.0)
    dn(x, s)
    qid = torch.arange(0, (h - P + 1) * (w - P + 1), 7)
    xq, means, _, mode = dn.query_posterior(x, qid)
    assert mode == "dictionary" and dn._expand
    nc = w - P + 1
    pb = prior.pair_bias(qid // nc, qid % nc, idx.positions)
    want = posterior_mean_exact(xq, idx, a, s, pair_bias=pb)
    torch.testing.assert_close(means, want, atol=2e-5, rtol=1e-4)
    flat = posterior_mean_exact(xq, idx, a, s)
    assert float((flat - want).abs().max()) > 1e-2  # the prior matters here
