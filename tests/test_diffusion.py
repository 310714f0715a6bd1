"""The closed-form denoiser, the fold, the sampler and the noise, against oracles."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import gigapatch
from gigapatch.config import load_config
from gigapatch.diffusion.denoiser import (fold_window, image_denoise, posterior_mean_exact,
                                          posterior_mean_fused)
from gigapatch.diffusion.generator import (coarse_box_for, level_halo, make_denoise,
                                           sample_level, upsample_to_box)
from gigapatch.diffusion.levels import auto_level_count, plan_level_shapes
from gigapatch.diffusion.noise import gaussian_noise
from gigapatch.diffusion.patch_index import PatchIndex, extract_patches
from gigapatch.diffusion.pyramid import BLUR_RADIUS, blur2, down2, up2
from gigapatch.diffusion.sampling import ddim_step, sample_ddim
from gigapatch.diffusion.schedules import flow_linear

DATA = Path(__file__).parent / "data"


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 2 - 1


def _brute_posterior(x, patches, log_counts, a, s):
    """Float64 textbook formula: softmax of -|x - a y|^2 / (2 s^2) + log n."""
    x, y = x.double(), patches.double()
    d2 = ((x[:, None, :] - a * y[None]) ** 2).sum(-1)
    w = torch.softmax(-d2 / (2 * s * s) + log_counts.double()[None], dim=1)
    return (w @ y).float()


@pytest.fixture
def index():
    return PatchIndex.from_image(_rand(3, 12, 11), 5)


@pytest.mark.parametrize("s", [0.9, 0.5, 0.2])
def test_exact_matches_textbook_formula(index, s):
    x = _rand(40, index.dim, seed=1)
    a = 1 - s
    got = posterior_mean_exact(x, index, a, s)
    want = _brute_posterior(x, index.patches, index.log_counts, a, s)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_exact_with_tiny_budget_equals_one_block(index):
    # the online softmax over many key blocks gives the single-block answer
    x = _rand(33, index.dim, seed=2)
    big = posterior_mean_exact(x, index, 0.6, 0.4, memory_budget_mb=1024)
    small = posterior_mean_exact(x, index, 0.6, 0.4, memory_budget_mb=0.05)
    torch.testing.assert_close(small, big, atol=1e-6, rtol=1e-5)


def test_a_zero_returns_patch_set_mean(index):
    x = _rand(7, index.dim, seed=3)
    want = index.patches.mean(0).expand(7, -1)
    torch.testing.assert_close(posterior_mean_exact(x, index, 0.0, 1.0), want)
    torch.testing.assert_close(posterior_mean_fused(x, index, 0.0, 1.0), want,
                               atol=1e-5, rtol=1e-5)


def test_small_noise_returns_nearest_patch(index):
    # queries near known patches: the posterior collapses onto the nearest one
    pick = torch.tensor([0, 5, 17, 42])
    x = index.patches[pick] + 0.01 * _rand(4, index.dim, seed=4)
    got = posterior_mean_exact(x, index, 1.0, 1e-3)
    nearest = torch.cdist(x, index.patches).argmin(1)
    torch.testing.assert_close(got, index.patches[nearest])


def test_weighted_sum_gather_equals_dense_and_stays_small(monkeypatch):
    # the underflow gather gives the dense product; with few keys whose weights all
    # survive it must not gather (nnz, D) rows (n times the result: 3 GB on a 2048^2
    # coarse level of 16 patches)
    from gigapatch.diffusion import denoiser as dmod

    vals = _rand(200, 75, seed=5)
    g = torch.Generator().manual_seed(6)
    w = torch.rand(1000, 200, generator=g)
    w[w < 0.995] = 0.0  # about one weight in 200 kept per row: the gather path
    torch.testing.assert_close(dmod._weighted_sum(w, vals), w @ vals, atol=1e-6, rtol=1e-5)
    seen = []
    real_index_add = torch.Tensor.index_add_

    def spy(out, dim, rows, contrib):
        seen.append(contrib.shape[0])
        return real_index_add(out, dim, rows, contrib)

    monkeypatch.setattr(torch.Tensor, "index_add_", spy)
    dense = torch.rand(1000, 16, generator=g) + 0.1  # 16 keys, every weight kept
    torch.testing.assert_close(dmod._weighted_sum(dense, vals[:16]), dense @ vals[:16])
    assert seen == []  # dense GEMM, no gather
    few = torch.zeros(1000, 200)
    few[torch.arange(1000), torch.arange(1000) % 200] = 1.0
    few[::2, 7] = 0.5  # 1.5 weights per row
    torch.testing.assert_close(dmod._weighted_sum(few, vals), few @ vals)
    assert seen and max(seen) <= 1000 + 200  # gathered in blocks of about m rows


def test_multiplicity_merge_equals_duplicated_set():
    base = _rand(10, 12, seed=5)
    counts = torch.tensor([1, 3, 1, 2, 1, 1, 4, 1, 1, 2])
    dup = PatchIndex.from_patches(base.repeat_interleave(counts, 0), 2, 3)
    merged = PatchIndex.from_patches(base, 2, 3, counts=counts)
    x = _rand(25, 12, seed=6)
    for s in (0.95, 0.5, 0.1):
        torch.testing.assert_close(posterior_mean_exact(x, merged, 1 - s, s),
                                   posterior_mean_exact(x, dup, 1 - s, s),
                                   atol=1e-5, rtol=1e-4)


def test_from_image_merges_duplicates_exactly():
    flat = torch.zeros(1, 9, 9)
    flat[:, 4:, 4:] = 0.5  # many identical patches
    idx = PatchIndex.from_image(flat, 3)
    raw = PatchIndex.from_image(flat, 3, merge_duplicates=False)
    assert idx.size < raw.size and idx.total_count == pytest.approx(raw.size)
    x = _rand(10, 9, seed=7)
    torch.testing.assert_close(posterior_mean_exact(x, idx, 0.7, 0.3),
                               posterior_mean_exact(x, raw, 0.7, 0.3), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("s", [0.9, 0.5, 0.2])
def test_fused_attention_equals_exact(s):
    # counts exercise the s^2 log n column of the keys
    base = _rand(60, 3 * 5 * 5, seed=8)
    counts = torch.randint(1, 4, (60,), generator=torch.Generator().manual_seed(0))
    idx = PatchIndex.from_patches(base, 5, 3, counts=counts)
    x = _rand(30, idx.dim, seed=9)
    torch.testing.assert_close(posterior_mean_fused(x, idx, 1 - s, s),
                               posterior_mean_exact(x, idx, 1 - s, s), atol=2e-5, rtol=1e-4)


def test_fold_with_vanishing_rho_is_centre_pixel_reconstruction():
    p, c = 5, 2
    x = _rand(c, 14, 13, seed=10)

    def nonlinear(q):  # any patch map: each output pixel must come from its own centre
        return torch.tanh(3 * q) + q.mean(1, keepdim=True)

    out = image_denoise(x, nonlinear, p, 0.01)
    patches = extract_patches(x, p)  # rows over top-left corners
    den = nonlinear(patches).reshape(14 - p + 1, 13 - p + 1, c, p, p)
    centre = den[:, :, :, p // 2, p // 2].permute(2, 0, 1)  # patch centred at (y, x)
    r = p // 2
    torch.testing.assert_close(out[:, r:14 - r, r:13 - r], centre, atol=1e-5, rtol=1e-5)


def test_fold_with_infinite_rho_is_plain_average():
    p = 3
    x = _rand(1, 6, 7, seed=11)
    out = image_denoise(x, lambda q: q * 0 + torch.arange(q.shape[0])[:, None].float(), p,
                        math.inf)
    # plain average of the indices of the patches covering each pixel
    want = torch.zeros(6, 7)
    cnt = torch.zeros(6, 7)
    for i in range(6 - p + 1):
        for j in range(7 - p + 1):
            want[i:i + p, j:j + p] += i * (7 - p + 1) + j
            cnt[i:i + p, j:j + p] += 1
    torch.testing.assert_close(out[0], want / cnt)
    assert fold_window(p, math.inf).eq(1).all()


def test_identity_denoiser_folds_back_to_the_image():
    x = _rand(3, 20, 17, seed=12)
    torch.testing.assert_close(image_denoise(x, lambda q: q, 5, 0.2), x, atol=1e-5, rtol=1e-5)
    # row bands (small budget) give the same result
    torch.testing.assert_close(image_denoise(x, lambda q: q * q, 5, 0.2, memory_budget_mb=0.01),
                               image_denoise(x, lambda q: q * q, 5, 0.2), atol=1e-6, rtol=1e-5)


def test_ddim_step_keeps_the_perfect_trajectory():
    y, e = _rand(2, 5, 5, seed=13), torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(1))
    s, s_next = 0.8, 0.55
    x_t = (1 - s) * y + s * e
    torch.testing.assert_close(ddim_step(x_t, y, y, s, s_next, 0.0, None),
                               (1 - s_next) * y + s_next * e)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_sampler_fed_the_perfect_denoiser_lands_on_the_target(eta):
    target = _rand(3, 9, 8, seed=14)
    seen = []

    def perfect(x, s):
        seen.append(s)
        return target

    x0 = gaussian_noise(0, 0, -1, (0, 0, 9, 8), 3)
    out = sample_ddim(perfect, x0, flow_linear(7), eta=eta,
                      noise=lambda i: gaussian_noise(0, 0, i, (0, 0, 9, 8), 3))
    torch.testing.assert_close(out, target)
    assert seen[0] == 1.0 and seen[-1] == pytest.approx(1e-4) and len(seen) == 7


def test_sampler_on_a_single_patch_set_reproduces_it():
    # the prior is one image's patches and the output has the image's size: with one patch
    # (image == patch) the posterior is that patch at every step
    img = _rand(3, 5, 5, seed=15)
    idx = PatchIndex.from_image(img, 5)
    den = make_denoise(idx, patch_size=5, rho=0.2)
    out = sample_level(den, box=(0, 0, 5, 5), channels=3, seed=1, level=0,
                       sigmas=flow_linear(5), eta=0.0)
    torch.testing.assert_close(out, img)


def test_noise_is_keyed_by_global_coordinates():
    full = gaussian_noise(7, 2, 3, (0, 0, 40, 50), 3)
    win = gaussian_noise(7, 2, 3, (13, 21, 30, 44), 3)
    torch.testing.assert_close(win, full[:, 13:30, 21:44], rtol=0, atol=0)
    assert not torch.equal(full, gaussian_noise(8, 2, 3, (0, 0, 40, 50), 3))
    assert not torch.equal(full, gaussian_noise(7, 2, 4, (0, 0, 40, 50), 3))
    assert not torch.equal(full[0], full[1])
    big = gaussian_noise(0, 0, 0, (0, 0, 256, 256), 1).double()
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1) < 0.02
    # neighbours are uncorrelated
    assert abs((big[:, 1:, :] * big[:, :-1, :]).mean()) < 0.02


def test_pyramid_filters_are_window_equivariant():
    x = _rand(2, 37, 29, seed=16)
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


def test_auto_levels_match_the_paper():
    assert auto_level_count((186, 248), 15) == 4
    assert auto_level_count((15, 40), 15) == 1
    shapes = plan_level_shapes((186, 248), (186, 496), 15, 4)
    assert [s.out_hw for s in shapes] == [(24, 62), (47, 124), (93, 248), (186, 496)]
    # an output too small for the coarse levels drops them
    assert len(plan_level_shapes((186, 248), (40, 40), 15, 4)) == 2


def _window_sample(index, p, t, whole_hw, box, seed, coarse=None):
    sig = flow_linear(t)
    den = make_denoise(index, patch_size=p, rho=0.2)
    up = None
    if coarse is not None:
        cb = coarse_box_for(box, coarse.shape[1:])
        up = upsample_to_box(coarse[:, cb[0]:cb[2], cb[1]:cb[3]], cb[:2], box)
    return sample_level(den, box=box, channels=3, seed=seed, level=1, sigmas=sig, eta=0.5,
                        coarse_up=up)


def test_window_with_derived_halo_reproduces_the_whole_level():
    p, t = 5, 3
    ref = _rand(3, 24, 24, seed=17)
    index = PatchIndex.from_image(ref, p)
    coarse = _rand(3, 22, 25, seed=18) * 0.5
    h, w = 44, 50
    whole = _window_sample(index, p, t, (h, w), (0, 0, h, w), 3, coarse)
    halo = level_halo(p, t, blended=True)
    core = (16, 18, 30, 34)  # even origin
    box = (max(0, core[0] - halo), max(0, core[1] - halo),
           min(h, core[2] + halo), min(w, core[3] + halo))
    win = _window_sample(index, p, t, (h, w), box, 3, coarse)
    got = win[:, core[0] - box[0]:core[2] - box[0], core[1] - box[1]:core[3] - box[1]]
    want = whole[:, core[0]:core[2], core[1]:core[3]]
    assert (got - want).abs().max() <= 1e-4
    # and a halo that is too small does not: the halo is not over-generous by accident
    small = 4
    box2 = (core[0] - small, core[1] - small, core[2] + small, core[3] + small)
    win2 = _window_sample(index, p, t, (h, w), box2, 3, coarse)
    got2 = win2[:, small:small + 14, small:small + 16]
    assert (got2 - want).abs().max() > 1e-3


TINY = ["sampler.patch_size=5", "sampler.steps=4", "sampler.levels=2"]


def test_same_seed_same_image_different_seed_different_image():
    ref = np.random.default_rng(0).random((20, 24, 3)).astype(np.float32)
    cfg = load_config(overrides=TINY)
    a = gigapatch.generate(ref, seed=1, config=cfg, device="cpu")
    b = gigapatch.generate(ref, seed=1, config=cfg, device="cpu")
    c = gigapatch.generate(ref, seed=2, config=cfg, device="cpu")
    assert a.shape == (20, 24, 3) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01


def test_other_sizes_and_aspect_ratios():
    ref = np.random.default_rng(1).random((20, 24)).astype(np.float32)
    cfg = load_config(overrides=TINY)
    assert gigapatch.generate(ref, size=(40, 15), config=cfg).shape == (15, 40, 1)
    assert gigapatch.generate(ref, scale=(0.75, 1.5), config=cfg).shape == (30, 18, 1)


def test_sample_of_a_real_reference_beats_blur_and_noise():
    from gigapatch.metrics import patch_fd, patch_swd
    from gigapatch.storage.imageio import read_image

    ref = read_image(DATA / "wild_bush_crop.png")[0]  # 72x96 foliage texture
    cfg = load_config(overrides=["sampler.patch_size=7", "sampler.steps=5"])
    sample = gigapatch.generate(ref, seed=0, config=cfg)
    t = torch.from_numpy(ref).permute(2, 0, 1)[None]
    for _ in range(2):  # a mild blur: a 3x3 box twice
        t = torch.nn.functional.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)
    blurred = t[0].permute(1, 2, 0).numpy()
    noise = np.random.default_rng(0).random(ref.shape).astype(np.float32)
    kw = dict(min_size=16, n_directions=64)
    swd = {k: patch_swd(ref, v, **kw) for k, v in
           (("sample", sample), ("blurred", blurred), ("noise", noise))}
    # finest scale: the sample keeps the texture's fine statistics, the blur does not
    assert swd["sample"].levels[0] < swd["blurred"].levels[0]
    assert swd["sample"].mean < 0.25 * swd["noise"].mean
    fd = {k: patch_fd(ref, v).mean for k, v in
          (("sample", sample), ("blurred", blurred), ("noise", noise))}
    assert fd["sample"] < 0.5 * fd["blurred"] and fd["sample"] < 0.05 * fd["noise"]
    # and it is a new image, not a copy of the reference
    assert np.abs(sample - ref).mean() > 0.05


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("s", [0.9, 0.5, 0.2])
def test_fused_on_cuda_equals_exact_on_cpu(s):
    base = _rand(300, 3 * 15 * 15, seed=20)
    idx = PatchIndex.from_patches(base, 15, 3)
    x = _rand(500, idx.dim, seed=21)
    want = posterior_mean_exact(x, idx, 1 - s, s)
    got_exact = posterior_mean_exact(x.cuda(), idx.to("cuda"), 1 - s, s).cpu()
    torch.testing.assert_close(got_exact, want, atol=1e-4, rtol=1e-3)
    got = posterior_mean_fused(x.cuda(), idx.to("cuda"), 1 - s, s).cpu()
    err = (got - want).abs().max().item()
    print(f"fused on CUDA vs exact on CPU, s={s}: max abs diff {err:.3g}")
    # CUDA's fp32 attention kernel loses precision as the logits grow (1/s^2): at s=0.2 an
    # H200 missed 1e-4 (2026-11-26), so the fused path is opt-in and never auto's choice
    assert err <= (1e-4 if s >= 0.5 else 5e-2)


@pytest.mark.gpu
@needs_cuda
def test_noise_on_cuda_equals_cpu():
    cpu = gaussian_noise(3, 1, 2, (5, 7, 69, 90), 3)
    gpu = gaussian_noise(3, 1, 2, (5, 7, 69, 90), 3, device="cuda").cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-6, rtol=1e-6)


@pytest.mark.gpu
@needs_cuda
def test_generate_on_cuda_matches_cpu():
    ref = np.random.default_rng(3).random((24, 28, 3)).astype(np.float32)
    cfg = load_config(overrides=TINY + ["denoiser.backend=exact", "sampler.eta=1"])
    a = gigapatch.generate(ref, seed=4, config=cfg, device="cpu")
    b = gigapatch.generate(ref, seed=4, config=cfg, device="cuda")
    assert np.abs(a - b).max() < 1e-3
