"""Nearest-neighbour patch distances: coherence and completeness.

See docs/evaluation.md#nearest-neighbour-distances.

Bidirectional similarity (Simakov et al. 2008):

* coherence = mean over sample patches of the distance to their nearest reference patch
  (high when the sample has artifacts that the reference does not contain);
* completeness = mean over reference patches of the distance to their nearest sample patch
  (high when parts of the reference are missing from the sample).

The distance between two patches is their root-mean-square difference per value, so it is in
image units ([0, 1]). The search is exact over the key set (chunked matmul, bounded memory);
on big images the queries (and, past ``max_keys``, the keys) are a random subsample with a
fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gigapatch.metrics._common import prepare_pair, sample_patches

__all__ = ["NNDistances", "nn_patch_distances", "nearest_patch_distances", "coherence", "completeness"]


@dataclass(frozen=True)
class NNDistances:
    """Both directions of the nearest-neighbour patch distance.

    Attributes
    ----------
    coherence : float
        Mean RMS distance from sample patches to their nearest reference patch.
    completeness : float
        Mean RMS distance from reference patches to their nearest sample patch.
    """

    coherence: float
    completeness: float

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly form."""
        return {"coherence": self.coherence, "completeness": self.completeness}


def nearest_patch_distances(
    queries: torch.Tensor,
    keys: torch.Tensor,
    *,
    query_chunk: int = 2048,
    key_chunk: int = 8192,
) -> torch.Tensor:
    """Exact RMS distance of every query row to its nearest key row.

    Parameters
    ----------
    queries : torch.Tensor
        Shape (Nq, D).
    keys : torch.Tensor
        Shape (Nk, D), same device and dtype.
    query_chunk, key_chunk : int
        Block sizes of the distance matrix (memory ~ 4 * query_chunk * key_chunk bytes).

    Returns
    -------
    torch.Tensor
        Shape (Nq,), sqrt(mean((q - k*)**2)) for the nearest key k*. The matmul form only
        picks the neighbour; the returned distance is recomputed directly, so exact copies
        give exactly 0.
    """
    nq, d = queries.shape
    kn = (keys * keys).sum(dim=1)
    best = torch.empty(nq, dtype=torch.long, device=queries.device)
    for qs in range(0, nq, query_chunk):
        q = queries[qs : qs + query_chunk]
        qn = (q * q).sum(dim=1)
        run_min = torch.full((q.shape[0],), float("inf"), device=q.device, dtype=q.dtype)
        run_arg = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        for ks in range(0, keys.shape[0], key_chunk):
            k = keys[ks : ks + key_chunk]
            dist = kn[ks : ks + key_chunk][None, :] - 2.0 * (q @ k.T)
            m, a = dist.min(dim=1)
            better = m < run_min
            run_min = torch.where(better, m, run_min)
            run_arg = torch.where(better, a + ks, run_arg)
        best[qs : qs + query_chunk] = run_arg
    diff = queries - keys[best]
    return diff.pow(2).mean(dim=1).sqrt()


def nn_patch_distances(
    sample: Any,
    reference: Any,
    *,
    patch_size: int = 7,
    max_queries: int | None = 2048,
    max_keys: int | None = 262_144,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
) -> NNDistances:
    """Coherence and completeness of a sample with respect to a reference (any two sizes).

    Parameters
    ----------
    sample, reference : numpy.ndarray or torch.Tensor
        Images, shape (H, W) or (H, W, C); see :func:`gigapatch.metrics.patch_swd`.
    patch_size : int
        Patch side (7).
    max_queries : int or None
        Random query patches per direction (fixed seed); None = every patch.
    max_keys : int or None
        Key patches searched per direction; beyond this a random subsample (the search is
        then approximate). None = every patch.
    seed : int
        Seed of the subsamples.
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.

    Returns
    -------
    NNDistances
        ``.coherence`` and ``.completeness``, in [0, 1] image units; both 0 when the sample
        is the reference.
    """
    _, ts, tr = prepare_pair(
        sample, reference, patch_size=patch_size, device=device, names=("sample", "reference")
    )
    with torch.no_grad():
        sq = sample_patches(ts, patch_size, max_queries, seed=seed)
        rk = sample_patches(tr, patch_size, max_keys, seed=seed + 1)
        coh = nearest_patch_distances(sq, rk).mean().item()
        rq = sample_patches(tr, patch_size, max_queries, seed=seed + 2)
        sk = sample_patches(ts, patch_size, max_keys, seed=seed + 3)
        comp = nearest_patch_distances(rq, sk).mean().item()
    return NNDistances(coherence=float(coh), completeness=float(comp))


def coherence(sample: Any, reference: Any, **kwargs: Any) -> float:
    """Mean distance of sample patches to their nearest reference patch.

    Same keywords as :func:`nn_patch_distances`.
    """
    return nn_patch_distances(sample, reference, **kwargs).coherence


def completeness(sample: Any, reference: Any, **kwargs: Any) -> float:
    """Mean distance of reference patches to their nearest sample patch.

    Same keywords as :func:`nn_patch_distances`.
    """
    return nn_patch_distances(sample, reference, **kwargs).completeness
