"""The fast backend (diffusion.fast): exactness limits, validity, determinism, locality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gigapatch.diffusion.denoiser import posterior_mean_exact
from gigapatch.diffusion.fast import (FastDenoiser, FastParams, build_fast_level,
                                      fast_extra_halo, query_positions)
from gigapatch.diffusion.generator import level_halo, make_denoise, sample_level
from gigapatch.diffusion.patch_index import PatchIndex, extract_patches
from gigapatch.diffusion.schedules import flow_linear
from gigapatch.errors import GigapatchError

P = 5


def _texture(h: int = 28, w: int = 32, seed: int = 0) -> torch.Tensor:
    """A small structured image in [-1, 1] (stripes + blobs + a flat area + noise)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    base = torch.stack([torch.sin(xx / 2.0), torch.cos(yy / 3.0), torch.sin((xx + yy) / 4.0)])
    img = 0.7 * base + 0.2 * torch.rand((3, h, w), generator=g)
    img[:, :6, :8] = 0.25  # exact duplicates
    return img.clamp(-1, 1)


def _run(denoise, box, seed=3, steps=6, level=1):
    return sample_level(denoise, box=box, channels=3, seed=seed, level=level,
                        sigmas=flow_linear(steps), eta=0.0)


def test_fast_equals_exact_with_all_candidates():
    idx = PatchIndex.from_image(_texture(), P)
    box = (0, 0, 22, 26)
    exact = _run(make_denoise(idx, patch_size=P, rho=0.2, backend="exact"), box)
    params = FastParams(candidates=idx.size, broad_steps=2, broad_stride=1, query_stride=1,
                        init="exhaustive")
    fast = _run(make_denoise(idx, patch_size=P, rho=0.2, backend="fast", fast=params,
                             dictionary_size=10**9), box)
    # bound: float32 summation order only
    assert torch.allclose(fast, exact, atol=1e-4), (fast - exact).abs().max()


def test_candidates_always_valid():
    idx = PatchIndex.from_image(_texture(), P)
    lv = build_fast_level(idx, pca_dims=8, dictionary_size=16)
    dn = FastDenoiser(lv, patch_size=P, rho=0.2,
                      params=FastParams(candidates=4, broad_steps=1, query_stride=2, probes=3))
    dn = dn.bind(origin=(2, 4), seed=1, level=0)
    x = torch.randn(3, 21, 23)
    for s in flow_linear(8).tolist():
        x_hat = dn(x, s)
        assert torch.isfinite(x_hat).all()
        if dn._cand is not None:
            assert dn._cand.min() >= 0 and dn._cand.max() < idx.size
            assert dn._cand.shape[1] == 4
        x = 0.7 * x_hat + 0.3 * x


def test_prune_zero_tolerance_is_exact():
    img = _texture()
    full = PatchIndex.from_image(img, P, merge_duplicates=False)
    merged = full.prune(0.0)
    assert merged.size < full.size  # the flat corner has duplicates
    assert merged.total_count == pytest.approx(full.size)
    # every position maps to an entry with the same patch
    pm = merged.position_map.reshape(-1)
    assert torch.equal(merged.patches[pm], extract_patches(img, P))
    x = torch.randn(40, full.dim)
    for a, s in ((0.9, 0.1), (0.5, 0.5), (0.1, 0.9)):
        assert torch.allclose(posterior_mean_exact(x, merged, a, s),
                              posterior_mean_exact(x, full, a, s), atol=1e-5)


def test_prune_tolerance_and_budget():
    img = _texture()
    coarse = PatchIndex.from_image(img, P, prune_tolerance=1.0)
    assert coarse.size < PatchIndex.from_image(img, P).size
    sub = PatchIndex.from_image(img, P, max_entries=50)
    assert sub.size <= 50
    assert sub.total_count == pytest.approx((28 - P + 1) * (32 - P + 1))
    assert int(sub.position_map.max()) < sub.size


def test_save_load_roundtrip(tmp_path):
    idx = PatchIndex.from_image(_texture(), P)
    idx.save(tmp_path / "lvl")
    back = PatchIndex.load(tmp_path / "lvl")
    for name in ("patches", "log_counts", "sq_norms", "positions", "position_map"):
        assert torch.equal(getattr(back, name), getattr(idx, name))
    x = torch.randn(8, idx.dim)
    assert torch.equal(posterior_mean_exact(x, back, 0.5, 0.5),
                       posterior_mean_exact(x, idx, 0.5, 0.5))


def _fast(idx, **kw):
    params = FastParams(candidates=4, broad_steps=2, query_stride=kw.pop("stride", 2),
                        probes=2, broad_stride=2)
    return make_denoise(idx, patch_size=P, rho=0.2, backend="fast", fast=params,
                        pca_dims=6, dictionary_size=32)


def test_deterministic_across_runs_and_threads():
    idx = PatchIndex.from_image(_texture(), P)
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
    idx = PatchIndex.from_image(_texture(), P)
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


def test_exact_refuses_oversized_index_and_fast_runs():
    from gigapatch.api import generate
    from gigapatch.config import load_config

    ref = (np.random.default_rng(0).random((100, 110, 3)) * 255).astype(np.uint8)
    small = ["sampler.patch_size=15", "denoiser.index_budget_mb=16", "sampler.steps=3"]
    with pytest.raises(GigapatchError, match="denoiser.backend=fast"):
        generate(ref, size=(32, 32), config=load_config(None, small + ["denoiser.backend=exact"]),
                 device="cpu")
    out = generate(ref, size=(40, 36), config=load_config(None, small + [
        "denoiser.backend=fast"]), device="cpu")
    assert out.shape == (36, 40, 3) and np.isfinite(out).all()


@pytest.mark.gpu
def test_fast_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    idx = PatchIndex.from_image(_texture(), P)
    box = (0, 0, 30, 34)
    cpu = _run(_fast(idx), box)
    gpu = sample_level(_fast(idx.to("cuda")), box=box, channels=3, seed=3, level=1,
                       sigmas=flow_linear(6), eta=0.0, device="cuda").cpu()
    # same candidates up to float ties; the result agrees to float tolerance
    assert torch.allclose(cpu, gpu, atol=1e-3), (cpu - gpu).abs().max()
