"""Fidelity of a run to an exact one (PSNR, max abs diff)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gigapatch.metrics import fidelity, max_abs_diff, psnr


def test_fidelity_of_a_run_to_itself_is_infinite_psnr(ref):
    assert psnr(ref, ref) == math.inf
    assert max_abs_diff(ref, ref) == 0.0
    f = fidelity(ref, ref)
    assert f == {"psnr": math.inf, "max_abs_diff": 0.0, "mean_abs_diff": 0.0}
    other = np.clip(ref + 0.01, 0, 1)
    p = psnr(other, ref)
    assert 30 < p < 40.1
    assert max_abs_diff(other, ref) == pytest.approx(0.01, abs=1e-6)
