"""storage.quantise against written-out expected integers, 8 and 16 bit.

Mutants killed: truncation instead of rounding (0.5 -> 127), round half up instead of half
to even (2.5/255 -> 3), no clipping (1.5 and -0.25 wrap around), wrong top (256 / 65536),
model space mapped without the clip or the halving.
"""

from __future__ import annotations

import numpy as np
import pytest

from gigapatch.storage.quantise import max_value, quantise, quantise_model

UNIT = np.array([-0.25, 0.0, 2.5 / 255, 3.5 / 255, 0.2, 0.5, 1 / 3, 1.0, 1.5], np.float32)


def test_quantise_8_bit():
    q = quantise(UNIT, 8)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, [0, 0, 2, 4, 51, 128, 85, 255, 255])


def test_quantise_16_bit():
    q = quantise(UNIT, 16)
    assert q.dtype == np.uint16
    # 2.5/255 and 3.5/255 are 642.5 and 899.5 steps: half to even
    np.testing.assert_array_equal(q, [0, 0, 642, 900, 13107, 32768, 21845, 65535, 65535])


def test_quantise_16_bit_half_steps_round_to_even():
    x = np.array([0.5, 1.5, 2.5, 3.5], np.float32) / np.float32(65535)
    np.testing.assert_array_equal(quantise(x, 16), [0, 2, 2, 4])


def test_quantise_model_space():
    m = np.array([[-1.5, -1.0, 0.0], [0.5, 1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(quantise_model(m, 8), [[0, 0, 128], [191, 255, 255]])
    np.testing.assert_array_equal(quantise_model(m, 16), [[0, 0, 32768], [49151, 65535, 65535]])


def test_quantise_keeps_shape_and_is_contiguous():
    a = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4).transpose(2, 0, 1)
    q = quantise(a, 8)
    assert q.shape == (4, 2, 3) and q.flags.c_contiguous


def test_bad_bit_depth():
    assert (max_value(8), max_value(16)) == (255, 65535)
    with pytest.raises(ValueError, match="bit depth 12"):
        quantise(UNIT, 12)
