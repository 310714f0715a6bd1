"""Patch Frechet distance per pyramid level (docs/evaluation.md#patch-frechet-distance).

Mean and covariance of >= 100k random 7x7 patches of each image (all patches when there are
fewer); FD = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). Deterministic for a given seed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from gigapatch.metrics._common import (
    LevelScores,
    prepare_pair,
    pyramid_scores,
    sample_patches,
)

__all__ = ["patch_fd", "gaussian_stats", "frechet_distance"]


def gaussian_stats(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D), float64, of patch rows of shape (N, D).

    The mean is accumulated in float64; the centred product runs in the input precision
    (float32 is ample once centred) and is returned as float64.
    """
    mu = patches.to(torch.float64).mean(dim=0)
    xc = patches - mu.to(patches.dtype)
    n = max(patches.shape[0] - 1, 1)
    cov = (xc.T @ xc).to(torch.float64) / n
    return mu, cov


@contextmanager
def _one_thread() -> Iterator[None]:
    # Multi-threaded LAPACK on a 147x147 matrix is 100x slower than one thread when the
    # cores are busy; these matrices are tiny, so run them on one thread.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: Any, s1: Any, mu2: Any, s2: Any) -> float:
    """Frechet distance between Gaussians N(mu1, s1) and N(mu2, s2).

    Uses Tr((S1 S2)^(1/2)) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))), which stays symmetric and
    real. Inputs: means of shape (D,), covariances (D, D) (numpy or torch); computed in
    float64 on the CPU with one thread (small matrices).
    """
    mu1, s1, mu2, s2 = (torch.as_tensor(t).detach().to("cpu", torch.float64) for t in (mu1, s1, mu2, s2))
    with _one_thread():
        r1 = _sqrtm_psd(s1)
        m = r1 @ s2 @ r1
        m = (m + m.T) / 2
        tr_sqrt = torch.linalg.eigvalsh(m).clamp_min(0).sqrt().sum()
        fd = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt
    return max(float(fd.item()), 0.0)


def patch_fd(
    a: Any,
    b: Any,
    *,
    patch_size: int = 7,
    n_patches: int | None = 100_000,
    factor: float = 0.75,
    min_size: int = 24,
    max_levels: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    cache: dict | None = None,
) -> LevelScores:
    """Multi-scale patch Frechet distance between two images (any two sizes).

    Parameters
    ----------
    a, b : numpy.ndarray or torch.Tensor
        Images, shape (H, W) or (H, W, C); see :func:`gigapatch.metrics.patch_swd`.
    patch_size : int
        Patch side (7); the Gaussians live in C * patch_size**2 dimensions.
    n_patches : int or None
        Random patches per image and level (100k); all patches when there are fewer, or
        when None.
    factor, min_size, max_levels
        Pyramid as in :func:`gigapatch.metrics.patch_swd`.
    seed : int
        Seed of the patch subsample.
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.
    cache : dict, optional
        Reused across calls to keep the per-level statistics of ``b`` (see
        :func:`gigapatch.metrics.patch_swd`).

    Returns
    -------
    LevelScores
        Per level (finest first) and the mean. ~0 for identical images.
    """
    dev, ta, tb = prepare_pair(a, b, patch_size=patch_size, device=device)
    return pyramid_scores(
        ta, tb,
        measure=lambda x, s: gaussian_stats(sample_patches(x, patch_size, n_patches, seed=s)),
        compare=lambda sa, sb: frechet_distance(sa[0], sa[1], sb[0], sb[1]),
        cache_key=lambda fp, sb, s: ("fd", fp, sb, patch_size, n_patches, s, str(dev)),
        cache=cache, factor=factor, min_size=min_size, patch_size=patch_size,
        max_levels=max_levels, seed=seed,
    )
