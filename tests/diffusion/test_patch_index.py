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


def _unique_prune_oracle(patches: torch.Tensor, log_counts: torch.Tensor):
    """The pre-streaming prune: torch.unique over the rows, first occurrence kept."""
    _, inverse, counts = torch.unique(patches, dim=0, return_inverse=True, return_counts=True)
    n = patches.shape[0]
    first = torch.full((counts.numel(),), n, dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(n), reduce="amin")
    first, perm = torch.sort(first)
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(first.numel())
    mult = torch.zeros(first.numel()).index_add_(0, rank[inverse], log_counts.exp())
    return patches[first], mult, rank[inverse]


def _blocky(seed: int) -> torch.Tensor:
    # 3-channel image of 4x4 blocks of 3 grey values plus a -0.0 / 0.0 region: many exact
    # duplicate patches at scattered positions
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 2, (1, 6, 7), generator=g).float().repeat_interleave(6, 1)
    img = img.repeat_interleave(6, 2).repeat(3, 1, 1) - 0.5
    img[:, :6, :6] = 0.0
    img[:, :3, :6] = -0.0
    return img


@pytest.mark.parametrize("chunk", [None, 700])
@pytest.mark.parametrize("g_budget", [None, 200])
def test_streamed_index_build_equals_the_unblocked_oracle(monkeypatch, chunk, g_budget):
    # kills: a wrong block boundary in gather_patches / _row_sq_norms (rows skipped or
    # shifted), a hash that merges different rows or splits equal ones (-0.0 vs 0.0), and
    # a prune that keeps another representative or order than torch.unique's first occurrence
    from gigapatch.diffusion import patch_index as pi

    if chunk is not None:
        monkeypatch.setattr(pi, "CHUNK_BYTES", chunk)  # blocks of a few rows
    img = _blocky(7)
    idx = PatchIndex.from_image(img, P, max_entries=g_budget, merge_duplicates=False)
    if g_budget is None:
        assert torch.equal(idx.patches, extract_patches(img, P))
    assert torch.equal(idx.sq_norms, (idx.patches * idx.patches).sum(1))
    pruned = idx.prune()
    want, mult, new_of_old = _unique_prune_oracle(idx.patches, idx.log_counts)
    assert pruned.size < idx.size / 3  # really merged
    assert torch.equal(pruned.patches, want)
    assert torch.equal(pruned.log_counts, torch.log(mult))
    assert torch.equal(pruned.position_map, new_of_old[idx.position_map])


def test_hash_collisions_fall_back_to_exact_grouping(monkeypatch):
    # all-ones multipliers: a row and its permutation share a hash. Kills a prune that
    # trusts the hash without comparing the rows (it would merge [a, b] with [b, a]).
    from gigapatch.diffusion import patch_index as pi

    monkeypatch.setattr(pi, "_hash_coefficients", lambda d: torch.ones(d, dtype=torch.int64))
    rows = torch.tensor([[0.25, 0.5], [0.5, 0.25], [0.25, 0.5], [0.0, 0.75]])
    assert pi._duplicate_groups(rows) is None
    pruned = PatchIndex.from_patches(rows, 1, 2).prune()
    assert torch.equal(pruned.patches, rows[[0, 1, 3]])
    assert torch.equal(pruned.log_counts.exp(), torch.tensor([2.0, 1.0, 1.0]))


@pytest.mark.parametrize("chunk", [None, 700])
@pytest.mark.parametrize("budget", [None, 200])
@pytest.mark.parametrize("tol", [0.0, 0.3])
def test_streamed_merge_equals_gather_then_prune_and_never_holds_the_raw_set(
        monkeypatch, chunk, budget, tol):
    # from_image merges while it gathers (hash pass over blocks, then only the surviving
    # entries are gathered). Oracle: the in-memory route, every kept position gathered
    # and then PatchIndex.prune, and a position map written out from the grid step.
    # Kills: gathering the whole un-merged set before merging (the old peak: two copies of
    # the patches), a representative other than the first occurrence, a position map
    # cell that points at the wrong entry (y // g vs y % g, a transposed grid), a step or
    # level size lost on the way.
    from gigapatch.diffusion import patch_index as pi

    if chunk is not None:
        monkeypatch.setattr(pi, "CHUNK_BYTES", chunk)
    img = _blocky(3)
    want = PatchIndex.from_image(img, P, max_entries=budget,
                                 merge_duplicates=False).prune(tol)
    raw_n = PatchIndex.from_image(img, P, max_entries=budget, merge_duplicates=False).size
    calls = []
    real = pi.gather_patches

    def spy(image, ys, xs, p):
        calls.append(ys.numel())
        return real(image, ys, xs, p)

    monkeypatch.setattr(pi, "gather_patches", spy)
    got = PatchIndex.from_image(img, P, max_entries=budget, prune_tolerance=tol)
    assert got.size < raw_n  # merged
    # never the whole un-merged set at once: each gather is one hash/check block or the
    # final entries (with chunk=700 a block is one row, so gathering raw_n rows fails)
    block = pi._chunk_rows(img.shape[0] * P * P * 16)
    assert max(calls) <= max(block, got.size) and (chunk is None or block < raw_n)
    for name in ("patches", "log_counts", "sq_norms", "positions", "position_map"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert (got.position_step, got.position_shape) == (want.position_step, want.position_shape)
    hp, wp = img.shape[1] - P + 1, img.shape[2] - P + 1
    g = got.position_step
    assert got.position_shape == (hp, wp) and (g > 1) == (budget is not None)
    assert got.position_map.shape == (-(-hp // g), -(-wp // g))
    # every position maps to the entry of its grid cell's kept position (y // g * g)
    full = got.full_position_map()
    pos = got.positions[full]  # (hp, wp, 2)
    ys, xs = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
    cell = extract_patches(img, P).reshape(hp, wp, -1)[ys // g * g, xs // g * g]
    key = (lambda t: t) if tol == 0 else (lambda t: torch.round(t / (2 * tol)))
    assert torch.equal(key(got.patches[full] + 0.0), key(cell + 0.0))
    assert bool(((pos[..., 0] % g) == 0).all() and ((pos[..., 1] % g) == 0).all())


def test_streamed_build_checks_rows_against_their_entry_on_a_hash_collision(monkeypatch):
    # all-ones multipliers: the two patches of this image, [a, b, b, a] and [b, a, a, b],
    # share a hash. Kills a streamed build that merges on the hash alone (one entry).
    from gigapatch.diffusion import patch_index as pi

    monkeypatch.setattr(pi, "_hash_coefficients", lambda d: torch.ones(d, dtype=torch.int64))
    a, b = 0.25, -0.5
    img = torch.tensor([[[a, b, a], [b, a, b]]])
    got = PatchIndex.from_image(img, 2)
    assert got.size == 2
    want = PatchIndex.from_image(img, 2, merge_duplicates=False).prune()
    for name in ("patches", "log_counts", "positions", "position_map"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
