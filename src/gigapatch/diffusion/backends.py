"""The image denoiser of one level: which backend (``auto`` -> exact or fast) and its build.

The one place that turns :class:`~gigapatch.diffusion.settings.DenoiserSettings` into a
``denoise(x, s)`` callable. ``gigapatch.generate`` (every level of the whole image) and the
tiled pipeline's tasks (one level, shared by every tile of a worker) both build their levels
here, so a tile runs exactly the denoiser the whole image would.
"""

from __future__ import annotations

import logging

import torch

from .denoiser import image_denoise, posterior_mean
from .fast import choose_backend, make_fast_denoise
from .levels import patch_count
from .patch_index import PatchIndex
from .sampling import Denoise
from .schedules import signal_scale
from .settings import DenoiserSettings

__all__ = ["level_backend", "make_denoise", "level_denoiser", "index_entries"]

log = logging.getLogger(__name__)


def level_backend(settings: DenoiserSettings, device: torch.device | str, *, patch_size: int,
                  ref_hw: tuple[int, int], out_hw: tuple[int, int], channels: int) -> str:
    """The denoiser backend of one level: the configured one, or for ``auto`` the cheapest
    that is exact enough (exact while one exact step of the WHOLE level is cheap, else fast;
    see ``diffusion.fast.choose_backend``).

    Asked once per level by the run's plan (``gigapatch.pipeline.plan``), so ``generate``,
    the tiled pipeline and ``gigapatch info`` agree, and a tile uses the backend the whole
    image would.
    """
    if settings.backend != "auto":
        return settings.backend
    p = patch_size
    return choose_backend(patch_count(out_hw, p), patch_count(ref_hw, p), channels * p * p,
                          device)


def index_entries(backend: str, settings: DenoiserSettings, *, channels: int,
                  patch_size: int) -> int | None:
    """Entries a level's patch index keeps: the fast backend subsamples to
    ``settings.index_budget_mb``; exact and fused need every patch (``None``)."""
    if backend != "fast":
        return None
    p = patch_size
    return max(1, settings.index_budget_mb * 2**20 // (channels * p * p * 4 + 32))


def make_denoise(index: PatchIndex, *, patch_size: int, rho: float, backend: str,
                 settings: DenoiserSettings) -> Denoise:
    """The image denoiser ``denoise(x, s)`` of one level over a built patch index.

    Parameters
    ----------
    index : PatchIndex
        The level's clean patches, on the device the images will live on.
    patch_size : int
    rho : float
        Fold window std.
    backend : {"exact", "fused", "fast"}
        The level's backend (already chosen: never ``auto``).
    settings : DenoiserSettings
        Precision and memory budget; the fast backend's knobs.

    Returns
    -------
    callable
        ``denoise(x (C, H, W), s) -> x_hat (C, H, W)``. The fast backend's denoiser is
        stateful and has ``bind(origin=, seed=, level=)``, which
        ``generator.sample_level`` calls.
    """
    if backend == "fast":
        return make_fast_denoise(index, patch_size=patch_size, rho=rho, params=settings)
    budget, dtype = settings.memory_budget_mb, settings.dtype

    def denoise(x: torch.Tensor, s: float) -> torch.Tensor:
        a = signal_scale(s)

        def patches(q: torch.Tensor) -> torch.Tensor:
            return posterior_mean(q, index, a, s, backend=backend, memory_budget_mb=budget,
                                  dtype=dtype)

        return image_denoise(x, patches, patch_size, rho, memory_budget_mb=budget)

    return denoise


def level_denoiser(ref_level: torch.Tensor, backend: str, *, patch_size: int, rho: float,
                   settings: DenoiserSettings) -> Denoise:
    """The image denoiser of one level, from the reference pyramid's level.

    Parameters
    ----------
    ref_level : Tensor, shape (C, h, w)
        The reference pyramid's level in model space, on the sampling device.
    backend : {"exact", "fused", "fast"}
        The level's backend (``level_backend``; never ``auto``).
    patch_size, rho
        The sampler's P and fold window std.
    settings : DenoiserSettings
    """
    c = ref_level.shape[0]
    index = PatchIndex.from_image(
        ref_level, patch_size,
        max_entries=index_entries(backend, settings, channels=c, patch_size=patch_size),
        prune_tolerance=settings.prune_tolerance)
    log.debug("level index: %d entries of %s reference patches (%s backend)", index.size,
              f"{patch_count(tuple(ref_level.shape[1:]), patch_size):,}", backend)
    return make_denoise(index, patch_size=patch_size, rho=rho, backend=backend,
                        settings=settings)
