"""storage.patch_index_io: a PatchIndex survives a save/load round trip bit for bit."""

from __future__ import annotations

import pytest
import torch

from gigapatch.diffusion.denoiser import posterior_mean_exact
from gigapatch.diffusion.patch_index import PatchIndex
from gigapatch.storage.patch_index_io import (PATCH_INDEX_ARRAYS, load_patch_index,
                                              save_patch_index)

from ..helpers import texture

P = 5


@pytest.mark.parametrize("budget", [None, 60])
@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip(tmp_path, mmap, budget):
    idx = PatchIndex.from_image(texture(), P, max_entries=budget)
    assert float(idx.log_counts.max()) > 0  # some entries were merged
    save_patch_index(tmp_path / "lvl", idx)
    back = PatchIndex(**load_patch_index(tmp_path / "lvl", mmap=mmap))
    for name in PATCH_INDEX_ARRAYS:
        a, b = getattr(back, name), getattr(idx, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert (back.patch_size, back.channels) == (idx.patch_size, idx.channels)
    # a subsampled index keeps one map cell per g x g positions: step and size survive
    assert (back.position_step, back.position_shape) == (idx.position_step, idx.position_shape)
    assert (idx.position_step > 1) == (budget is not None)
    assert torch.equal(back.full_position_map(), idx.full_position_map())
    x = torch.randn(8, idx.dim, generator=torch.Generator().manual_seed(1))
    assert torch.equal(posterior_mean_exact(x, back, 0.5, 0.5),
                       posterior_mean_exact(x, idx, 0.5, 0.5))


def test_round_trip_without_positions_and_overwrite(tmp_path):
    full = PatchIndex.from_image(texture(), P)
    bare = PatchIndex.from_patches(full.patches[:10], P, 3)
    save_patch_index(tmp_path / "lvl", full)
    save_patch_index(tmp_path / "lvl", bare)  # replaces the whole folder
    kw = load_patch_index(tmp_path / "lvl")
    assert kw["positions"] is None and kw["position_map"] is None
    assert sorted(p.name for p in (tmp_path / "lvl").iterdir()) == \
        ["log_counts.npy", "meta.json", "patches.npy", "sq_norms.npy"]
    assert torch.equal(PatchIndex(**kw).patches, bare.patches)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lvl"]
