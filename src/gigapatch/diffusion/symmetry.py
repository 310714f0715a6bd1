"""Mirror-symmetric outputs: after every denoiser call one half of x_hat is mirrored onto
the other (docs/method.md#tileable-and-symmetric-outputs).

The sampler's last step returns the denoiser's (mirrored) output, so the result is exactly
symmetric; the earlier mirrors keep the whole trajectory symmetric so that the two halves
agree on the arrangement instead of being forced together at the end.
"""

from __future__ import annotations

import torch

from .torus import Wrap

__all__ = ["mirror_half", "MirroredDenoiser"]


def mirror_half(x: torch.Tensor, axes: Wrap) -> torch.Tensor:
    """Copy the left (top) half of ``x`` mirrored onto its right (bottom) half.

    Parameters
    ----------
    x : Tensor, shape (..., H, W)
    axes : Wrap
        ``axes.x``: symmetric about the vertical axis (left-right mirror); ``axes.y``: about
        the horizontal axis (top-bottom mirror). An odd middle row/column is kept.

    Returns
    -------
    Tensor, same shape; equal to its own mirror along the chosen axes.
    """
    h, w = x.shape[-2:]
    if axes.x:
        x = torch.cat([x[..., :w - w // 2], x[..., :w // 2].flip(-1)], -1)
    if axes.y:
        x = torch.cat([x[..., :h - h // 2, :], x[..., :h // 2, :].flip(-2)], -2)
    return x


class MirroredDenoiser:
    """``denoise(x, s)`` followed by :func:`mirror_half` (whole levels only: a window's
    mirror partner lies outside it, so the tiled pipeline refuses symmetry)."""

    def __init__(self, inner, axes: Wrap) -> None:
        self.inner = inner
        self.axes = axes

    def bind(self, *, origin: tuple[int, int] = (0, 0), seed: int = 0, level: int = 0,
             period: tuple[int, int] = (0, 0)) -> "MirroredDenoiser":
        bind = getattr(self.inner, "bind", None)
        if bind is None:
            return self
        return MirroredDenoiser(bind(origin=origin, seed=seed, level=level, period=period),
                                self.axes)

    def __call__(self, x: torch.Tensor, s: float) -> torch.Tensor:
        return mirror_half(self.inner(x, s), self.axes)
