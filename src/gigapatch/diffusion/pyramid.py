"""Exact factor-2 resampling: the Gaussian pyramid, the blend's blur, and upsampling.

Both filters are fixed separable FIR kernels (cubic, Keys), so they are translation
equivariant on the even grid: a window whose origin is even, processed on its own, gives
the same pixels as the whole image away from the window's edges. Image borders are
handled by edge replication, the same whether the border belongs to a window or to the
whole image. This is what lets the tiled pipeline reproduce the whole-image sampler.

Sizes: ``down2`` maps ``n`` to ``ceil(n / 2)``; ``up2`` maps ``n`` to ``2 n`` (callers
crop to the size they need).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "down2",
    "up2",
    "blur2",
    "level_shapes",
    "gaussian_pyramid",
    "DOWN_RADIUS",
    "UP_RADIUS",
    "BLUR_RADIUS",
]


def _cubic(d: float, a: float) -> float:
    d = abs(d)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


# Antialiased cubic (a = -0.5) at scale 1/2: coarse pixel i sits at fine position 2i + 1
# (pixel centres at j + 0.5), taps j = 2i-3 .. 2i+4.
_DOWN = [_cubic((k - 3.5) / 2.0, -0.5) for k in range(8)]
_DOWN = [w / sum(_DOWN) for w in _DOWN]
# Cubic (a = -0.75, torch's bicubic) at scale 2: fine pixel 2i sits at coarse position
# i - 0.25 (taps i-2 .. i+1), fine pixel 2i+1 at i + 0.25 (taps i-1 .. i+2).
_UP_EVEN = [_cubic(d, -0.75) for d in (1.75, 0.75, -0.25, -1.25)]
_UP_ODD = [_cubic(d, -0.75) for d in (1.25, 0.25, -0.75, -1.75)]

#: fine pixels on each side that one ``down2`` output reads (taps reach 2i-3 .. 2i+4)
DOWN_RADIUS = 4
#: coarse pixels on each side that one ``up2`` output reads
UP_RADIUS = 2
#: fine pixels on each side that one ``blur2`` output reads: up2 reaches 2 coarse pixels,
#: each of which reads 4 fine pixels beyond its own pair
BLUR_RADIUS = 2 * (UP_RADIUS + 1) + DOWN_RADIUS


def _pad_axis(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Replicate ``before``/``after`` edge values along ``dim``."""
    n = x.shape[dim]
    parts = []
    if before:
        parts.append(x.narrow(dim, 0, 1).expand(*[before if d == dim else -1
                                                 for d in range(x.dim())]))
    parts.append(x)
    if after:
        parts.append(x.narrow(dim, n - 1, 1).expand(*[after if d == dim else -1
                                                     for d in range(x.dim())]))
    return torch.cat(parts, dim) if len(parts) > 1 else x


def _filter_axis(x: torch.Tensor, taps: list[float], pad: tuple[int, int], stride: int,
                 dim: int) -> torch.Tensor:
    """Replicate-pad one axis of ``x`` and correlate it with ``taps`` at ``stride``.

    A sum of strided slices: on the CPU several times faster than a depthwise conv2d with
    a 1-D kernel, and the same arithmetic on every device.
    """
    xp = _pad_axis(x, pad[0], pad[1], dim)
    n_out = (xp.shape[dim] - len(taps)) // stride + 1
    out = None
    for k, w in enumerate(taps):
        sl = xp.narrow(dim, k, (n_out - 1) * stride + 1)
        if stride > 1:
            idx = [slice(None)] * xp.dim()
            idx[dim] = slice(None, None, stride)
            sl = sl[tuple(idx)]
        out = sl * w if out is None else out.add_(sl, alpha=w)
    return out


def _as4d(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() == 4:
        return x, False
    raise ValueError(f"expected (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")


def down2(x: torch.Tensor) -> torch.Tensor:
    """Antialiased cubic downsampling by 2.

    Parameters
    ----------
    x : Tensor, shape (C, H, W) or (N, C, H, W)

    Returns
    -------
    Tensor, shape (..., ceil(H / 2), ceil(W / 2))
    """
    x4, squeeze = _as4d(x)
    for dim in (2, 3):
        n = x4.shape[dim]
        # pad so that output i reads 2i-3 .. 2i+4; odd n gets one more replicated pixel
        x4 = _filter_axis(x4, _DOWN, (3, 4 + (n % 2)), 2, dim)
    return x4.squeeze(0) if squeeze else x4


def _up_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    even = _filter_axis(x, _UP_EVEN, (2, 1), 1, dim)
    odd = _filter_axis(x, _UP_ODD, (1, 2), 1, dim)
    out = torch.stack((even, odd), dim=dim + 1)
    shape = list(x.shape)
    shape[dim] *= 2
    return out.reshape(shape)


def up2(x: torch.Tensor) -> torch.Tensor:
    """Cubic upsampling by 2.

    Parameters
    ----------
    x : Tensor, shape (C, h, w) or (N, C, h, w)

    Returns
    -------
    Tensor, shape (..., 2 h, 2 w)
    """
    x4, squeeze = _as4d(x)
    x4 = _up_axis(_up_axis(x4, 2), 3)
    return x4.squeeze(0) if squeeze else x4


def blur2(x: torch.Tensor) -> torch.Tensor:
    """Low-pass of the blend, ``up2(down2(x))`` cropped back to the size of ``x``.

    Parameters
    ----------
    x : Tensor, shape (C, H, W) or (N, C, H, W)

    Returns
    -------
    Tensor, same shape as ``x``
    """
    h, w = x.shape[-2:]
    return up2(down2(x))[..., :h, :w]


def level_shapes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """Sizes of a factor-2 pyramid, coarsest first: level k is ``ceil(n / 2**k)``.

    Parameters
    ----------
    height, width : int
        Size of the finest level.
    levels : int
        Number of levels (>= 1).

    Returns
    -------
    list of (int, int)
        ``levels`` (height, width) pairs, coarsest first.
    """
    return [(math.ceil(height / 2**k), math.ceil(width / 2**k))
            for k in reversed(range(levels))]


def gaussian_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Repeated ``down2`` of an image, coarsest first.

    Parameters
    ----------
    image : Tensor, shape (C, H, W)
    levels : int

    Returns
    -------
    list of Tensor
        ``levels`` tensors of shape (C, ceil(H / 2**k), ceil(W / 2**k)), coarsest first.
    """
    out = [image]
    for _ in range(levels - 1):
        out.append(down2(out[-1]))
    return out[::-1]
