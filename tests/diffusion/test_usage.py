"""The usage (completeness) prior (diffusion.priors) against closed forms on tiny inputs.

* the soft usage counts of a few query patches over a (duplicated, merged) patch set, and
  the per-entry log weights, are hand-written arrays;
* two copies of a patch with counts c1, c2 get posterior weights in the ratio
  ((1 + c2) / (1 + c1))^lambda in the exact, fused and fast denoisers;
* the fast backend's dictionary weighs each group's new multiplicities;
* the sampler with the usage prior is the pilot / count / reweigh / resample recipe
  written out, and strength 0 is the plain sampler bit for bit.
(tiled == whole with the usage prior on: tests/pipeline/test_tiled_priors.py)
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gigapatch.api import generate
from gigapatch.config import load_config
from gigapatch.diffusion.backends import level_denoiser, make_denoise, reweighted
from gigapatch.diffusion.denoiser import posterior_mean_exact, posterior_mean_fused
from gigapatch.diffusion.fast import FastDenoiser, build_fast_level
from gigapatch.diffusion.generator import sample_level
from gigapatch.diffusion.patch_index import PatchIndex
from gigapatch.diffusion.priors import usage_counts, usage_log_weights
from gigapatch.diffusion.pyramid import gaussian_pyramid
from gigapatch.diffusion.schedules import flow_linear
from gigapatch.errors import GigapatchError
from gigapatch.pipeline.plan import denoiser_settings, plan_levels

from ..helpers import TINY, rand, texture

SETTINGS = denoiser_settings(load_config())


def _three(d=75):
    y = rand(3, d, seed=11)
    return y[0], y[1], y[2]


def test_usage_counts_closed_form():
    """Each query is one use of its nearest entry. Kills: counting per entry instead of
    sharing a query's unit among entries (rows not normalised), counts summed over the
    wrong axis, a missing query chunk (tiny budget: many chunks)."""
    ya, yb, yc = _three()
    idx = torch.stack([ya, yb, yc])
    q = torch.stack([ya, ya, yc, ya + 1e-4])
    for budget in (1024, 1e-5):
        got = usage_counts(q, idx, torch.zeros(3), memory_budget_mb=budget)
        np.testing.assert_allclose(got.numpy(), [3.0, 0.0, 1.0], atol=1e-9)


def test_usage_counts_share_ties_by_multiplicity_and_bandwidth():
    """A query halfway between two entries is shared in proportion to n_j (kills dropping
    log n_j); duplicated copies share evenly; a query at RMS distance r from one entry and
    r' from the other splits as softmax(-D r^2 / (2 D tau^2)) (kills a wrong bandwidth)."""
    ya, yb, _ = _three()
    mid = (ya + yb) / 2
    merged = usage_counts(mid[None], torch.stack([ya, yb]), torch.log(torch.tensor([2.0, 1.0])))
    np.testing.assert_allclose(merged.numpy(), [2 / 3, 1 / 3], atol=1e-9)
    dup = usage_counts(torch.stack([ya, ya, yb]), torch.stack([ya, ya, yb]), torch.zeros(3))
    np.testing.assert_allclose(dup.numpy(), [1.0, 1.0, 1.0], atol=1e-9)
    # two entries 0 and 2 * 0.01 * e apart per pixel, the query at 0.01 * e from the first
    d, tau = 75, 0.02
    e = torch.ones(d, dtype=torch.float64)
    y0 = torch.zeros(d, dtype=torch.float64)
    got = usage_counts((0.01 * e)[None], torch.stack([y0, 0.03 * e]), torch.zeros(2), tau=tau)
    la, lb = -(0.01 ** 2) / (2 * tau ** 2), -(0.02 ** 2) / (2 * tau ** 2)
    want = [math.exp(la) / (math.exp(la) + math.exp(lb)), math.exp(lb) / (math.exp(la) + math.exp(lb))]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)


def test_usage_log_weights_closed_form():
    """log n - lambda log(1 + c / n). Kills: the sign, log(c) instead of log(1 + c), the
    total count of a merged entry instead of its per-copy share."""
    lw = usage_log_weights(torch.tensor([1.0, 3.0, 0.0, 4.0], dtype=torch.float64),
                           torch.log(torch.tensor([1.0, 1.0, 1.0, 2.0])), 2.0)
    want = [-2 * math.log(2), -2 * math.log(4), 0.0, math.log(2) - 2 * math.log(3)]
    np.testing.assert_allclose(lw.numpy(), want, rtol=1e-6)
    # two copies with counts c1 = 1, c2 = 3: weights in the ratio ((1 + 3) / (1 + 1))^2 = 4
    assert math.isclose(math.exp(float(lw[0] - lw[1])), 4.0, rel_tol=1e-6)
    # a merged entry of 2 copies used 4 times weighs as the 2 copies used twice each
    assert math.isclose(math.exp(float(lw[3])), 2 * 3.0 ** -2, rel_tol=1e-6)


def _midpoint_case():
    """Entries: two copies of y_a (counts 1 and 3), y_b (count 0); lambda 2; a query
    exactly halfway between y_a and y_b (equal likelihood): the posterior mean is
    ((1/4 + 1/16) y_a + 1 * y_b) / (1/4 + 1/16 + 1) = (5 y_a + 16 y_b) / 21."""
    ya = rand(3 * 25, seed=21) * 0.5
    yb = rand(3 * 25, seed=22) * 0.5
    idx = PatchIndex.from_patches(torch.stack([ya, ya, yb]), 5, 3)
    lw = usage_log_weights(torch.tensor([1.0, 3.0, 0.0]), idx.log_counts, 2.0)
    want = (5 * ya + 16 * yb) / 21
    return idx, lw, ya, yb, want


@pytest.mark.parametrize("backend", ["exact", "fused", "fast"])
def test_duplicated_copies_weigh_by_their_usage_in_every_backend(backend):
    """Kills: a backend that ignores the reweighed multiplicities (the fast level keeping
    its old index, the fused kernel's bias column without log n), the ratio inverted."""
    idx, lw, ya, yb, want = _midpoint_case()
    a, s = 0.8, 0.2
    x = (a * (ya + yb) / 2)[None]
    fast = None
    if backend == "fast":
        idx = replace(idx, positions=torch.tensor([[0, 0], [0, 1], [0, 2]]),
                      position_map=torch.tensor([[0, 1, 2]]))
        fast = build_fast_level(idx, pca_dims=4, dictionary_size=10_000)
    idx2, fast2 = reweighted(idx, fast, lw)
    if backend == "exact":
        got = posterior_mean_exact(x, idx2, a, s)
    elif backend == "fused":
        got = posterior_mean_fused(x, idx2, a, s)
    else:
        den = FastDenoiser(fast2, patch_size=5, rho=0.2,
                           params=replace(SETTINGS, candidates=3, query_stride=1, probes=0))
        got = den._patch_means(x, 1, a, s, "index", None, 2**26)
    torch.testing.assert_close(got[0], want, atol=2e-5, rtol=0)
    # without the usage term the copies of y_a outweigh y_b 2 : 1
    plain = posterior_mean_exact(x, idx, a, s)[0]
    torch.testing.assert_close(plain, (2 * ya + yb) / 3, atol=2e-5, rtol=0)


def test_fast_dictionary_weighs_each_group_by_the_new_multiplicities():
    """A representative's multiplicity is the sum of the new n_j of the entries nearest to
    it in the reduced space (recomputed here by brute force). Kills: the dictionary keeping
    the old multiplicities (the broad steps would ignore the usage), a wrong group map."""
    img = texture(20, 22)
    idx = PatchIndex.from_image(img, 5, merge_duplicates=False)
    fl = build_fast_level(idx, pca_dims=8, dictionary_size=16)
    assert fl.dictionary is not fl.index
    lw = rand(idx.size, seed=5).double() * 3
    _, fl2 = reweighted(idx, fl, lw.float())
    reps = torch.linspace(0, idx.size - 1, 16).round().long().unique()
    proj = fl.proj.float()
    near = torch.cdist(proj, proj[reps]).argmin(1)
    want = torch.zeros(reps.numel(), dtype=torch.float64).index_add_(
        0, near, lw.float().double().exp())
    want = want[want > 0].log()
    torch.testing.assert_close(fl2.dictionary.log_counts.double(), want, atol=1e-5, rtol=0)
    assert torch.equal(fl2.dictionary.patches, fl.dictionary.patches)
    assert fl2.index.log_counts is not fl.index.log_counts and fl2.proj is fl.proj


def test_usage_level_is_pilot_count_reweigh_resample_written_out():
    """level_denoiser(usage) == the recipe: the pilot (the level with the plain denoiser),
    counts over every patch of it, log n - lambda log(1 + c / n), the level resampled with
    those weights. Kills: counts taken from something else than the pilot (its start, a
    subsample of its patches), the strength not passed, the pilot's denoiser reweighed."""
    img = texture(20, 22)
    box = (0, 0, 24, 26)
    kw = dict(box=box, channels=3, seed=4, level=0, sigmas=flow_linear(4), eta=0.5)
    pilots = []

    def pilot(d):
        pilots.append(sample_level(d, **kw))
        return pilots[-1]

    got_den = level_denoiser(img, "exact", patch_size=5, rho=0.2, settings=SETTINGS,
                             usage_strength=1.5, pilot=pilot)
    got = sample_level(got_den, **kw)
    idx = PatchIndex.from_image(img, 5)
    plain = sample_level(make_denoise(idx, patch_size=5, rho=0.2, backend="exact",
                                      settings=SETTINGS), **kw)
    assert torch.equal(pilots[0], plain)  # the pilot is the level without the usage term
    q = F.unfold(plain[None], kernel_size=5)[0].T
    c = usage_counts(q, idx.patches, idx.log_counts)
    assert math.isclose(float(c.sum()), q.shape[0], rel_tol=1e-9)  # one use per patch
    lw = usage_log_weights(c, idx.log_counts, 1.5)
    want = sample_level(make_denoise(reweighted(idx, None, lw)[0], patch_size=5, rho=0.2,
                                     backend="exact", settings=SETTINGS), **kw)
    assert torch.equal(got, want)
    assert float((got - plain).abs().max()) > 1e-2  # the term changes the sample


def test_usage_strength_zero_is_the_plain_sampler_bit_for_bit():
    """Kills: the pilot or reweighing running at strength 0 (``usage_on`` with >= 0)."""
    ref = ((texture(28, 32) + 1) / 2).permute(1, 2, 0).numpy()
    plain = generate(ref, seed=5, config=load_config("paper", TINY), device="cpu")
    zero = generate(ref, seed=5, device="cpu",
                    config=load_config("paper", TINY + ["prior.usage_levels=2"]))
    assert np.array_equal(plain, zero)
    on = generate(ref, seed=5, device="cpu",
                  config=load_config("paper", TINY + ["prior.usage_strength=2"]))
    assert np.abs(on - plain).max() > 1e-2
    assert load_config("paper").prior.usage_strength == 0.0


def test_usage_makes_unused_content_appear():
    """The reason for the term: on a reference whose pilot leaves entries unused, a strong
    usage prior uses more distinct entries (hard nearest-neighbour usage of the output)."""
    ref = ((texture(28, 32) + 1) / 2).permute(1, 2, 0).numpy()
    cfg = TINY + ["sampler.levels=1"]
    refm = torch.from_numpy(ref).permute(2, 0, 1) * 2 - 1
    idx = PatchIndex.from_image(refm, 5, merge_duplicates=False)

    def used(out):
        x = torch.from_numpy(out).permute(2, 0, 1) * 2 - 1
        q = F.unfold(x[None], kernel_size=5)[0].T
        return torch.cdist(q, idx.patches).argmin(1).unique().numel()

    n_plain = sum(used(generate(ref, seed=s, config=load_config("paper", cfg), device="cpu"))
                  for s in range(3))
    n_usage = sum(used(generate(ref, seed=s, device="cpu",
                                config=load_config("paper", cfg + ["prior.usage_strength=4"])))
                  for s in range(3))
    assert n_usage > 1.1 * n_plain


@pytest.mark.parametrize("bad", ["prior.usage_strength=-1", "prior.usage_strength=.inf",
                                 "prior.usage_levels=0"])
def test_bad_usage_settings_are_refused(bad):
    with pytest.raises(GigapatchError, match=bad.split("=")[0]):
        load_config(None, [bad])


def test_usage_with_a_tileable_output_is_dropped():
    """A torus has no usage pilot: the term is dropped (kills: prior_settings keeping it)."""
    from gigapatch.pipeline.plan import prior_settings

    cfg = load_config("paper", ["sampler.tileable=x", "prior.usage_strength=1"])
    assert prior_settings(cfg).usage_strength == 0.0
    assert prior_settings(load_config("paper", ["prior.usage_strength=1"])).usage_strength == 1


def test_paper_preset_is_the_default_without_its_three_priors():
    """The bundled ``paper`` preset differs from the default (= ``composition``) only in
    the priors: t0, position and usage off."""
    paper, default = load_config("paper").to_dict(), load_config("default").to_dict()
    assert {k: v for k, v in paper.items() if k != "prior"} == \
        {k: v for k, v in default.items() if k != "prior"}
    assert default["prior"] == {**paper["prior"], "t0": 0.9, "position_strength": 30.0,
                                "usage_strength": 3.0}
    assert load_config("composition").to_dict() == default
