"""The closed-form posterior mean (exact and fused attention) against the textbook
formula in float64, and its limits (a = 0, vanishing noise)."""

from __future__ import annotations

import pytest
import torch

from gigapatch.diffusion.denoiser import posterior_mean_exact, posterior_mean_fused
from gigapatch.diffusion.patch_index import PatchIndex

from ..helpers import rand


def _brute_posterior(x, patches, log_counts, a, s):
    """Float64 textbook formula: softmax of -|x - a y|^2 / (2 s^2) + log n."""
    x, y = x.double(), patches.double()
    d2 = ((x[:, None, :] - a * y[None]) ** 2).sum(-1)
    w = torch.softmax(-d2 / (2 * s * s) + log_counts.double()[None], dim=1)
    return (w @ y).float()


@pytest.fixture
def index():
    return PatchIndex.from_image(rand(3, 12, 11), 5)


@pytest.mark.parametrize("s", [0.9, 0.5, 0.2])
def test_exact_matches_textbook_formula(index, s):
    x = rand(40, index.dim, seed=1)
    a = 1 - s
    got = posterior_mean_exact(x, index, a, s)
    want = _brute_posterior(x, index.patches, index.log_counts, a, s)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_exact_with_tiny_budget_equals_one_block(index):
    # the online softmax over many key blocks gives the single-block answer
    x = rand(33, index.dim, seed=2)
    big = posterior_mean_exact(x, index, 0.6, 0.4, memory_budget_mb=1024)
    small = posterior_mean_exact(x, index, 0.6, 0.4, memory_budget_mb=0.05)
    torch.testing.assert_close(small, big, atol=1e-6, rtol=1e-5)


def test_a_zero_returns_patch_set_mean(index):
    x = rand(7, index.dim, seed=3)
    want = index.patches.mean(0).expand(7, -1)
    torch.testing.assert_close(posterior_mean_exact(x, index, 0.0, 1.0), want)
    torch.testing.assert_close(posterior_mean_fused(x, index, 0.0, 1.0), want,
                               atol=1e-5, rtol=1e-5)


def test_small_noise_returns_nearest_patch(index):
    # queries near known patches: the posterior collapses onto the nearest one
    pick = torch.tensor([0, 5, 17, 42])
    x = index.patches[pick] + 0.01 * rand(4, index.dim, seed=4)
    got = posterior_mean_exact(x, index, 1.0, 1e-3)
    nearest = torch.cdist(x, index.patches).argmin(1)
    torch.testing.assert_close(got, index.patches[nearest])


def test_weighted_sum_gather_equals_dense_and_stays_small(monkeypatch):
    # the underflow gather gives the dense product; with few keys whose weights all
    # survive it must not gather (nnz, D) rows (n times the result: 3 GB on a 2048^2
    # coarse level of 16 patches)
    from gigapatch.diffusion import denoiser as dmod

    vals = rand(200, 75, seed=5)
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


@pytest.mark.parametrize("s", [0.9, 0.5, 0.2])
def test_fused_attention_equals_exact(s):
    # counts exercise the s^2 log n column of the keys
    base = rand(60, 3 * 5 * 5, seed=8)
    counts = torch.randint(1, 4, (60,), generator=torch.Generator().manual_seed(0))
    idx = PatchIndex.from_patches(base, 5, 3, counts=counts)
    x = rand(30, idx.dim, seed=9)
    torch.testing.assert_close(posterior_mean_fused(x, idx, 1 - s, s),
                               posterior_mean_exact(x, idx, 1 - s, s), atol=2e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("s", [0.9, 0.5, 0.2])
def test_fused_on_cuda_equals_exact_on_cpu(s):
    base = rand(300, 3 * 15 * 15, seed=20)
    idx = PatchIndex.from_patches(base, 15, 3)
    x = rand(500, idx.dim, seed=21)
    want = posterior_mean_exact(x, idx, 1 - s, s)
    got_exact = posterior_mean_exact(x.cuda(), idx.to("cuda"), 1 - s, s).cpu()
    torch.testing.assert_close(got_exact, want, atol=1e-4, rtol=1e-3)
    got = posterior_mean_fused(x.cuda(), idx.to("cuda"), 1 - s, s).cpu()
    err = (got - want).abs().max().item()
    print(f"fused on CUDA vs exact on CPU, s={s}: max abs diff {err:.3g}")
    # CUDA's fp32 attention kernel loses precision as the logits grow (1/s^2): at s=0.2 an
    # H200 missed 1e-4 (2026-11-26), so the fused path is opt-in and never auto's choice
    assert err <= (1e-4 if s >= 0.5 else 5e-2)
