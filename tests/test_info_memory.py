"""`gigapatch info`'s memory figures are the memory of the backend each level runs with
(issue 12: the column showed the exact denoiser's dictionary, 34 GiB for a 13 MP
reference's finest level, where the level runs fast within a 2 GiB index budget; the 4096^2
default run measured 6.55 GB).

Oracle: the tensors of a fast level actually built (``PatchIndex.from_image`` +
``build_fast_level``), counted byte by byte. Mutants killed: the estimate without the
reduced-space copy or without the patches (under the built level); a fast level costed as
exact (its dictionary of every patch, no index budget); a tiled level's window taken as the
whole level, or without its halos."""

import dataclasses

import torch

from gigapatch.config import load_config
from gigapatch.diffusion.backends import _fast_level_bytes
from gigapatch.diffusion.fast import build_fast_level
from gigapatch.diffusion.levels import Level
from gigapatch.diffusion.patch_index import PatchIndex
from gigapatch.info import fast_index_bytes, level_costs
from gigapatch.pipeline.plan import denoiser_settings, window_bytes_per_pixel

P, C = 5, 3


def test_fast_index_estimate_matches_a_built_level():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand((C, 40, 44), generator=g) * 2 - 1
    index = PatchIndex.from_image(ref, P)
    fast = build_fast_level(index, pca_dims=16, dictionary_size=64)
    assert fast.dictionary is not fast.index  # the separate broad-step dictionary exists
    built = index.nbytes + _fast_level_bytes(fast) + sum(
        t.element_size() * t.numel() for t in (fast.members, fast.member_start,
                                                fast.member_count))
    est = fast_index_bytes(index.size, (40, 44), dim=C * P * P, pca_dims=16,
                           dictionary_size=64)
    assert 0.97 <= est / built <= 1.15, (est, built)


def test_level_costs_follow_the_backend_and_the_tile():
    settings = dataclasses.replace(denoiser_settings(load_config("default")),
                                   index_budget_mb=1)
    ref_hw, out_hw, halo, tile = (300, 400), (4000, 6000), 40, 512
    patches = (ref_hw[0] - P + 1) * (ref_hw[1] - P + 1)
    fast = Level(3, ref_hw, out_hw, patches, "fast", "tiled", halo)
    exact = dataclasses.replace(fast, backend="exact")
    f, e = level_costs([fast, exact], patch_size=P, channels=C, steps=10,
                       memory_budget_mb=64, settings=settings, tile=tile)
    cap = 2**20 // (C * P * P * 4 + 32)  # entries within the 1 MiB index budget
    assert f.dictionary_bytes == fast_index_bytes(cap, ref_hw, dim=C * P * P,
                                                  pca_dims=settings.pca_dims,
                                                  dictionary_size=settings.dictionary_size)
    assert e.dictionary_bytes == patches * (C * P * P * 4 + 4)  # every patch, float32
    bpp = window_bytes_per_pixel(C, P, settings, backend="fast")
    assert f.window_bytes == (tile + 2 * halo) ** 2 * bpp
    assert f.memory_bytes == f.dictionary_bytes + f.working_bytes + f.window_bytes
    whole = dataclasses.replace(fast, mode="global", halo=0)
    (w,) = level_costs([whole], patch_size=P, channels=C, steps=10, memory_budget_mb=64,
                       settings=settings, tile=tile)
    assert w.window_bytes == out_hw[0] * out_hw[1] * bpp
    assert f.gflop == e.gflop  # the work column stays the exact denoiser's
