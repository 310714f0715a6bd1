"""Counter-based Gaussian noise keyed by (seed, level, step, global y, x, channel).

Every noise value is a pure function of its key: a window of the image draws exactly the
values the whole image would draw at the same global coordinates, whatever the tile size,
worker count, device or task order. There is no generator state and no global RNG.

The hash is SplitMix64's finaliser on 64-bit integers (wrapping arithmetic, identical on
CPU and CUDA); two 24-bit uniforms per value feed a Box-Muller transform.
"""

from __future__ import annotations

import torch

__all__ = ["gaussian_noise", "stream_key", "mix64", "srl", "INIT_STEP"]

_MASK64 = (1 << 64) - 1
#: the ``step`` value of the initial noise x_T of a level
INIT_STEP = -1


def _to_signed(v: int) -> int:
    v &= _MASK64
    return v - (1 << 64) if v >= 1 << 63 else v


def _mix_int(z: int) -> int:
    """SplitMix64 finaliser on a Python int (for building keys)."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, level: int, step: int, channel: int) -> int:
    """The 64-bit key of one noise stream (one channel of one step of one level).

    Parameters
    ----------
    seed, level, step, channel : int
        ``step`` is ``INIT_STEP`` (-1) for the initial noise of a level.

    Returns
    -------
    int
        A signed 64-bit integer.
    """
    k = 0
    for part in (seed, level, step + 2, channel):
        k = _mix_int(k ^ (part & _MASK64))
    return _to_signed(k)


_C1 = _to_signed(0xBF58476D1CE4E5B9)
_C2 = _to_signed(0x94D049BB133111EB)
_GOLDEN = _to_signed(0x9E3779B97F4A7C15)


def srl(z: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 values."""
    return (z >> n) & ((1 << (64 - n)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser of int64 counters (wrapping arithmetic): the hash behind every
    coordinate-keyed random number."""
    z = z + _GOLDEN
    z = (z ^ srl(z, 30)) * _C1
    z = (z ^ srl(z, 27)) * _C2
    return z ^ srl(z, 31)


def gaussian_noise(seed: int, level: int, step: int, box: tuple[int, int, int, int],
                   channels: int, *, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32,
                   period: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Standard normal noise over a window of global pixel coordinates.

    Parameters
    ----------
    seed : int
        The user's seed.
    level : int
        Pyramid level (0 = coarsest).
    step : int
        Sampler step, or ``INIT_STEP`` for the initial noise.
    box : (y0, x0, y1, x1)
        Half-open window in the level's global pixel coordinates.
    channels : int
        Number of channels C.
    device, dtype
        Where and in which precision the result lives.
    period : (int, int)
        A tileable level's (height, width) on its wrapped axes (0: the axis does not wrap):
        coordinates are taken modulo it, so a window running past the level draws the
        values of the opposite side.

    Returns
    -------
    Tensor, shape (C, y1 - y0, x1 - x0)
        Independent N(0, 1) values; equal for equal (seed, level, step, y, x, channel).
    """
    y0, x0, y1, x1 = box
    ys = torch.arange(y0, y1, dtype=torch.int64, device=device)
    xs = torch.arange(x0, x1, dtype=torch.int64, device=device)
    if period[0]:
        ys = ys % period[0]
    if period[1]:
        xs = xs % period[1]
    # a distinct 64-bit counter per (y, x): coordinates are below 2**31 in any real image
    counter = (ys[:, None] << 32) + xs[None, :]
    out = torch.empty((channels, y1 - y0, x1 - x0), dtype=dtype, device=device)
    scale = 1.0 / (1 << 24)
    for c in range(channels):
        h1 = mix64(counter ^ stream_key(seed, level, step, c))
        h2 = mix64(h1)
        u1 = (srl(h1, 40).to(torch.float64) + 0.5) * scale
        u2 = srl(h2, 40).to(torch.float64) * scale
        r = torch.sqrt(-2.0 * torch.log(u1))
        out[c] = (r * torch.cos(2.0 * torch.pi * u2)).to(dtype)
    return out
