"""Copy rate: verbatim windows of the reference."""

from __future__ import annotations

import numpy as np

from gigapatch.metrics import copy_rate


def test_copy_rate_reference_is_one_noise_is_zero(ref, noise):
    assert copy_rate(ref, ref, window=32) == 1.0
    assert copy_rate(ref, ref, window=64) == 1.0
    assert copy_rate(noise, ref, window=32) == 0.0


def test_copy_rate_finds_shifted_copies_exactly(texture, ref, shifted):
    # The shifted crop overlaps the reference by 72x66 px: its top-left 32x32 windows are
    # verbatim copies at another position; a 1/255 offset still counts, 3/255 does not.
    rate = copy_rate(shifted, ref, window=32, stride=16)
    assert 0.0 < rate < 1.0
    assert copy_rate(np.clip(ref + 1 / 255, 0, 1), ref, window=32) == 1.0
    assert copy_rate(ref + 3 / 255, ref, window=32) < 1.0
