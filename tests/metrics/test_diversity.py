"""Diversity between samples."""

from __future__ import annotations

import numpy as np

from gigapatch.metrics import pairwise_swd, pixel_diversity

from .images import FAST


def test_diversity_zero_for_identical_samples(ref, shifted, noise):
    assert pixel_diversity([shifted, shifted, shifted], ref) == 0.0
    assert pairwise_swd([shifted, shifted], **FAST) == 0.0
    assert pixel_diversity(np.stack([shifted, noise]), ref) > 0.1
    assert pairwise_swd([shifted, noise], **FAST) > 0
