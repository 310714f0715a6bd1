"""The fast backend (diffusion.fast): exactness limits, validity, determinism, locality."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from gigapatch.config import load_config
from gigapatch.diffusion.backends import make_denoise
from gigapatch.diffusion.fast import (ESS_PROBES, FastDenoiser, build_fast_level,
                                      dictionary_ess, fast_extra_halo, query_positions)
from gigapatch.diffusion.generator import level_halo, sample_level
from gigapatch.diffusion.patch_index import PatchIndex
from gigapatch.diffusion.schedules import flow_linear, signal_scale
from gigapatch.pipeline.plan import denoiser_settings

from ..helpers import texture

P = 5
#: the default config's denoiser settings; tests replace the fast backend's knobs
SETTINGS = denoiser_settings(load_config())


def _run(denoise, box, seed=3, steps=6, level=1):
    return sample_level(denoise, box=box, channels=3, seed=seed, level=level,
                        sigmas=flow_linear(steps), eta=0.0)


def test_fast_equals_exact_with_all_candidates():
    idx = PatchIndex.from_image(texture(), P)
    box = (0, 0, 22, 26)
    exact = _run(make_denoise(idx, patch_size=P, rho=0.2, backend="exact",
                              settings=SETTINGS), box)
    params = replace(SETTINGS, candidates=idx.size, broad_steps=2, broad_stride=1,
                     query_stride=1, init="exhaustive", dictionary_size=10**9)
    fast = _run(make_denoise(idx, patch_size=P, rho=0.2, backend="fast", settings=params),
                box)
    # bound: float32 summation order only
    assert torch.allclose(fast, exact, atol=1e-4), (fast - exact).abs().max()


def test_candidates_always_valid():
    idx = PatchIndex.from_image(texture(), P)
    lv = build_fast_level(idx, pca_dims=8, dictionary_size=16)
    dn = FastDenoiser(lv, patch_size=P, rho=0.2,
                      params=replace(SETTINGS, candidates=4, broad_steps=1, query_stride=2,
                                     probes=3))
    dn = dn.bind(origin=(2, 4), seed=1, level=0)
    x = torch.randn(3, 21, 23)
    cands = []
    for s in flow_linear(8).tolist():
        x_hat = dn(x, s)
        assert torch.isfinite(x_hat).all()
        cands.append(dn._cand)
        x = 0.7 * x_hat + 0.3 * x
    # the first (broad) step searches nothing; every later step has candidates to check
    assert cands[0] is None and len(cands) == 8
    for cand in cands[1:]:
        assert cand.min() >= 0 and cand.max() < idx.size
        assert cand.shape[1] == 4


def _fast(idx, **kw):
    params = replace(SETTINGS, candidates=4, broad_steps=2, query_stride=kw.pop("stride", 2),
                     probes=2, broad_stride=2, pca_dims=6, dictionary_size=32)
    return make_denoise(idx, patch_size=P, rho=0.2, backend="fast", settings=params)


def test_deterministic_across_runs_and_threads():
    idx = PatchIndex.from_image(texture(), P)
    box = (0, 0, 30, 34)
    threads = torch.get_num_threads()
    try:
        a = _run(_fast(idx), box)
        b = _run(_fast(idx), box)
        torch.set_num_threads(1)
        c = _run(_fast(idx), box)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-5)


def test_dictionary_ess_is_its_definition():
    """Oracle: Gaussian likelihoods from squared distances (not the GEMM expansion), the
    representatives' multiplicities as prior weights, the level's own entries (regular
    subsample) noised with seed-0 Gaussian noise; ESS = 1 / sum w^2, median over probes."""
    idx = PatchIndex.from_image(texture(), P)
    lv = build_fast_level(idx, pca_dims=6, dictionary_size=24)
    assert lv.dictionary is not lv.index and lv.dictionary.size == 24
    n, d = idx.patches.shape
    sel = torch.linspace(0, n - 1, min(ESS_PROBES, n)).round().long().unique()
    e = torch.randn((sel.numel(), d), generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    y = lv.dictionary.patches.double()
    mult = lv.dictionary.log_counts.double().exp()
    assert float(mult.sum()) == pytest.approx(float(idx.log_counts.exp().sum()), rel=1e-6)
    for s in (0.9, 0.6, 0.3):
        a = signal_scale(s)
        x = a * idx.patches[sel].double() + s * e
        d2 = ((x[:, None, :] - a * y[None]) ** 2).sum(-1)
        lik = torch.exp(-(d2 - d2.min(1, keepdim=True).values) / (2 * s * s)) * mult
        w = lik / lik.sum(1, keepdim=True)
        want = float((1.0 / (w * w).sum(1)).median())
        assert dictionary_ess(lv, s) == pytest.approx(want, rel=1e-6)


def _modes(lv, broad_steps, min_ess, steps=8):
    dn = FastDenoiser(lv, patch_size=P, rho=0.2, params=replace(
        SETTINGS, candidates=4, broad_steps=broad_steps, broad_min_ess=min_ess,
        query_stride=2, probes=2, broad_stride=2))
    dn = dn.bind(origin=(0, 0), seed=1, level=1)
    x = torch.randn(3, 24, 26, generator=torch.Generator().manual_seed(3))
    modes = []
    for s in flow_linear(steps).tolist():
        x_hat = dn(x, s)
        modes.append(dn._grid[2])
        x = 0.7 * x_hat + 0.3 * x
    return modes


def test_switch_from_the_dictionary_follows_the_reference_ess():
    """The dictionary is left at the first call whose ``dictionary_ess`` (a function of the
    level and s only) is below ``broad_min_ess``, or after ``broad_steps`` calls, whichever
    comes first, and never resumed; ``broad_min_ess = 0`` is the fixed step count."""
    idx = PatchIndex.from_image(texture(), P)
    lv = build_fast_level(idx, pca_dims=6, dictionary_size=24)
    sig = flow_linear(8).tolist()
    ess = [dictionary_ess(lv, s) for s in sig[1:-1]]
    assert all(b < a for a, b in zip(ess, ess[1:])), ess  # broad -> narrow
    thr = (ess[1] + ess[2]) / 2  # steps 1, 2 (s = 0.86, 0.71) above it, step 3 below
    expect = ["mean", "dictionary", "dictionary"] + ["candidates"] * 5
    assert _modes(lv, 6, thr) == expect
    assert _modes(lv, 2, thr) == ["mean", "dictionary"] + ["candidates"] * 6
    assert _modes(lv, 6, 0.0) == ["mean"] + ["dictionary"] * 5 + ["candidates"] * 2
    # a threshold between the two values decides it: no window content involved
    assert _modes(lv, 6, ess[2] * 1.001)[:4] == expect[:4]
    assert _modes(lv, 6, ess[2] * 0.999)[:4] == ["mean"] + ["dictionary"] * 3
    # a dictionary that is the whole index is exact: no switch on ESS
    whole = build_fast_level(idx, pca_dims=6, dictionary_size=10**9)
    assert _modes(whole, 6, 1e9) == ["mean"] + ["dictionary"] * 5 + ["candidates"] * 2


def test_query_positions_global_grid():
    assert query_positions(0, 20, 5, 3).tolist() == [0, 3, 6, 9, 12, 15]
    # a window starting at 4: global multiples of 3 (6, 9, ...) plus its last position
    assert (query_positions(4, 16, 5, 3) + 4).tolist() == [6, 9, 12, 15]
    assert (query_positions(4, 17, 5, 3) + 4).tolist() == [6, 9, 12, 15, 16]


def test_extra_halo():
    assert fast_extra_halo(15, 2) == 0
    assert fast_extra_halo(5, 4) == 0
    assert fast_extra_halo(5, 6, steps=10) == 20


@pytest.mark.parametrize("stride", [1, 2])
def test_window_with_halo_matches_whole_image(stride):
    idx = PatchIndex.from_image(texture(), P)
    steps = 4
    H, W = 56, 60
    whole = sample_level(_fast(idx, stride=stride), box=(0, 0, H, W), channels=3, seed=5,
                         level=1, sigmas=flow_linear(steps), eta=0.0)
    halo = level_halo(P, steps, blended=False) + fast_extra_halo(P, stride, steps)
    core = (26, 28, 38, 40)
    box = (max(0, core[0] - halo), max(0, core[1] - halo),
           min(H, core[2] + halo), min(W, core[3] + halo))
    assert box[0] > 0 and box[1] > 0 and box[2] < H and box[3] < W  # a real window
    win = sample_level(_fast(idx, stride=stride), box=box, channels=3, seed=5, level=1,
                       sigmas=flow_linear(steps), eta=0.0)
    a = whole[:, core[0]:core[2], core[1]:core[3]]
    b = win[:, core[0] - box[0]:core[2] - box[0], core[1] - box[1]:core[3] - box[1]]
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


@pytest.mark.gpu
def test_fast_cuda_matches_cpu():
    idx = PatchIndex.from_image(texture(), P)
    box = (0, 0, 30, 34)
    cpu = _run(_fast(idx), box)
    gpu = sample_level(_fast(idx.to("cuda")), box=box, channels=3, seed=3, level=1,
                       sigmas=flow_linear(6), eta=0.0, device="cuda").cpu()
    # same candidates up to float ties; the result agrees to float tolerance
    assert torch.allclose(cpu, gpu, atol=1e-3), (cpu - gpu).abs().max()


def test_reduced_space_built_in_row_blocks_equals_the_whole_projection(monkeypatch):
    # kills a block loop that skips or shifts rows of proj (the centred (N, D) copy is
    # never made at once since issue 12; one block per ~CHUNK_BYTES of patches)
    from gigapatch.diffusion import fast as fast_mod
    from gigapatch.diffusion.patch_index import PatchIndex

    img = torch.rand(3, 30, 27, generator=torch.Generator().manual_seed(3)) * 2 - 1
    index = PatchIndex.from_image(img, 5)
    monkeypatch.setattr(fast_mod, "CHUNK_BYTES", 75 * 4 * 7)  # blocks of 7 rows
    lv = fast_mod.build_fast_level(index, pca_dims=8, dictionary_size=64)
    want = (index.patches - lv.mean) @ lv.basis
    assert lv.proj.shape == want.shape
    torch.testing.assert_close(lv.proj.float(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lv.proj_sq, (want * want).sum(1), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("init", ["groups", "dictionary"])
def test_first_candidates_in_chunks_equal_one_pass(init):
    """The first late step's seeding (``FastDenoiser._seed``) runs in query chunks that
    fit the budget (the group seeds of a 4096^2 window were ~6 GB at once). Oracle: the
    one-pass computation written out. Kills: a chunk written at the wrong offset, seeds
    taken from another chunk's nearest representatives, a lost last chunk."""
    from gigapatch.diffusion.fast import GROUP_REPS, _nearest

    idx = PatchIndex.from_image(texture(), P)
    lv = build_fast_level(idx, pca_dims=6, dictionary_size=32)
    dn = FastDenoiser(lv, patch_size=P, rho=0.2,
                      params=replace(SETTINGS, candidates=4, pca_dims=6, init=init))
    z = torch.randn(301, lv.proj.shape[1], generator=torch.Generator().manual_seed(5))
    big = 1 << 30
    d_ids = lv.dict_ids
    near, _ = _nearest(z, lv.proj[d_ids], lv.proj_sq[d_ids], 4, big)
    oracle = dn._rerank(z, dn._group_seeds(near[:, :GROUP_REPS]), 4, big) \
        if init == "groups" else d_ids[near]
    small = 3 * 64 * (lv.proj.shape[1] + 8) * 4 * 2  # chunks of ~84 queries: 4 chunks
    assert torch.equal(dn._seed(z, 4, big), oracle)
    assert torch.equal(dn._seed(z, 4, small), oracle)


def _reseed_denoiser(reseed_groups=4):
    """A late-step denoiser on a level whose groups all fit GROUP_SEEDS (<= 12 entries for
    16 seeds), with every query's previous candidates replaced by entry 0."""
    img = texture(40, 44)
    idx = PatchIndex.from_image(img, P)
    lv = build_fast_level(idx, pca_dims=8, dictionary_size=256)
    params = replace(SETTINGS, candidates=4, pca_dims=8, broad_steps=0, query_stride=1,
                     probes=2, reseed_groups=reseed_groups)
    dn = FastDenoiser(lv, patch_size=P, rho=0.2, params=params).bind(seed=1)
    dn(img, 0.5)
    dn._cand = torch.zeros_like(dn._cand)  # every previous candidate lost
    return dn, img, lv


def test_later_steps_find_the_nearest_entry_again():
    """Every late step after the first adds the groups of each query's nearest
    representatives (``reseed_groups``): candidates lost at one step (here all replaced
    by entry 0) are found again at the next, which propagation and random probes alone
    cannot do (measured at 186x248: without it the finest level's candidates missed the
    exact best patch for 20-25% of queries at s <= 0.22, and the outputs lost 3-29% in
    coherence to the exact sampler's). Oracle: the exhaustive nearest entry in the
    reduced space. Kills: reseed_off (the reseed ignored: 0.7% found)."""
    from gigapatch.diffusion.fast import GROUP_SEEDS, _nearest, grid_unfold

    dn, img, lv = _reseed_denoiser()
    assert int(lv.member_count.max()) <= GROUP_SEEDS  # the premise: whole groups seeded
    dn(img, 0.01)
    rows, cols = dn._grid[0], dn._grid[1]
    z = (grid_unfold(img, rows, cols, P) / signal_scale(0.01) - lv.mean) @ lv.basis
    best, _ = _nearest(z, lv.proj, lv.proj_sq, 1, 1 << 30)
    found = (dn._cand == best).any(1).float().mean()
    assert found >= 0.95, found


def test_later_step_search_in_chunks_equals_one_pass():
    """A later step's search (propagation, probes and the reseeded groups) runs in query
    chunks that fit the budget. Oracle: the same search in one pass (a budget that holds
    every query). Kills: reseed_chunk (a chunk's nearest representatives taken from
    another chunk's queries); also meant for a chunk written at the wrong offset or a
    lost last chunk."""
    dn, img, _ = _reseed_denoiser()
    rows, cols = dn._grid[0], dn._grid[1]
    a = signal_scale(0.01)
    one = dn._search(img, a, 1, rows, cols, rows.numel(), 1 << 30)
    chunked = dn._search(img, a, 1, rows, cols, rows.numel(), 100_000)  # ~30 chunks
    assert torch.equal(chunked, one)
