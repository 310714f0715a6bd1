"""Per-level denoiser settings (diffusion.backends.level_settings): a small level queries
every patch.

Mutants killed: the rule never applied (or applied by the generator to no level), a
strict ``<`` at the threshold, the broad steps left at their coarse stride, and a
threshold of 0 that still switches."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gigapatch.config import load_config
from gigapatch.diffusion.backends import level_settings
from gigapatch.pipeline.plan import denoiser_settings
from gigapatch.pipeline.whole import sample_levels

from ..helpers import rand

SETTINGS = denoiser_settings(load_config())


def test_levels_up_to_the_threshold_query_every_patch():
    s = replace(SETTINGS, full_stride_pixels=120, query_stride=3, broad_stride=4)
    small = level_settings(s, (10, 12))  # exactly 120 pixels
    assert (small.query_stride, small.broad_stride) == (1, 1)
    assert replace(small, query_stride=3, broad_stride=4) == s  # nothing else changes
    assert level_settings(s, (11, 11)) is s  # 121 pixels: the configured strides
    off = replace(s, full_stride_pixels=0)
    assert level_settings(off, (1, 1)) is off


def _levels(overrides):
    # a tiny photo-like reference: smooth colour plus noise
    ref = (rand(24, 28, 3, seed=5).numpy() * 0.3 +
           np.linspace(0, 0.7, 28, dtype=np.float32)[None, :, None])
    cfg = load_config("default", ["sampler.patch_size=5", "sampler.steps=4",
                                  "sampler.levels=2", "denoiser.broad_below_steps=2",
                                  *overrides])
    return sample_levels(ref, (24, 28), cfg, seed=2)


def test_a_small_fast_level_is_the_exact_sampler():
    # fast with every entry as candidate and as dictionary is the exact denoiser once the
    # level queries every patch: the generator must hand the level its own settings
    fast = ["denoiser.backend=fast", "denoiser.candidates=100000",
            "denoiser.dictionary_size=100000", "denoiser.query_stride=2"]
    exact = _levels(["denoiser.backend=exact"])
    small = _levels(fast + ["denoiser.full_stride_pixels=100000"])
    for a, b in zip(small, exact):
        assert (a - b).abs().max() <= 1e-4
    # negative control: the same level at the configured stride is not exact
    coarse = _levels(fast + ["denoiser.full_stride_pixels=0"])
    assert (coarse[-1] - exact[-1]).abs().max() > 1e-2
