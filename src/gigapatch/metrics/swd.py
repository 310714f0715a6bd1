"""Multi-scale patch sliced Wasserstein distance (quantile form), as in GPDM.

Recipe (docs/evaluation.md#patch-swd): 7x7 patches at stride 1; 256 random unit directions
from a fixed seed; every patch projected on every direction (a conv2d with the directions as
filters, so patches are never materialised); per direction the two 1-D distributions are
compared by their quantile functions at K = 1024 levels (i + 0.5) / K (mean absolute
difference); the mean over directions is the SWD. It is computed at every level of a
Gaussian pyramid of both images and reported per level and as the mean over levels. The two
images may have different sizes. On huge images the quantiles are estimated from a random
subsample of patch positions (fixed seed).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gigapatch.device import resolve_device
from gigapatch.metrics._common import (
    LevelScores,
    extract_patches,
    patch_positions,
    prepare_pair,
    pyramid_scores,
)

__all__ = ["patch_swd", "random_directions", "projected_quantiles", "quantile_swd"]


def random_directions(
    n_directions: int, dim: int, *, seed: int = 0, device: str | torch.device | None = None
) -> torch.Tensor:
    """Unit directions drawn from N(0, I) with a fixed seed.

    Returns
    -------
    torch.Tensor
        float32, shape (n_directions, dim), rows of unit length.
    """
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    d = torch.randn(n_directions, dim, generator=g, dtype=torch.float32)
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return d.to(resolve_device(device))


def projected_quantiles(
    x: torch.Tensor,
    directions: torch.Tensor,
    *,
    patch_size: int = 7,
    n_quantiles: int = 1024,
    max_patches: int | None = 100_000,
    seed: int = 0,
    chunk: int = 32_768,
) -> torch.Tensor:
    """Quantile functions of the projections of every patch of ``x`` on every direction.

    Parameters
    ----------
    x : torch.Tensor
        Image, shape (C, H, W), float32.
    directions : torch.Tensor
        Shape (D, C * patch_size**2), unit rows.
    patch_size : int
        Patch side p.
    n_quantiles : int
        K; quantiles are taken at levels (i + 0.5) / K, i = 0..K-1.
    max_patches : int or None
        When the image has more patch positions than this, a random subsample of this many
        positions (seeded by ``seed``) is used instead of all of them.
    seed : int
        Seed of the subsample.
    chunk : int
        Patches projected per step on the subsampled path (bounds memory).

    Returns
    -------
    torch.Tensor
        float32, shape (D, K).
    """
    c, h, w = x.shape
    p = patch_size
    d = directions.shape[0]
    nh, nw = h - p + 1, w - p + 1
    pos = patch_positions(x, p, max_patches, seed=seed)
    if pos is None:
        weight = directions.view(d, c, p, p)
        proj = F.conv2d(x[None], weight)[0].reshape(d, nh * nw)
    else:
        ys, xs = pos
        parts = []
        for s in range(0, len(ys), chunk):
            pt = extract_patches(x, p, positions=(ys[s : s + chunk], xs[s : s + chunk]))
            parts.append(directions @ pt.T)
        proj = torch.cat(parts, dim=1)
    if proj.device.type == "cpu":
        # numpy's SIMD sort is several times faster than torch.sort on CPU.
        arr = proj.contiguous().numpy()
        arr.sort(axis=1)
        proj = torch.from_numpy(arr)
    else:
        proj, _ = torch.sort(proj, dim=1)
    n = proj.shape[1]
    q = (torch.arange(n_quantiles, device=x.device, dtype=torch.float64) + 0.5) / n_quantiles
    pos_f = q * (n - 1)
    lo = pos_f.floor().long().clamp(0, n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    frac = (pos_f - lo.to(torch.float64)).to(proj.dtype)
    return proj[:, lo] * (1 - frac) + proj[:, hi] * frac


def quantile_swd(qa: torch.Tensor, qb: torch.Tensor) -> float:
    """SWD from two (D, K) quantile tables: mean over directions of mean |qa - qb|."""
    return float((qa - qb).abs().mean(dim=1).mean().item())


def patch_swd(
    a: Any,
    b: Any,
    *,
    patch_size: int = 7,
    n_directions: int = 256,
    n_quantiles: int = 1024,
    factor: float = 0.75,
    min_size: int = 24,
    max_levels: int | None = None,
    max_patches: int | None = 100_000,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    cache: dict | None = None,
) -> LevelScores:
    """Multi-scale patch SWD between two images (any two sizes).

    Parameters
    ----------
    a, b : numpy.ndarray or torch.Tensor
        Images, shape (H, W) or (H, W, C) (uint8, uint16 or float in [0, 1]; alpha is
        dropped; a gray image is compared with an RGB one by replicating it). Sizes may differ.
    patch_size : int
        Patch side (7).
    n_directions : int
        Number of random unit projection directions (256).
    n_quantiles : int
        K, the number of quantile levels (1024).
    factor : float
        Pyramid scale factor between levels (0.75; 0.5 also common).
    min_size : int
        The pyramid stops before the smaller side of either image drops below this (24 px).
    max_levels : int, optional
        Cap on the number of levels (1 = only the images as given).
    max_patches : int or None
        Per image and level, use at most this many random patch positions (None = all).
    seed : int
        Seed of the directions and of the subsampling.
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.
    cache : dict, optional
        A dict reused across calls to keep the per-level quantiles of ``b`` (keyed by a
        fingerprint of ``b`` and the settings), so scoring many samples against one
        reference passed as ``b`` computes the reference side once.

    Returns
    -------
    LevelScores
        ``.mean`` over levels, ``.levels`` finest first, ``.sizes`` per level.
        0 for identical images; symmetric in ``a`` and ``b``.

    Raises
    ------
    GigapatchError
        If an image is smaller than one patch, or is not an image array.
    """
    dev, ta, tb = prepare_pair(a, b, patch_size=patch_size, device=device)
    c = ta.shape[0]
    dirs = random_directions(n_directions, c * patch_size**2, seed=seed, device=dev)
    kw = dict(patch_size=patch_size, n_quantiles=n_quantiles, max_patches=max_patches)
    return pyramid_scores(
        ta, tb,
        measure=lambda x, s: projected_quantiles(x, dirs, **kw, seed=s),
        compare=quantile_swd,
        cache_key=lambda fp, sb, s: ("swd", fp, sb, patch_size, n_directions, n_quantiles,
                                     max_patches, s, str(dev)),
        cache=cache, factor=factor, min_size=min_size, patch_size=patch_size,
        max_levels=max_levels, seed=seed,
    )
