"""PatchIndex: duplicate merging, multiplicities, pruning (save/load: tests/storage)."""

from __future__ import annotations

import pytest
import torch

from gigapatch.diffusion.denoiser import posterior_mean_exact
from gigapatch.diffusion.patch_index import PatchIndex, extract_patches

from ..helpers import rand, texture

P = 5


def test_multiplicity_merge_equals_duplicated_set():
    base = rand(10, 12, seed=5)
    counts = torch.tensor([1, 3, 1, 2, 1, 1, 4, 1, 1, 2])
    dup = PatchIndex.from_patches(base.repeat_interleave(counts, 0), 2, 3)
    merged = PatchIndex.from_patches(base, 2, 3, counts=counts)
    x = rand(25, 12, seed=6)
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
    x = rand(10, 9, seed=7)
    torch.testing.assert_close(posterior_mean_exact(x, idx, 0.7, 0.3),
                               posterior_mean_exact(x, raw, 0.7, 0.3), atol=1e-6, rtol=1e-5)


def test_prune_zero_tolerance_is_exact():
    img = texture()
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
    img = texture()
    coarse = PatchIndex.from_image(img, P, prune_tolerance=1.0)
    assert coarse.size < PatchIndex.from_image(img, P).size
    sub = PatchIndex.from_image(img, P, max_entries=50)
    assert sub.size <= 50
    assert sub.total_count == pytest.approx((28 - P + 1) * (32 - P + 1))
    assert int(sub.position_map.max()) < sub.size
