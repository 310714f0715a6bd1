"""The composition priors (diffusion.priors) against oracles on tiny inputs.

* the position prior's logit term in every denoiser (exact, fused, fast) equals the float64
  textbook posterior with the term added;
* strength 0 is the paper's posterior / sampler bit for bit, and the ``paper`` preset is
  the sampler with no prior at all, bit for bit;
* a very strong position prior reproduces the reference (same size: every patch stays in
  its place), a partial-noise start near 0 reproduces the coarsest reference level;
* the partial-noise start's schedule and initial state are the written-out formulas.
(tiled == whole with the priors on: tests/pipeline/test_tiled_priors.py)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataclasses import replace

from gigapatch.api import generate
from gigapatch.config import load_config
from gigapatch.diffusion.backends import level_denoiser
from gigapatch.diffusion.backends import make_denoise as _make_denoise
from gigapatch.diffusion.denoiser import (image_denoise, posterior_mean_exact,
                                          posterior_mean_fused)
from gigapatch.diffusion.fast import FastDenoiser, build_fast_level
from gigapatch.diffusion.generator import sample_level
from gigapatch.diffusion.patch_index import PatchIndex
from gigapatch.diffusion.priors import PairBias, PositionPrior, PriorSettings, noised_start
from gigapatch.diffusion.pyramid import gaussian_pyramid
from gigapatch.diffusion.schedules import flow_linear
from gigapatch.errors import GigapatchError
from gigapatch.pipeline.plan import denoiser_settings, plan_levels

from ..helpers import TINY, rand, texture

SETTINGS = denoiser_settings(load_config())


def make_denoise(idx, *, backend="exact", **kw):
    """The image denoiser with the default settings (exact unless given)."""
    return _make_denoise(idx, backend=backend, settings=SETTINGS, **kw)


def _oracle(x, patches, log_counts, a, s, qc, ec, w):
    """float64: softmax(-|x - a y|^2 / (2 s^2) + log n - sum_a w_a (qc_a - ec_a)^2) @ y."""
    x, y = x.double(), patches.double()
    d2 = ((x[:, None, :] - a * y[None]) ** 2).sum(-1)
    pos = sum(wa * (qc[:, None, i].double() - ec[None, :, i].double()) ** 2
              for i, wa in enumerate(w))
    lg = -d2 / (2 * s * s) + log_counts.double()[None] - pos
    return (torch.softmax(lg, 1) @ y).float()


@pytest.fixture
def setup():
    idx = PatchIndex.from_image(rand(3, 12, 11, seed=4), 5, merge_duplicates=False)
    g = torch.Generator().manual_seed(7)
    qc = torch.rand((37, 2), generator=g)
    prior = PositionPrior((30.0, 7.0), (12, 11), (12, 11), 5)
    ec = prior.entry_coords(idx.positions)
    return idx, qc, ec, prior


@pytest.mark.parametrize("s", [1.0, 0.7, 0.3])
@pytest.mark.parametrize("fn", ["exact", "exact_chunked", "fused"])
def test_position_term_matches_textbook_posterior(setup, s, fn):
    """Kills: the term's sign, its factor, a swapped axis, a chunk offset into the entries
    (tiny budget: many key blocks), and a = 0 answering the prior-free mean."""
    idx, qc, ec, prior = setup
    x = rand(37, idx.dim, seed=1)
    a = 1 - s
    pb = PairBias(qc, ec, prior.weights)
    if fn == "fused":
        got = posterior_mean_fused(x, idx, a, s, pair_bias=pb)
    else:
        budget = 1e-4 if fn == "exact_chunked" else 1024
        got = posterior_mean_exact(x, idx, a, s, pair_bias=pb, memory_budget_mb=budget)
    want = _oracle(x, idx.patches, idx.log_counts, a, s, qc, ec, prior.weights)
    torch.testing.assert_close(got, want, atol=3e-5, rtol=1e-4)
    # and it is not the prior-free posterior (the term matters at these weights)
    free = _oracle(x, idx.patches, idx.log_counts, a, s, qc, ec, (0.0, 0.0))
    assert float((want - free).abs().max()) > 1e-2


def test_zero_weights_are_the_paper_posterior_bit_for_bit(setup):
    idx, qc, ec, _ = setup
    x = rand(37, idx.dim, seed=1)
    for a, s in ((0.0, 1.0), (0.4, 0.6), (0.9, 0.1)):
        got = posterior_mean_exact(x, idx, a, s, pair_bias=PairBias(qc, ec, (0.0, 0.0)))
        if a == 0.0:  # the prior path computes the mean by softmax, the plain one directly
            torch.testing.assert_close(got, posterior_mean_exact(x, idx, a, s),
                                       atol=1e-6, rtol=0)
        else:
            assert torch.equal(got, posterior_mean_exact(x, idx, a, s))


def test_image_denoise_passes_each_patch_its_top_left():
    x = rand(2, 9, 8, seed=3)
    seen = []

    def den(q, ys, xs):
        seen.append(torch.stack([ys, xs], 1))
        return q

    image_denoise(x, den, 3, 0.2, memory_budget_mb=1e-4, with_positions=True)  # many bands
    got = torch.cat(seen)
    want = torch.stack(torch.meshgrid(torch.arange(7), torch.arange(6), indexing="ij"),
                       -1).reshape(-1, 2)
    assert torch.equal(got, want)


def test_position_denoiser_with_zero_prior_is_the_plain_sampler_bit_for_bit():
    idx = PatchIndex.from_image(texture(), 5, merge_duplicates=False)
    box = (0, 0, 28, 32)
    zero = PositionPrior((0.0, 0.0), (28, 32), (28, 32), 5)
    runs = [sample_level(make_denoise(idx, patch_size=5, rho=0.2, prior=pr), box=box,
                         channels=3, seed=2, level=0, sigmas=flow_linear(4), eta=0.5)
            for pr in (None, zero)]
    # s = 1 (a = 0) goes through the softmax with the prior: the first step differs by
    # float rounding only, which the later steps do not amplify beyond this
    torch.testing.assert_close(runs[0], runs[1], atol=1e-5, rtol=0)


def test_fast_prior_equals_exact_prior_when_it_sees_every_entry():
    """The fast backend with candidates >= N, dictionary = index, stride 1 is the exact
    denoiser; with the same position prior both must still agree (a fast path that drops
    or misplaces the term, or uses window-local positions, fails)."""
    img = texture(20, 22)
    idx = PatchIndex.from_image(img, 5, merge_duplicates=False)
    prior = PositionPrior((40.0, 40.0), (24, 26), (20, 22), 5)
    lv = build_fast_level(idx, pca_dims=8, dictionary_size=10_000)
    fast = FastDenoiser(lv, patch_size=5, rho=0.2, prior=prior,
                        params=replace(SETTINGS, candidates=idx.size, broad_steps=1,
                                       query_stride=1, probes=0, broad_stride=1))
    exact = make_denoise(idx, patch_size=5, rho=0.2, prior=prior)
    box = (2, 3, 20, 24)  # a window away from the origin: positions must be global
    outs = [sample_level(d, box=box, channels=3, seed=1, level=0, sigmas=flow_linear(4),
                         eta=0.0) for d in (fast, exact)]
    torch.testing.assert_close(outs[0], outs[1], atol=2e-4, rtol=0)
    plain = sample_level(make_denoise(idx, patch_size=5, rho=0.2), box=box, channels=3,
                         seed=1, level=0, sigmas=flow_linear(4), eta=0.0)
    assert float((plain - outs[1]).abs().max()) > 1e-2


def test_paper_preset_is_the_sampler_without_priors_bit_for_bit():
    ref = ((texture(28, 32) + 1) / 2).permute(1, 2, 0).numpy()
    cfg = load_config("paper", TINY)
    got = generate(ref, seed=5, config=cfg, device="cpu")
    # the sampler written out with no prior anywhere
    plan = plan_levels(ref.shape[:2], ref.shape[:2], 3, cfg)
    pyr = gaussian_pyramid(torch.from_numpy(ref).permute(2, 0, 1) * 2 - 1, len(plan))
    coarse = None
    from gigapatch.diffusion.generator import upsample_to_box

    for lp in plan:
        dn = level_denoiser(pyr[lp.level], lp.backend, patch_size=5, rho=0.2,
                            settings=denoiser_settings(cfg))
        box = (0, 0) + tuple(lp.out_hw)
        up = None if coarse is None else upsample_to_box(coarse, (0, 0), box)
        coarse = sample_level(dn, box=box, channels=3, seed=5, level=lp.level,
                              sigmas=flow_linear(4, 1e-4), eta=0.0, coarse_up=up)
    want = ((coarse.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)
    # the paper preset is the default preset's sampler with every prior off
    assert load_config("paper").prior.position_strength == 0.0
    assert load_config("paper").prior.t0 == 1.0


def _ref(h=28, w=32):
    return ((texture(h, w) + 1) / 2).permute(1, 2, 0).numpy()


def test_very_strong_position_prior_reproduces_the_reference():
    ref = _ref()
    strong = load_config(None, TINY + ["prior.position_strength=1e8", "prior.position_axes=xy",
                                       "prior.position_levels=2"])
    out = generate(ref, seed=3, config=strong, device="cpu")
    assert np.abs(out - ref).max() < 2e-3
    # negative control: the same run without the prior rearranges the image
    free = generate(ref, seed=3, config=load_config(None, TINY), device="cpu")
    assert np.abs(free - ref).mean() > 0.05


def test_vertical_prior_keeps_rows_in_place_only():
    """axes=y: each output row's colour statistics follow the reference's row at the same
    height (a vertical gradient reference); x stays free to move."""
    h, w = 32, 30
    yy = torch.linspace(-1, 1, h)[:, None].expand(h, w)
    img = torch.stack([yy, torch.sin(torch.arange(w) / 1.5)[None].expand(h, w), -yy])
    img = img + 0.1 * rand(3, h, w, seed=2)
    ref = ((img.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    cfg = load_config(None, TINY + ["prior.position_strength=1e4", "prior.position_levels=2"])
    out = generate(ref, seed=1, config=cfg, device="cpu", size=(45, 32))
    rows_out, rows_ref = out[..., 0].mean(1), ref[..., 0].mean(1)
    assert np.abs(rows_out - rows_ref).max() < 0.08


def test_partial_noise_start_formulas():
    assert torch.equal(flow_linear(10, 1e-4, start=1.0), flow_linear(10, 1e-4))
    sig = flow_linear(5, 1e-4, start=0.6)
    torch.testing.assert_close(sig, torch.tensor([0.6, 0.450025, 0.30005, 0.150075, 1e-4],
                                                 dtype=torch.float64))
    clean, noise = rand(3, 4, 5, seed=1), rand(3, 4, 5, seed=2)
    torch.testing.assert_close(noised_start(clean, noise, 0.25), 0.75 * clean + 0.25 * noise)
    assert noised_start(clean, noise, 1.0) is noise


def test_small_t0_keeps_the_coarsest_reference_level():
    from gigapatch.pipeline.whole import sample_levels

    ref = _ref(40, 44)
    pyr0 = gaussian_pyramid(torch.from_numpy(ref).permute(2, 0, 1) * 2 - 1, 2)[0]
    err = {}
    for t0 in (0.05, 1.0):
        cfg = load_config(None, TINY + [f"prior.t0={t0}"])
        lv0 = sample_levels(ref, ref.shape[:2], cfg, seed=2)[0]
        err[t0] = float((lv0 - pyr0).abs().mean())
    assert err[0.05] < 0.02, err
    assert err[1.0] > 0.1, err  # negative control: pure noise rearranges


@pytest.mark.parametrize("item", ["prior.t0=0", "prior.t0=1.5", "prior.position_strength=-1",
                                  "prior.position_axes=x", "prior.position_levels=0",
                                  "prior.colour=1"])
def test_bad_prior_keys_are_refused(item):
    with pytest.raises(GigapatchError, match="prior"):
        load_config(None, [item])


def test_prior_settings_levels():
    ps = PriorSettings(position_strength=50.0, position_levels=2, position_axes="y")
    assert ps.position_on(0) and ps.position_on(1) and not ps.position_on(2)
    pp = ps.position_prior(1, out_hw=(10, 20), ref_hw=(8, 8), patch_size=3)
    assert pp.weights == (25.0, 0.0)
    assert ps.position_prior(2, out_hw=(10, 20), ref_hw=(8, 8), patch_size=3) is None
    assert not PriorSettings().position_on(0)
    # normalised centres: (y + P/2) / H on the whole level
    q = pp.query_coords(torch.tensor([0, 7]), torch.tensor([17, 0]))
    torch.testing.assert_close(q, torch.tensor([[0.15, 0.925], [0.85, 0.075]]))


def test_a_tileable_output_is_sampled_without_the_priors():
    """The default preset's priors (a framed layout) are dropped for a tileable output: its
    image is the paper preset's bit for bit. Kills: prior_settings ignoring sampler.tileable
    (the partial-noise start from the resized reference changes every pixel, and puts a
    seam back in)."""
    from gigapatch.pipeline.plan import prior_settings, priors_dropped

    ref = ((texture(28, 32) + 1) / 2).permute(1, 2, 0).numpy()
    default = load_config(None, TINY + ["sampler.tileable=xy"])
    paper = load_config("paper", TINY + ["sampler.tileable=xy"])
    assert default.prior.t0 < 1.0 and priors_dropped(default) and not priors_dropped(paper)
    ps = prior_settings(default)
    assert (ps.position_strength, ps.t0, ps.usage_strength) == (0.0, 1.0, 0.0)
    got = generate(ref, size=(32, 32), seed=3, config=default, device="cpu")
    want = generate(ref, size=(32, 32), seed=3, config=paper, device="cpu")
    assert np.array_equal(got, want)
    # framed, the same default config does use them (the control: the drop is what differs)
    framed = generate(ref, size=(32, 32), seed=3, config=load_config(None, TINY), device="cpu")
    assert not np.array_equal(framed, generate(ref, size=(32, 32), seed=3,
                                               config=load_config("paper", TINY), device="cpu"))


def test_the_default_preset_has_the_composition_priors():
    """Issue 13: the default takes the setting that met the floors (BENCHMARKS.md,
    "Composition priors: the default"); `composition` is the same preset key for key."""
    cfg = load_config()
    assert (cfg.prior.position_strength, cfg.prior.position_axes, cfg.prior.position_levels,
            cfg.prior.t0, cfg.prior.usage_strength, cfg.prior.usage_levels) == \
        (30.0, "y", 1, 0.9, 3.0, 1)
    assert load_config("composition") == cfg


def test_level_cache_keeps_unmerged_prior_levels_apart():
    """A prior level's index is built without merging duplicates: the level cache must not
    hand it a merged index built for the same pixels without the prior (or the reverse)."""
    from gigapatch.diffusion.backends import LevelCache, level_denoiser, level_key

    ref = texture()  # has exact duplicates (a flat corner)
    assert level_key(ref, "exact", patch_size=5, settings=SETTINGS) != \
        level_key(ref, "exact", patch_size=5, settings=SETTINGS, merged=False)
    cache = LevelCache(2**30)
    prior = PositionPrior((50.0, 50.0), (28, 32), (28, 32), 5)
    x = rand(3, 28, 32, seed=3)
    plain = level_denoiser(ref, "exact", patch_size=5, rho=0.2, settings=SETTINGS, cache=cache)
    with_prior = level_denoiser(ref, "exact", patch_size=5, rho=0.2, settings=SETTINGS,
                                cache=cache, prior=prior)
    fresh = level_denoiser(ref, "exact", patch_size=5, rho=0.2, settings=SETTINGS, prior=prior)
    assert torch.equal(with_prior.bind()(x, 0.5), fresh.bind()(x, 0.5))
    # the prior level keeps every patch (the flat corner's copies unmerged)
    assert with_prior.index.size == 24 * 28
