"""Properties every metric shares: noise ranks far worse than a shifted crop, any
sizes are accepted, bad input raises one clear GigapatchError."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gigapatch.errors import GigapatchError
from gigapatch.metrics import (
    copy_rate,
    evaluate,
    fidelity,
    nn_patch_distances,
    pairwise_swd,
    patch_fd,
    patch_swd,
    pixel_diversity,
    psnr,
    seam_score,
)

from .images import FAST


def test_noise_scores_far_worse_than_shifted_crop(ref, shifted, noise):
    assert patch_swd(noise, ref).mean > 3 * patch_swd(shifted, ref).mean
    assert patch_fd(noise, ref).mean > 3 * patch_fd(shifted, ref).mean
    nn_s = nn_patch_distances(shifted, ref, max_queries=1024)
    nn_n = nn_patch_distances(noise, ref, max_queries=1024)
    assert nn_n.coherence > 3 * nn_s.coherence
    assert nn_n.completeness > 3 * nn_s.completeness


def test_different_sizes_are_accepted(ref, texture):
    wide = np.ascontiguousarray(texture[:64, :150])
    s = patch_swd(wide, ref, **FAST)
    assert s.sizes[0] == ((64, 150), (96, 96)) and math.isfinite(s.mean)
    assert math.isfinite(patch_fd(wide, ref).mean)
    nn = nn_patch_distances(wide, ref, max_queries=512)
    assert nn.coherence >= 0 and nn.completeness >= 0
    assert 0.0 <= copy_rate(wide, ref, window=32) <= 1.0
    assert pairwise_swd([wide, ref], **FAST) > 0


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda r: fidelity(r, r[:50]), ["run", "same"]),
        (lambda r: psnr(r[:, :40], r), ["run", "same"]),
        (lambda r: pixel_diversity([r, r[:50]], r), ["sample 1", "same size"]),
        (lambda r: pixel_diversity([r], r), ["at least 2"]),
        (lambda r: copy_rate(r[:20, :20], r, window=32), ["sample", "20x20", "32x32"]),
        (lambda r: copy_rate(r, r[:30], window=32), ["reference", "smaller"]),
        (lambda r: patch_swd(r[:5, :5], r), ["first image", "7x7"]),
        (lambda r: nn_patch_distances(r, r[:4]), ["reference", "too small"]),
        (lambda r: patch_swd(np.zeros((8, 8, 5)), r), ["first image", "5 channels"]),
        (lambda r: patch_fd(r, np.full((9, 9), np.nan)), ["second image", "NaN"]),
        (lambda r: patch_swd(r, r, factor=1.5), ["factor"]),
        (lambda r: seam_score(r, tile_size=200), ["no tile boundary", "smaller"]),
        (lambda r: patch_swd("ref.png", r), ["numpy array", "read_image"]),
        (lambda r: evaluate(r, [r], metrics=["sifid"]), ["unknown metric"]),
    ],
)
def test_refusals_raise_clear_gigapatch_errors(ref, call, words):
    with pytest.raises(GigapatchError) as exc:
        call(ref)
    msg = str(exc.value)
    for w in words:
        assert w in msg, msg
