"""Sliced Wasserstein distance of patches: identity, symmetry, monotone in blur,
subsampling, every input type."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gigapatch.metrics import as_image, patch_swd

from .images import FAST, blur as _blur


def test_swd_identity_and_symmetry(ref, shifted):
    assert patch_swd(ref, ref).mean == pytest.approx(0.0, abs=1e-7)
    ab = patch_swd(ref, shifted)
    ba = patch_swd(shifted, ref)
    assert ab.mean > 0
    assert ab.mean == pytest.approx(ba.mean, rel=1e-6)
    assert len(ab.levels) == len(ab.sizes) >= 3  # 96 px at factor 0.75 down to ~24 px
    assert ab.sizes[0] == ((96, 96), (96, 96))


def test_swd_grows_monotonically_with_blur(ref):
    values = [patch_swd(_blur(ref, s), ref, **FAST).mean for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_subsampled_swd_is_deterministic_and_zero_on_identity(texture):
    big = np.ascontiguousarray(texture[:150, :150])
    kw = dict(max_patches=2000, max_levels=2, **FAST)
    assert patch_swd(big, big, **kw).mean == 0.0
    a = patch_swd(big, big[:, ::-1], seed=3, **kw).mean
    b = patch_swd(big, big[:, ::-1], seed=3, **kw).mean
    assert a == b > 0


def test_input_types_and_dtypes_agree(ref):
    u8 = (ref * 255 + 0.5).astype(np.uint8)
    f = u8.astype(np.float32) / 255
    u16 = u8.astype(np.uint16) * 257
    rgba = np.concatenate([u8, np.full(u8.shape[:2] + (1,), 255, np.uint8)], axis=2)
    base = patch_swd(f, ref, **FAST).mean
    assert patch_swd(u8, ref, **FAST).mean == pytest.approx(base, abs=1e-6)
    assert patch_swd(u16, ref, **FAST).mean == pytest.approx(base, abs=1e-6)
    assert patch_swd(torch.from_numpy(f), ref, **FAST).mean == pytest.approx(base, abs=1e-6)
    assert patch_swd(rgba, u8, **FAST).mean == 0.0  # alpha dropped
    gray = f.mean(axis=2)
    assert as_image(gray).shape == (1, 96, 96)
    assert patch_swd(gray, gray, **FAST).mean == 0.0
    assert math.isfinite(patch_swd(gray, ref, **FAST).mean)  # gray vs RGB: replicated
