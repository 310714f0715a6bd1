"""One pyramid level of the coarse-to-fine sampler, on a window of global coordinates.

The same function samples a whole level (the window is the image) and a tile of it (the
window is the tile's core plus halo): noise comes from global coordinates, the image
denoiser pads nothing, and the pyramid filters are exact factor-2 FIR filters, so every
pixel at distance ``halo`` or more from a window edge that is not an image border gets the
value the whole-image sampler gives it.
"""

from __future__ import annotations

from typing import Callable

import torch

from .denoiser import image_denoise, posterior_mean
from .fast import FastParams, make_fast_denoise
from .noise import INIT_STEP, gaussian_noise
from .patch_index import PatchIndex
from .pyramid import BLUR_RADIUS, UP_RADIUS, up2
from .sampling import Denoise, laplacian_blend, sample_ddim
from .schedules import signal_scale
from .torus import NO_WRAP, Wrap, periodic_blur2

__all__ = ["make_denoise", "upsample_to_box", "sample_level", "step_radius", "level_halo",
           "coarse_box_for"]

Box = tuple[int, int, int, int]


def make_denoise(index: PatchIndex, *, patch_size: int, rho: float, backend: str = "exact",
                 memory_budget_mb: float = 1024, dtype: str = "float32",
                 fast: FastParams | None = None, pca_dims: int = 32,
                 dictionary_size: int = 2048) -> Denoise:
    """The image denoiser ``denoise(x, s)`` of one level.

    Parameters
    ----------
    index : PatchIndex
        The level's clean patches, on the device the images will live on.
    patch_size : int
    rho : float
        Fold window std.
    backend : {"exact", "fused", "fast"}
    memory_budget_mb : float
    dtype : str
        Precision of the similarity search.
    fast : FastParams, optional
        Knobs of the fast backend (``diffusion.fast``); ``pca_dims`` and ``dictionary_size``
        shape its per-level precomputation.

    Returns
    -------
    callable
        ``denoise(x (C, H, W), s) -> x_hat (C, H, W)``. The fast backend's denoiser is
        stateful and has ``bind(origin=, seed=, level=)``, which ``sample_level`` calls.
    """
    if backend == "fast":
        params = fast or FastParams(dtype=dtype, memory_budget_mb=memory_budget_mb)
        return make_fast_denoise(index, patch_size=patch_size, rho=rho, params=params,
                                 pca_dims=pca_dims, dictionary_size=dictionary_size)

    def denoise(x: torch.Tensor, s: float) -> torch.Tensor:
        a = signal_scale(s)

        def patches(q: torch.Tensor) -> torch.Tensor:
            return posterior_mean(q, index, a, s, backend=backend,
                                  memory_budget_mb=memory_budget_mb, dtype=dtype)

        return image_denoise(x, patches, patch_size, rho, memory_budget_mb=memory_budget_mb)

    return denoise


def step_radius(patch_size: int) -> int:
    """Pixels one image-denoise call reads beyond the pixel it writes: P - 1."""
    return patch_size - 1


def level_halo(patch_size: int, steps: int, blended: bool) -> int:
    """Halo (pixels per side) a window needs for its core to match the whole image.

    Each denoiser call reads P - 1 pixels around every pixel it writes; each blend (all
    steps but the last, on levels with a coarser level) reads ``BLUR_RADIUS`` more. The
    result is rounded up to even so that window origins stay on the 2x grid.

    Parameters
    ----------
    patch_size : int
    steps : int
        T.
    blended : bool
        Whether the level takes its low frequencies from a coarser level.

    Returns
    -------
    int
    """
    halo = steps * step_radius(patch_size)
    if blended:
        halo += (steps - 1) * BLUR_RADIUS
    return halo + (halo % 2)


def coarse_box_for(box: Box, coarse_hw: tuple[int, int]) -> Box:
    """The coarser level's window that ``upsample_to_box`` needs for a fine window.

    Parameters
    ----------
    box : (y0, x0, y1, x1)
        Fine window; y0 and x0 must be even.
    coarse_hw : (int, int)
        Size of the whole coarser level.

    Returns
    -------
    (cy0, cx0, cy1, cx1)
        Clipped to the coarser level.
    """
    y0, x0, y1, x1 = box
    m = UP_RADIUS + 1
    return (max(0, y0 // 2 - m), max(0, x0 // 2 - m),
            min(coarse_hw[0], (y1 + 1) // 2 + m), min(coarse_hw[1], (x1 + 1) // 2 + m))


def upsample_to_box(coarse: torch.Tensor, coarse_origin: tuple[int, int], box: Box) \
        -> torch.Tensor:
    """Upsample a window of the coarser level and crop it to a fine window.

    Parameters
    ----------
    coarse : Tensor, shape (C, h, w)
        The coarser level over ``coarse_box_for(box, ...)`` (or the whole level).
    coarse_origin : (int, int)
        Global (y, x) of ``coarse[:, 0, 0]``.
    box : (y0, x0, y1, x1)
        Fine window.

    Returns
    -------
    Tensor, shape (C, y1 - y0, x1 - x0)
    """
    y0, x0, y1, x1 = box
    up = up2(coarse)
    oy, ox = 2 * coarse_origin[0], 2 * coarse_origin[1]
    if y0 < oy or x0 < ox or y1 > oy + up.shape[1] or x1 > ox + up.shape[2]:
        raise ValueError("coarse window does not cover the fine window")
    return up[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox]


def sample_level(denoise: Denoise, *, box: Box, channels: int, seed: int, level: int,
                 sigmas: torch.Tensor, eta: float, coarse_up: torch.Tensor | None = None,
                 device: torch.device | str = "cpu",
                 callback: Callable[[int], None] | None = None,
                 wrap: Wrap = NO_WRAP) -> torch.Tensor:
    """Sample one level over a window, from noise keyed by global coordinates.

    Parameters
    ----------
    denoise : callable
        The level's image denoiser (``make_denoise``).
    box : (y0, x0, y1, x1)
        The window in the level's global pixel coordinates (the whole level, or a tile's
        core plus halo clipped to the level).
    channels : int
    seed, level : int
        Keys of the noise.
    sigmas : Tensor, shape (T,)
    eta : float
    coarse_up : Tensor, shape (C, y1 - y0, x1 - x0), optional
        The finished coarser level upsampled onto the window; ``None`` on the coarsest
        level (no blend).
    device : torch.device or str
    callback : callable, optional
        Called after each denoiser call with the step index.
    wrap : Wrap
        Axes on which the window is a whole torus (a tileable level sampled in one piece):
        the blend's blur wraps there. The denoiser wraps by itself
        (``torus.PeriodicDenoiser``).

    Returns
    -------
    Tensor, shape (C, y1 - y0, x1 - x0), float32
        The level's clean estimate on the window (exact in the core, see ``level_halo``).
    """
    bind = getattr(denoise, "bind", None)
    if bind is not None:  # stateful denoisers (fast backend) key their randomness globally
        denoise = bind(origin=(box[0], box[1]), seed=seed, level=level)
    x_init = gaussian_noise(seed, level, INIT_STEP, box, channels, device=device)

    def noise(i: int) -> torch.Tensor:
        return gaussian_noise(seed, level, i, box, channels, device=device)

    blur = (lambda x: periodic_blur2(x, wrap)) if wrap else None
    blend = None if coarse_up is None else \
        laplacian_blend(coarse_up, blur) if blur else laplacian_blend(coarse_up)
    return sample_ddim(denoise, x_init, sigmas, eta=eta, noise=noise, blend=blend,
                       callback=callback)
