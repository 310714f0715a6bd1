"""Noise schedules as plain tensors.

The flow-linear schedule (docs/method.md#schedule-and-ddim-step): x_t = a y + s e with
a = 1 - t, s = t. A schedule here is the tensor of the T noise levels s at which the
denoiser is called, from 1 (pure noise) down to ``s_min``; the signal scale is ``a = 1 - s``.
"""

from __future__ import annotations

import torch

__all__ = ["flow_linear", "signal_scale"]


def flow_linear(steps: int, s_min: float = 1e-4, start: float = 1.0) -> torch.Tensor:
    """Evenly spaced noise levels from ``start`` (1: pure noise) to ``s_min``.

    Parameters
    ----------
    steps : int
        T, the number of denoiser calls (>= 1; T = 1 calls it once at s = 1).
    s_min : float
        The clean end (replaces 0).
    start : float
        The first level, in (s_min, 1]: < 1 for a partial-noise start (``diffusion.priors``).

    Returns
    -------
    Tensor, shape (T,), float64
        s_0 = start > s_1 > ... > s_{T-1} = s_min.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if steps == 1:
        return torch.full((1,), float(start), dtype=torch.float64)
    return torch.linspace(float(start), s_min, steps, dtype=torch.float64)


def signal_scale(s: float) -> float:
    """a = 1 - s for the flow-linear schedule."""
    return 1.0 - s
