"""Tiny test images for the metrics tests (imported by them)."""

from __future__ import annotations

import numpy as np
import torch


def synthetic_texture(h: int = 160, w: int = 200, seed: int = 0) -> np.ndarray:
    """A deterministic colour texture: smoothed noise plus stripes, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((1, 3, h, w), dtype=np.float32))
    k = torch.ones(3, 1, 5, 5) / 25.0
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=3)
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 0.25 * np.sin(xx / 3.0 + yy / 7.0)[None, None].astype(np.float32)
    x = (x - x.mean()) * 3 + 0.5 + torch.from_numpy(stripes)
    return x[0].permute(1, 2, 0).clamp(0, 1).numpy()


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from gigapatch.metrics.seams import _gauss_blur

    t = torch.from_numpy(img).permute(2, 0, 1)
    return _gauss_blur(t, sigma).permute(1, 2, 0).numpy()


FAST = dict(n_directions=64, n_quantiles=256)
