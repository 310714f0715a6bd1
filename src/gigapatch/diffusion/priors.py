"""Priors beyond the paper's uniform patch prior (docs/method.md#composition-priors).

The paper's denoiser weighs every reference patch by its likelihood alone (a uniform prior
over the patch set, times the multiplicity of merged duplicates). Two optional terms change
that prior, both additive in the posterior's logit:

* **position prior** (composition): a query patch at normalised position u_q prefers
  entries from the same place in the reference::

      logit_j += -sum_a (lambda_a / 2) (u_q,a - u_j,a)^2

  with u the patch centre divided by the level's size (global coordinates of the WHOLE
  level, so a tile and a retargeted size see the same u): a Gaussian of std
  ``1 / sqrt(lambda)`` in fractions of the image. ``axes = "y"`` sets lambda_x = 0.
  Merged duplicates would need one position per copy, so levels with the position prior
  keep every patch as its own entry (no merging); the fast backend's subsampled index
  (memory bound) keeps each representative's own position.
* **partial-noise start**: the coarsest level starts from the resized reference noised to
  level t0, ``x = (1 - t0) ref + t0 e``, and runs its T steps from s = t0 down
  (t0 = 1 is the paper's pure-noise start).

* **usage prior** (completeness): reference entries the sample already uses many times
  lose weight, so content it has not shown yet gets its turn::

      logit_j += -lambda_u log(1 + c_j / n_j)

  with c_j the usage of entry j (n_j merged copies) in a PILOT sample of the same level:
  the level sampled once over its whole size without the usage term (same seed, noise,
  start and coarser level), and every one of the pilot's patches x_q shared among the
  entries by a soft nearest-neighbour rule (:func:`usage_counts`). The counts are global
  per level (a tile computes the same whole-level pilot), so tiles stay exact; the term is
  per entry, so it is folded into the entries' log multiplicities and every backend (exact,
  fused, fast: mean, dictionary, candidates) applies it unchanged
  (:func:`usage_log_weights`). Two copies of a patch with counts c1, c2 get posterior
  weights in the ratio ((1 + c2) / (1 + c1))^lambda_u.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .schedules import flow_linear

__all__ = ["PriorSettings", "PositionPrior", "PairBias", "noised_start", "level_sigmas",
           "usage_counts", "usage_log_weights", "USAGE_TAU"]

#: per-pixel RMS bandwidth ([-1, 1] scale) of the usage count's soft nearest-neighbour rule:
#: a pilot patch counts for the entries within ~USAGE_TAU RMS of its nearest one, shared by
#: softmax (continuous in the pilot: tiny differences change the counts only a little)
USAGE_TAU = 0.02


@dataclass(frozen=True)
class PriorSettings:
    """The priors of one run (config section ``prior``; all off is the paper's sampler).

    Attributes
    ----------
    position_strength : float
        lambda >= 0 of the position prior (1 / sigma^2, sigma in fractions of the image
        side); 0 turns it off.
    position_axes : {"y", "xy"}
        Vertical position only, or both.
    position_levels : int
        The prior applies on this many of the coarsest levels.
    t0 : float
        Noise level the coarsest level starts from, in (s_min, 1]; 1 = pure noise.
    usage_strength : float
        lambda_u >= 0 of the usage prior; 0 turns it off (no pilot pass).
    usage_levels : int
        The usage prior applies on this many of the coarsest levels (each costs a pilot
        pass of the whole level).
    """

    position_strength: float = 0.0
    position_axes: str = "y"
    position_levels: int = 1
    t0: float = 1.0
    usage_strength: float = 0.0
    usage_levels: int = 1

    @property
    def active(self) -> bool:
        """Whether any prior changes the sampler (all off is the paper's sampler)."""
        return self.position_strength > 0 or self.t0 < 1.0 or self.usage_strength > 0

    def usage_on(self, level: int) -> bool:
        """Whether the usage prior applies on pyramid level ``level`` (0 = coarsest)."""
        return self.usage_strength > 0 and level < self.usage_levels

    def position_on(self, level: int) -> bool:
        """Whether the position prior applies on pyramid level ``level`` (0 = coarsest)."""
        return self.position_strength > 0 and level < self.position_levels

    def position_prior(self, level: int, *, out_hw: tuple[int, int], ref_hw: tuple[int, int],
                       patch_size: int) -> "PositionPrior | None":
        """The level's :class:`PositionPrior`, or ``None`` where it does not apply."""
        if not self.position_on(level):
            return None
        lam = float(self.position_strength)
        weights = (lam / 2.0, lam / 2.0 if self.position_axes == "xy" else 0.0)
        return PositionPrior(weights, tuple(out_hw), tuple(ref_hw), patch_size)


@dataclass(frozen=True)
class PairBias:
    """A per-(query, entry) logit term ``-sum_a w_a (q_a - e_a)^2``.

    Attributes
    ----------
    q : Tensor, shape (M, 2)
        Query coordinates.
    e : Tensor, shape (N, 2)
        Entry coordinates.
    w : tuple of float
        Weight per axis.
    """

    q: torch.Tensor
    e: torch.Tensor
    w: tuple[float, float]

    def block(self, q0: int, q1: int, k0: int, k1: int) -> torch.Tensor:
        """The term for queries q0:q1 and entries k0:k1: shape (q1 - q0, k1 - k0)."""
        return self.dense(self.q[q0:q1], self.e[k0:k1])

    def dense(self, q: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((q.shape[0], e.shape[0]), dtype=torch.float32, device=q.device)
        for a, w in enumerate(self.w):
            if w:
                d = q[:, a, None] - e[None, :, a]
                out.sub_(w * d * d)
        return out

    def gathered(self, q: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """The term for query rows q (M, 2) and per-row entries e (M, K, 2): (M, K)."""
        out = torch.zeros(e.shape[:2], dtype=torch.float32, device=q.device)
        for a, w in enumerate(self.w):
            if w:
                d = q[:, None, a] - e[..., a]
                out.sub_(w * d * d)
        return out

    def subset(self, rows: slice | torch.Tensor) -> "PairBias":
        return PairBias(self.q[rows], self.e, self.w)


@dataclass(frozen=True)
class PositionPrior:
    """The position prior of one level.

    Attributes
    ----------
    weights : (float, float)
        (lambda_y / 2, lambda_x / 2).
    out_hw : (int, int)
        Size of the whole output level (never a tile's).
    ref_hw : (int, int)
        Size of the reference level.
    patch_size : int
    """

    weights: tuple[float, float]
    out_hw: tuple[int, int]
    ref_hw: tuple[int, int]
    patch_size: int

    def _coords(self, ys: torch.Tensor, xs: torch.Tensor, hw: tuple[int, int]) \
            -> torch.Tensor:
        half = self.patch_size / 2.0
        return torch.stack([(ys.to(torch.float64) + half) / hw[0],
                            (xs.to(torch.float64) + half) / hw[1]], 1).to(torch.float32)

    def query_coords(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Normalised centres (M, 2) of output patches with GLOBAL top-left (ys, xs)."""
        return self._coords(ys, xs, self.out_hw)

    def entry_coords(self, positions: torch.Tensor) -> torch.Tensor:
        """Normalised centres (N, 2) of reference entries with top-left ``positions`` (N, 2)."""
        return self._coords(positions[:, 0], positions[:, 1], self.ref_hw)

    def pair_bias(self, ys: torch.Tensor, xs: torch.Tensor, positions: torch.Tensor) \
            -> PairBias:
        """The logit term between queries at global top-lefts (ys, xs) and entries."""
        return PairBias(self.query_coords(ys, xs), self.entry_coords(positions), self.weights)


def level_sigmas(sigmas: torch.Tensor, level: int, prior: PriorSettings | None) \
        -> torch.Tensor:
    """A level's noise levels: the run's schedule, or on the coarsest level with
    ``prior.t0 < 1`` the same number of steps from t0 down to the schedule's last level."""
    if prior is None or level != 0 or prior.t0 >= 1.0:
        return sigmas
    return flow_linear(int(sigmas.shape[0]), float(sigmas[-1]), start=prior.t0)


def noised_start(clean: torch.Tensor, noise: torch.Tensor, t0: float) -> torch.Tensor:
    """The partial-noise start ``(1 - t0) clean + t0 noise`` (flow-linear x at s = t0)."""
    if t0 >= 1.0:
        return noise
    return (1.0 - t0) * clean + t0 * noise


def usage_counts(queries: torch.Tensor, patches: torch.Tensor, log_counts: torch.Tensor, *,
                 tau: float = USAGE_TAU, memory_budget_mb: float = 1024) -> torch.Tensor:
    """Soft usage of each entry by a set of (pilot) patches.

    ``c_j = sum_q softmax_j(-|x_q - y_j|^2 / (2 D tau^2) + log n_j)``: each query patch
    is one use, shared among the entries nearest to it (all its weight on its nearest
    entry unless others are within ~tau RMS per pixel; merged copies share it in
    proportion to n_j). float64, queries in chunks within the memory budget.

    Parameters
    ----------
    queries : Tensor, shape (M, D)
        The pilot's patches x_q.
    patches : Tensor, shape (N, D)
        The entries y_j.
    log_counts : Tensor, shape (N,)
        log n_j.
    tau : float
        Per-pixel RMS bandwidth (> 0).
    memory_budget_mb : float

    Returns
    -------
    Tensor, shape (N,), float64
        Sums to M.
    """
    m, d = queries.shape
    n = patches.shape[0]
    y = patches.to(torch.float64)
    ysq = (y * y).sum(1)
    lc = log_counts.to(torch.float64)
    inv = 1.0 / (2.0 * d * tau * tau)
    out = torch.zeros(n, dtype=torch.float64, device=patches.device)
    rows = max(1, min(m, int(memory_budget_mb * 2**20) // max(1, 16 * n + 8 * d)))
    for q0 in range(0, m, rows):
        x = queries[q0:q0 + rows].to(torch.float64).to(patches.device)
        # -|x - y|^2 up to the per-query |x|^2 (softmax-invariant)
        logits = (2.0 * (x @ y.T) - ysq[None, :]) * inv + lc[None, :]
        out += torch.softmax(logits, 1).sum(0)
    return out


def usage_log_weights(counts: torch.Tensor, log_counts: torch.Tensor, strength: float) \
        -> torch.Tensor:
    """The entries' log multiplicities with the usage term: ``log n_j - lambda log(1 +
    c_j / n_j)`` (c_j / n_j: the usage of one copy of a merged entry; an entry of n copies
    weighs as the n copies would, each with its share of the count).

    Parameters
    ----------
    counts : Tensor, shape (N,)
        c_j (:func:`usage_counts`).
    log_counts : Tensor, shape (N,)
        log n_j.
    strength : float
        lambda_u >= 0.

    Returns
    -------
    Tensor, shape (N,), float32
    """
    lc = log_counts.to(torch.float64)
    per_copy = counts.to(torch.float64).to(lc.device) / lc.exp()
    return (lc - float(strength) * torch.log1p(per_copy)).to(torch.float32)
