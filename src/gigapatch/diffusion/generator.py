"""The coarse-to-fine sampler: levels -> window -> steps.

* :func:`sample_levels` samples every level of one whole output, coarsest first
  (``gigapatch.generate``);
* :func:`sample_level` samples one level over a window of global coordinates: the whole
  level, or a tile's core plus halo (the tiled pipeline's tasks). Both call it;
* the steps are ``sampling.sample_ddim``, a pure function over ``denoise(x, s)``.

Windows are plain ``(y0, x0, y1, x1)`` tuples, half-open, in a level's global pixel
coordinates: this package imports nothing else of gigapatch, and the one ``Box`` class
(``gigapatch.tiling.Box``) converts with ``Box.as_tuple()``.

The same function samples a whole level and a tile of it: noise comes from global
coordinates, the image denoiser pads nothing, and the pyramid filters are exact factor-2
FIR filters, so every pixel at distance ``halo`` (:func:`level_halo`) or more from a window
edge that is not an image border gets the value the whole-image sampler gives it.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .backends import LevelCache, level_denoiser, level_settings
from .levels import Level
from .noise import INIT_STEP, gaussian_noise
from .priors import PriorSettings, level_sigmas, noised_start
from .pyramid import BLUR_RADIUS, UP_RADIUS, gaussian_pyramid, up2
from .sampling import Denoise, laplacian_blend, sample_ddim
from .settings import DenoiserSettings
from .symmetry import MirroredDenoiser
from .torus import NO_WRAP, PeriodicDenoiser, Wrap, periodic_blur2, periodic_up2

__all__ = ["sample_levels", "sample_level", "resize_level", "upsample_to_box", "step_radius",
           "level_halo", "coarse_box_for", "level_start"]

log = logging.getLogger(__name__)

#: (y0, x0, y1, x1), half-open, global pixel coordinates of one level
Window = tuple[int, int, int, int]


def step_radius(patch_size: int) -> int:
    """Pixels one image-denoise call reads beyond the pixel it writes: P - 1."""
    return patch_size - 1


def level_halo(patch_size: int, steps: int, blended: bool, extra: int = 0) -> int:
    """Halo (pixels per side) a window needs for its core to match the whole image.

    Each denoiser call reads P - 1 pixels around every pixel it writes; each blend (all
    steps but the last, on levels with a coarser level) reads ``BLUR_RADIUS`` more; a
    denoiser backend may need ``extra`` pixels beyond that (``fast.fast_extra_halo``). The
    sum is rounded up to even, once, so that window origins stay on the 2x grid.

    Parameters
    ----------
    patch_size : int
    steps : int
        T.
    blended : bool
        Whether the level takes its low frequencies from a coarser level.
    extra : int
        The backend's extra reach.

    Returns
    -------
    int
        Even.
    """
    halo = steps * step_radius(patch_size) + extra
    if blended:
        halo += (steps - 1) * BLUR_RADIUS
    return halo + (halo % 2)


def coarse_box_for(box: Window, coarse_hw: tuple[int, int],
                   wrap: tuple[bool, bool] = (False, False)) -> Window:
    """The coarser level's window that ``upsample_to_box`` needs for a fine window.

    Parameters
    ----------
    box : (y0, x0, y1, x1)
        Fine window; y0 and x0 must be even.
    coarse_hw : (int, int)
        Size of the whole coarser level.
    wrap : (bool, bool)
        Axes (y, x) that wrap around: not clipped (read modulo the level's size).

    Returns
    -------
    (cy0, cx0, cy1, cx1)
        Clipped to the coarser level on the axes that do not wrap.
    """
    y0, x0, y1, x1 = box
    m = UP_RADIUS + 1
    cy0, cx0, cy1, cx1 = y0 // 2 - m, x0 // 2 - m, (y1 + 1) // 2 + m, (x1 + 1) // 2 + m
    if not wrap[0]:
        cy0, cy1 = max(0, cy0), min(coarse_hw[0], cy1)
    if not wrap[1]:
        cx0, cx1 = max(0, cx0), min(coarse_hw[1], cx1)
    return cy0, cx0, cy1, cx1


def upsample_to_box(coarse: torch.Tensor, coarse_origin: tuple[int, int], box: Window) \
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


def sample_level(denoise: Denoise, *, box: Window, channels: int, seed: int, level: int,
                 sigmas: torch.Tensor, eta: float, coarse_up: torch.Tensor | None = None,
                 device: torch.device | str = "cpu",
                 callback: Callable[[int], None] | None = None,
                 wrap: Wrap = NO_WRAP, period: tuple[int, int] = (0, 0),
                 start: torch.Tensor | None = None) -> torch.Tensor:
    """Sample one level over a window, from noise keyed by global coordinates.

    Parameters
    ----------
    denoise : callable
        The level's image denoiser (``backends.level_denoiser``).
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
    period : (int, int)
        The level's (height, width) on the axes of a tileable output (0 elsewhere): noise
        and the fast backend's keyed choices use coordinates modulo it, so a tile's window
        may run past the level and take its halo from the opposite side.

    Returns
    -------
    Tensor, shape (C, y1 - y0, x1 - x0), float32
        The level's clean estimate on the window (exact in the core, see ``level_halo``).
    """
    bind = getattr(denoise, "bind", None)
    if bind is not None:  # stateful denoisers (fast backend) key their randomness globally
        denoise = bind(origin=(box[0], box[1]), seed=seed, level=level, period=period)
    x_init = gaussian_noise(seed, level, INIT_STEP, box, channels, device=device,
                            period=period)
    if start is not None:  # partial-noise start (diffusion.priors): x at s = sigmas[0]
        x_init = noised_start(start.to(x_init.device), x_init, float(sigmas[0]))

    def noise(i: int) -> torch.Tensor:
        return gaussian_noise(seed, level, i, box, channels, device=device, period=period)

    blur = (lambda x: periodic_blur2(x, wrap)) if wrap else None
    blend = None if coarse_up is None else \
        laplacian_blend(coarse_up, blur) if blur else laplacian_blend(coarse_up)
    return sample_ddim(denoise, x_init, sigmas, eta=eta, noise=noise, blend=blend,
                       callback=callback)


def resize_level(image: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of (C, H, W) to ``hw``: retargeting's coarsest level
    (a level whose mode is ``resize``) is the resized reference level."""
    if tuple(image.shape[1:]) == tuple(hw):
        return image
    return F.interpolate(image[None], size=hw, mode="bicubic", antialias=True,
                         align_corners=False)[0]


def level_start(ref_level0: torch.Tensor, out_hw: tuple[int, int], level: int,
                prior: PriorSettings | None, box: Window) -> torch.Tensor | None:
    """The partial-noise start on a window of the coarsest level (``None``: pure noise):
    the reference's coarsest level resized to the WHOLE output level, cropped to ``box``."""
    if prior is None or level != 0 or prior.t0 >= 1.0:
        return None
    y0, x0, y1, x1 = box
    return resize_level(ref_level0, out_hw)[:, y0:y1, x0:x1]


def sample_levels(ref: torch.Tensor | list[torch.Tensor], levels: Sequence[Level], *,
                  patch_size: int, rho: float,
                  sigmas: torch.Tensor, eta: float, settings: DenoiserSettings, seed: int,
                  wrap: Wrap = NO_WRAP, mirror: Wrap = NO_WRAP,
                  progress: Callable[[Level, int], None] | None = None,
                  cache: LevelCache | None = None,
                  prior: PriorSettings | None = None) -> list[torch.Tensor]:
    """Sample every level of one whole output, coarsest first (what ``generate`` runs).

    Parameters
    ----------
    ref : Tensor, shape (C, H, W), or list of Tensor
        The reference in model space [-1, 1], on the sampling device; or its
        ``gaussian_pyramid`` (one level per entry of ``levels``, coarsest first), which is
        then CONSUMED: each level is set to ``None`` in the list once its denoiser is built
        (and level 0 once its start is taken), so a caller that keeps no other reference
        to a level frees it before the level is sampled (a big reference's finest level
        is not held beside its index).
    levels : sequence of Level
        The run's levels, coarsest first (``gigapatch.pipeline.plan.plan_levels``); each
        is sampled over its whole output size (a ``resize`` level is the resized
        reference).
    patch_size, rho, eta
        The sampler's P, fold window std and stochasticity.
    sigmas : Tensor, shape (T,)
        The schedule (``schedules.flow_linear``).
    settings : DenoiserSettings
    seed : int
    wrap : Wrap
        Axes on which every level is a torus (a tileable output, ``torus``): the denoiser
        pads circularly, the coarse level upsamples and the blend blurs with wrap-around.
    mirror : Wrap
        Axes of mirror symmetry (``symmetry.MirroredDenoiser``).
    progress : callable, optional
        ``progress(level, n)`` after ``n`` more steps of ``level`` are done (each denoiser
        call; all T at once for a resized level).
    cache : LevelCache, optional
        Built level indexes shared with other outputs of this process
        (``backends.LevelCache``; the result is the same with or without).
    prior : PriorSettings, optional
        The composition priors (``diffusion.priors``); ``None`` is the paper's sampler.

    Returns
    -------
    list of Tensor, shape (C, h_k, w_k)
        Each level's clean estimate in [-1, 1] (not clamped), coarsest first.
    """
    if isinstance(ref, list):
        ref_pyr = ref
    else:
        ref_pyr = gaussian_pyramid(ref, len(levels))
    ref = None  # noqa: F841 (the list holds the levels; each is dropped once used)
    channels = ref_pyr[-1].shape[0]
    device = ref_pyr[-1].device
    steps = int(sigmas.shape[0])
    outs: list[torch.Tensor] = []
    prev: torch.Tensor | None = None
    for lv in levels:
        h, w = lv.out_hw
        if lv.mode == "resize":
            prev = resize_level(ref_pyr[lv.level], (h, w))
            ref_pyr[lv.level] = None  # levels are sampled once, coarsest first
            outs.append(prev)
            if progress is not None:
                progress(lv, steps)
            continue
        box = (0, 0, h, w)
        denoise = None  # drop the previous level's index before building this one
        pos = None if prior is None else prior.position_prior(
            lv.level, out_hw=lv.out_hw, ref_hw=tuple(ref_pyr[lv.level].shape[1:]),
            patch_size=patch_size)
        coarse_up = None if prev is None else periodic_up2(prev, wrap)[:, :h, :w] if wrap \
            else upsample_to_box(prev, (0, 0), box)
        start = level_start(ref_pyr[0], lv.out_hw, lv.level, prior, box)  # reads level 0 only

        def wrapped(d: Denoise) -> Denoise:
            if wrap:
                d = PeriodicDenoiser(d, patch_size, wrap)
            if mirror:
                d = MirroredDenoiser(d, mirror)
            return d

        def run(d: Denoise, lv: Level = lv, coarse_up=coarse_up, box: Window = box,
                callback: Callable[[int], None] | None = None,
                start: torch.Tensor | None = start) -> torch.Tensor:
            return sample_level(wrapped(d), box=box, channels=channels, seed=seed,
                                level=lv.level, sigmas=level_sigmas(sigmas, lv.level, prior),
                                eta=eta, coarse_up=coarse_up, device=device,
                                callback=callback, wrap=wrap,
                                period=(h if wrap.y else 0, w if wrap.x else 0),
                                start=start)

        usage = prior is not None and prior.usage_on(lv.level)
        denoise = level_denoiser(ref_pyr[lv.level], lv.backend, patch_size=patch_size,
                                 rho=rho, settings=level_settings(settings, lv.out_hw),
                                 cache=cache, prior=pos,
                                 usage_strength=prior.usage_strength if usage else 0.0,
                                 pilot=run if usage else None)
        ref_pyr[lv.level] = None  # the index holds what sampling needs from this level
        prev = run(denoise,
                   callback=(lambda i, lv=lv: progress(lv, 1)) if progress else None)
        outs.append(prev)
    return outs
