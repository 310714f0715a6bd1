"""Periodic (tileable) levels: the sampler on a torus
(docs/method.md#tileable-and-symmetric-outputs).

A tileable output is sampled with every level on a torus along the wrapped axes: patches
wrap around, the fold wraps, the blend's blur and the coarse-to-fine upsampling wrap, and
the noise is keyed by global coordinates modulo the level's size. Nothing in the sampler
itself changes; each piece that reads neighbours is given its neighbours from the opposite
side:

* the image denoiser takes the ``n`` torus patches of a wrapped axis of length ``n`` (one
  starting at each pixel, wrapping past the end) and folds them back modulo ``n``: every
  pixel is covered by exactly the ``P * P`` torus patches that contain it, each computed
  once (:class:`PeriodicDenoiser`); the cost per step is ``n / (n - P + 1)`` patch
  positions per wrapped axis against the plain window's ``n - P + 1``;
* the blend's blur pads circularly by ``BLUR_RADIUS`` (even, so the 2x grid is kept) and
  the coarse upsampling by ``UP_RADIUS + 1`` coarse pixels (:func:`periodic_blur2`,
  :func:`periodic_up2`);
* a torus needs each level to be exactly half the next finer one along a wrapped axis
  (the 2x filters of a torus of odd size are not shift-equivariant across the wrap), so a
  tileable output size is rounded up to a multiple of ``2 ** (levels - 1)``
  (:func:`periodic_size`).

A tile of a tileable level is an ordinary window whose coordinates may run past the level
(negative or beyond its size): its pixels, noise and coarse values are those of the
coordinates modulo the level's size (:func:`wrap_index`), so an edge tile takes its halo
from the opposite side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .pyramid import BLUR_RADIUS, UP_RADIUS, blur2, up2

__all__ = ["Wrap", "NO_WRAP", "periodic_size", "circular_pad", "PeriodicDenoiser",
           "periodic_blur2", "periodic_up2", "wrap_index"]


@dataclass(frozen=True)
class Wrap:
    """Which axes of the output wrap around (tile seamlessly).

    Attributes
    ----------
    y : bool
        Top and bottom meet (the output tiles vertically).
    x : bool
        Left and right meet (the output tiles horizontally).
    """

    y: bool = False
    x: bool = False

    @classmethod
    def parse(cls, text: str | None) -> "Wrap":
        """``"x"``, ``"y"``, ``"xy"`` or ``"none"``/``None`` (the config's values)."""
        if text in (None, "none"):
            return cls()
        if text not in ("x", "y", "xy"):
            raise ValueError(f"tileable must be none, x, y or xy, got {text!r}")
        return cls(y="y" in text, x="x" in text)

    def __bool__(self) -> bool:
        return self.y or self.x

    def pads(self, r: int) -> tuple[int, int]:
        """(pad_y, pad_x): ``r`` on the wrapped axes, 0 on the others."""
        return (r if self.y else 0, r if self.x else 0)

    def __str__(self) -> str:
        return ("y" if self.y else "") + ("x" if self.x else "") or "none"


NO_WRAP = Wrap()


def periodic_size(out_hw: tuple[int, int], levels: int, wrap: Wrap) -> tuple[int, int]:
    """The output size a tileable run uses: wrapped sides rounded up to ``2 ** (levels-1)``.

    Then every level of a wrapped axis is exactly half the next finer one, so the torus of
    one level is the exact 2x reduction of the next.

    Parameters
    ----------
    out_hw : (int, int)
        Requested (height, width).
    levels : int
        Pyramid levels of the run.
    wrap : Wrap

    Returns
    -------
    (int, int)
    """
    m = 2 ** max(0, levels - 1)
    h, w = out_hw
    return (math.ceil(h / m) * m if wrap.y else h, math.ceil(w / m) * m if wrap.x else w)


def wrap_index(lo: int, hi: int, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Indices ``lo .. hi-1`` modulo ``n`` (a window of a torus axis of length ``n``)."""
    return torch.arange(lo, hi, device=device) % n


def circular_pad(x: torch.Tensor, pad_y: int, pad_x: int) -> torch.Tensor:
    """Pad the last two axes circularly (any pad, also larger than the image).

    Parameters
    ----------
    x : Tensor, shape (..., H, W)
    pad_y, pad_x : int
        Pixels added on each side of the height and width axes.

    Returns
    -------
    Tensor, shape (..., H + 2 pad_y, W + 2 pad_x)
    """
    h, w = x.shape[-2:]
    if pad_y:
        x = x.index_select(-2, wrap_index(-pad_y, h + pad_y, h, x.device))
    if pad_x:
        x = x.index_select(-1, wrap_index(-pad_x, w + pad_x, w, x.device))
    return x


def _crop(x: torch.Tensor, pad_y: int, pad_x: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return x[..., pad_y:h - pad_y, pad_x:w - pad_x]


class PeriodicDenoiser:
    """An image denoiser on a torus along the wrapped axes of its window.

    A backend denoiser with ``on_torus(wrap)`` (exact, fused and fast) runs on the torus
    itself: on a wrapped axis of length ``n`` it takes the ``n`` patches that start at each
    pixel, wrapping past the end, and its fold adds what runs past the end back at the
    start (``denoiser.image_denoise(wrap=)``, ``fast.grid_unfold(wrap=)``): no patch is
    computed twice. Any other ``denoise(x, s)`` gets the same torus by padding: ``x`` is
    padded circularly by ``P - 1`` on each wrapped side and the result cropped, which
    computes the seam's patches twice (``(n + P - 1) / (n - P + 1)`` patch positions per
    wrapped axis). Stateful denoisers are bound with the window's origin (the padded
    window's when padding), so their keyed choices stay on global coordinates.

    Parameters
    ----------
    inner : callable
        ``denoise(x (C, H, W), s) -> (C, H, W)`` of one level (any backend).
    patch_size : int
    wrap : Wrap
    """

    def __init__(self, inner, patch_size: int, wrap: Wrap) -> None:
        on_torus = getattr(inner, "on_torus", None)
        self.native = on_torus is not None
        self.inner = on_torus((wrap.y, wrap.x)) if self.native else inner
        self.patch_size = patch_size
        self.wrap = wrap
        self.pad = (0, 0) if self.native else wrap.pads(patch_size - 1)

    def bind(self, *, origin: tuple[int, int] = (0, 0), seed: int = 0, level: int = 0,
             period: tuple[int, int] = (0, 0)) -> "PeriodicDenoiser":
        bind = getattr(self.inner, "bind", None)
        if bind is None:
            return self
        inner = bind(origin=(origin[0] - self.pad[0], origin[1] - self.pad[1]), seed=seed,
                     level=level, period=period)
        return PeriodicDenoiser(inner, self.patch_size, self.wrap)

    def __call__(self, x: torch.Tensor, s: float) -> torch.Tensor:
        if self.native:
            return self.inner(x, s)
        return _crop(self.inner(circular_pad(x, *self.pad), s), *self.pad)


def periodic_blur2(x: torch.Tensor, wrap: Wrap) -> torch.Tensor:
    """The blend's low-pass ``blur2`` on a torus along the wrapped axes.

    Parameters
    ----------
    x : Tensor, shape (C, H, W)
        H (W) must be even when wrapped.

    Returns
    -------
    Tensor, shape (C, H, W)
    """
    if not wrap:
        return blur2(x)
    # BLUR_RADIUS is even: the padded image's 2x grid is the torus's
    pad = wrap.pads(BLUR_RADIUS + BLUR_RADIUS % 2)
    return _crop(blur2(circular_pad(x, *pad)), *pad)


def periodic_up2(coarse: torch.Tensor, wrap: Wrap) -> torch.Tensor:
    """``up2`` of a whole coarse level on a torus along the wrapped axes.

    Parameters
    ----------
    coarse : Tensor, shape (C, h, w)

    Returns
    -------
    Tensor, shape (C, 2 h, 2 w)
    """
    py, px = wrap.pads(UP_RADIUS + 1)
    up = up2(circular_pad(coarse, py, px))
    return _crop(up, 2 * py, 2 * px)
