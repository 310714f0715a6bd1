"""The Python API: ``gigapatch.generate`` and the helpers the CLI shares with it.

This module turns a ``Config`` into plain arguments for ``gigapatch.diffusion``; nothing
below it sees the config.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import Config, load_config
from .device import resolve_device
from .diffusion.fast import FastParams, choose_backend
from .diffusion.generator import make_denoise, sample_level, upsample_to_box
from .diffusion.levels import LevelShape, auto_level_count, patch_count, plan_level_shapes
from .diffusion.patch_index import PatchIndex, patch_set_bytes
from .diffusion.pyramid import gaussian_pyramid
from .diffusion.schedules import flow_linear
from .diffusion.symmetry import MirroredDenoiser
from .diffusion.torus import PeriodicDenoiser, Wrap, periodic_size, periodic_up2
from .errors import GigapatchError

__all__ = ["generate", "resolve_size", "plan_levels", "resolve_device", "as_config",
           "load_reference", "LevelPlan", "sample_levels", "prepare", "denoiser_settings",
           "build_level_denoiser", "level_backend", "output_size"]

#: outputs above this many pixels need the tiled pipeline
MAX_GLOBAL_PIXELS = 2**31


@dataclass(frozen=True)
class LevelPlan:
    """One level of a run, coarsest first (see ``plan_levels``)."""

    level: int
    ref_hw: tuple[int, int]
    out_hw: tuple[int, int]
    patches: int


def as_config(config: Config | str | Path | None) -> Config:
    """A ``Config`` from a Config, a YAML path, a preset name, or ``None`` (default)."""
    if isinstance(config, Config):
        return config
    return load_config(config)


def resolve_size(ref_hw: tuple[int, int], size: Sequence[int] | None = None,
                 scale: float | Sequence[float] | None = None) -> tuple[int, int]:
    """The output (height, width) from an explicit size or a scale of the reference.

    Parameters
    ----------
    ref_hw : (int, int)
        Reference (height, width).
    size : (int, int), optional
        Output (width, height), as written on the command line (``--size WxH``).
    scale : float or (float, float), optional
        Factor of the reference size, or (x factor, y factor).

    Returns
    -------
    (int, int)
        Output (height, width).
    """
    from .inputs import check_scale, check_size

    if size is not None and scale is not None:
        raise GigapatchError("give either size= or scale=, not both")
    if size is not None:
        w, h = check_size(size)
        return h, w
    if scale is None:
        return ref_hw
    scale = check_scale(scale)
    sx, sy = (scale, scale) if isinstance(scale, float) else scale
    return max(1, round(ref_hw[0] * sy)), max(1, round(ref_hw[1] * sx))


def plan_levels(ref_hw: tuple[int, int], out_hw: tuple[int, int], config: Config) \
        -> list[LevelPlan]:
    """Levels of a run: reference and output sizes and patch counts, coarsest first.

    Raises
    ------
    GigapatchError
        When the reference or the output is smaller than one patch.
    """
    p = config.sampler.patch_size
    if min(ref_hw) < p:
        raise GigapatchError(
            f"the reference ({ref_hw[1]}x{ref_hw[0]}) is smaller than the patch size {p}; "
            f"use a larger image or --set sampler.patch_size=N with odd N <= {min(ref_hw)}")
    if min(out_hw) < p:
        raise GigapatchError(
            f"the output size {out_hw[1]}x{out_hw[0]} is smaller than the patch size {p}; "
            f"ask for at least {p}x{p} or lower sampler.patch_size")
    levels = config.sampler.levels
    if levels == "auto":
        levels = auto_level_count(ref_hw, p, config.sampler.coarsest_ratio)
    shapes = plan_level_shapes(ref_hw, out_hw, p, levels)
    return [LevelPlan(s.level, s.ref_hw, s.out_hw,
                      patch_count(s.ref_hw, p)) for s in shapes]


def output_size(ref_hw: tuple[int, int], out_hw: tuple[int, int], config: Config) \
        -> tuple[int, int]:
    """The output size a run uses: ``out_hw``, with the wrapped sides of a tileable run
    rounded up to a multiple of ``2 ** (levels - 1)`` (``diffusion.torus.periodic_size``:
    each level of a torus must be exactly half the next). Refuses too-small sizes."""
    wrap = Wrap.parse(config.sampler.tileable)
    while True:
        plan = plan_levels(ref_hw, out_hw, config)
        hw = periodic_size(out_hw, len(plan), wrap)
        if hw == out_hw:
            return hw
        out_hw = hw


def load_reference(reference: Any, *, max_pixels: int = 400_000_000,
                   page: int | None = None) -> np.ndarray:
    """A reference as float32 (H, W, C) in [0, 1] from a path, an array or a PIL image.

    Files: see ``gigapatch.storage.read_image`` (``page`` picks a page of a multi-page
    file); arrays, tensors and PIL images: see ``gigapatch.storage.coerce_image``.
    """
    from .inputs import check_page
    from .storage.read import coerce_image, read_image

    page = check_page(page)
    if isinstance(reference, (str, os.PathLike)):
        return read_image(reference, max_pixels=max_pixels, what="reference", page=page,
                          words="api")[0]
    if page is not None:
        raise GigapatchError("page= only applies to a reference given as a file path")
    return coerce_image(reference, name="reference")[0]


def prepare(reference: Any, size: Sequence[int] | None,
            scale: float | Sequence[float] | None, config: Config | str | Path | None,
            device: str | torch.device, *, page: int | None = None) \
        -> tuple[Config, torch.device, np.ndarray, tuple[int, int]]:
    """What every run starts with (``generate`` and the tiled ``run_tiled``): the config,
    the device, the reference (H, W, C) in [0, 1] and the output (height, width)."""
    from .inputs import check_config, check_scale, check_size

    check_size(size)
    check_scale(scale)
    cfg = as_config(check_config(config))
    dev = resolve_device(device)
    ref = load_reference(reference, max_pixels=cfg.output.max_input_pixels, page=page)
    out_hw = output_size(ref.shape[:2], resolve_size(ref.shape[:2], size, scale), cfg)
    return cfg, dev, ref, out_hw


def denoiser_settings(config: Config) -> dict[str, Any]:
    """The config's denoiser section as plain values (what :func:`build_level_denoiser`
    takes; tiled tasks carry it to their workers)."""
    return dataclasses.asdict(config.denoiser)


def build_level_denoiser(ref_level: torch.Tensor, backend: str, *, patch_size: int,
                         rho: float, denoiser: Mapping[str, Any]):
    """The image denoiser of one level, from plain values.

    The one place that turns the denoiser settings into ``diffusion`` arguments:
    ``sample_levels`` (``generate``) and every tiled task (``pipeline.tasks``) build their
    levels here, so a tile runs exactly the denoiser the whole image would.

    Parameters
    ----------
    ref_level : Tensor, shape (C, h, w)
        The reference pyramid's level in model space, on the sampling device.
    backend : {"exact", "fused", "fast"}
        The level's backend (already chosen: never ``auto``).
    patch_size, rho
        The sampler's P and fold window std.
    denoiser : mapping
        :func:`denoiser_settings` of the config (the keys of ``DenoiserConfig``).
    """
    dn = denoiser
    p = patch_size
    c = ref_level.shape[0]
    # the fast backend subsamples the index to its budget; exact/fused need every patch
    max_entries = max(1, dn["index_budget_mb"] * 2**20 // (c * p * p * 4 + 32)) \
        if backend == "fast" else None
    index = PatchIndex.from_image(ref_level, p, max_entries=max_entries,
                                  prune_tolerance=dn["prune_tolerance"])
    fast = FastParams(candidates=dn["candidates"], broad_steps=dn["broad_below_steps"],
                      query_stride=dn["query_stride"], probes=dn["probes"], dtype=dn["dtype"],
                      memory_budget_mb=dn["memory_budget_mb"])
    return make_denoise(index, patch_size=p, rho=rho, backend=backend,
                        memory_budget_mb=dn["memory_budget_mb"], dtype=dn["dtype"], fast=fast,
                        pca_dims=dn["pca_dims"], dictionary_size=dn["dictionary_size"])


def _to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, C) in [0, 1] -> (C, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(device) * 2 - 1


def _resize(img: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of (C, H, W) (retargeting's coarsest level)."""
    if tuple(img.shape[1:]) == tuple(hw):
        return img
    return F.interpolate(img[None], size=hw, mode="bicubic", antialias=True,
                         align_corners=False)[0]


def level_backend(config: Config, device: torch.device, *, ref_hw: tuple[int, int],
                  out_hw: tuple[int, int], channels: int) -> str:
    """The denoiser backend of one level: the config's, or for ``auto`` the cheapest that is
    exact enough (exact while one exact step of the WHOLE level is cheap, else fast; see
    ``diffusion.fast.choose_backend``). ``generate``, the tiled plan and ``info`` all ask
    here, so a tile uses the backend the whole image would."""
    backend = config.denoiser.backend
    if backend != "auto":
        return backend
    p = config.sampler.patch_size
    return choose_backend(patch_count(out_hw, p), patch_count(ref_hw, p),
                          channels * p * p, device)


def _check_index_fits(backend: str, ref_hw: tuple[int, int], channels: int, config: Config,
                      level: int) -> None:
    need = patch_set_bytes(ref_hw[0], ref_hw[1], channels, config.sampler.patch_size)
    budget = config.denoiser.index_budget_mb * 2**20
    if backend in ("exact", "fused") and need > budget:
        raise GigapatchError(
            f"level {level} of the reference ({ref_hw[1]}x{ref_hw[0]}) has "
            f"{need / 2**30:.1f} GiB of patches, more than denoiser.index_budget_mb="
            f"{config.denoiser.index_budget_mb}; the {backend} backend needs them all. Use "
            "--set denoiser.backend=fast (or auto), which subsamples the index to the budget, "
            "or a smaller reference")


def generate(reference: Any, *,
             size: Sequence[int] | None = None, scale: float | Sequence[float] | None = None,
             seed: int = 0, config: Config | str | Path | None = None,
             device: str | torch.device = "auto", progress: bool = False,
             page: int | None = None) -> np.ndarray:
    """Generate one image with the patch statistics of a reference.

    Parameters
    ----------
    reference : path, ndarray, torch.Tensor or PIL.Image.Image
        - a file path (str or PathLike): TIFF (any codec, 8/16-bit, float in [0, 1],
          multi-band), PNG, JPEG, WebP or GIF; orientation tags are applied, alpha is
          dropped, CMYK and palette images become RGB. Multi-page / animated files need
          ``page``.
        - an array or tensor ``(H, W)`` or ``(H, W, C)``, channels last, any C >= 1 (all
          channels are kept; drop alpha yourself): uint8 (0..255), uint16 (0..65535), other
          integer types holding 0..255 (read as 8-bit) or, when the maximum exceeds 255,
          0..65535 (16-bit); floats in [0, 1] (no NaN).
        - a PIL image: palette images become RGB, alpha (LA, RGBA) is dropped, 16-bit
          grey stays 16-bit, CMYK becomes RGB.
    size : (int, int), optional
        Output (width, height) in whole pixels. Default: the reference's size.
    scale : float or (float, float), optional
        Output size as a factor of the reference's: one factor for both sides, or
        (x factor, y factor). Exclusive with ``size``.
    seed : int
        0 <= seed < 2**63. Same seed, same image: noise is keyed by (seed, level, step,
        pixel, channel).
    config : Config, path or preset name, optional
        Default: the bundled ``default`` preset. To change a few keys use
        ``gigapatch.load_config(None, ["sampler.steps=20"])``.
    device : {"auto", "cpu", "cuda", "cuda:N"}
    progress : bool
        Show a progress bar (denoiser calls done / total, with ETA) on stderr.
    page : int, optional
        The page of a multi-page TIFF or the frame of an animated WebP/GIF reference.

    Returns
    -------
    ndarray, shape (H, W, C), float32
        Values in [0, 1]; C is the reference's channel count.

    Raises
    ------
    GigapatchError
        For every mistake in the arguments or the reference, naming the parameter.
    """
    from .inputs import check_seed

    seed = check_seed(seed)
    cfg, dev, ref, out_hw = prepare(reference, size, scale, config, device, page=page)
    if out_hw[0] * out_hw[1] > MAX_GLOBAL_PIXELS:
        raise GigapatchError(f"output {out_hw[1]}x{out_hw[0]} is too large to hold in memory; "
                             "write it to a .tif so the tiled pipeline streams it")
    levels = sample_levels(ref, out_hw, cfg, seed=seed, device=dev, progress=progress)
    coarse = levels[-1]
    out = ((coarse.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(out, dtype=np.float32)


def sample_levels(ref: np.ndarray, out_hw: tuple[int, int], config: Config, *, seed: int = 0,
                  device: torch.device = torch.device("cpu"), progress: bool = False,
                  backends: Sequence[str] | None = None) -> list[torch.Tensor]:
    """Sample every pyramid level of one output, coarsest first (what ``generate`` runs).

    Parameters
    ----------
    ref : ndarray, shape (H, W, C)
        The reference in [0, 1] (``load_reference``).
    out_hw : (int, int)
        Output (height, width) of the finest level.
    config : Config
    seed : int
    device : torch.device
    progress : bool
    backends : sequence of str, optional
        One backend per level (exact | fused | fast) overriding the config's choice
        (benchmarks and fidelity checks).

    Returns
    -------
    list of Tensor, shape (C, h_k, w_k)
        Each level's clean estimate in [-1, 1] (not clamped), coarsest first.
    """
    cfg = config
    dev = device
    ref_hw = ref.shape[:2]
    plan = plan_levels(ref_hw, out_hw, cfg)
    sc = cfg.sampler
    channels = ref.shape[2]
    ref_t = _to_tensor(ref, dev)
    ref_pyr = gaussian_pyramid(ref_t, len(plan))
    sigmas = flow_linear(sc.steps, sc.s_min)
    dn = denoiser_settings(cfg)
    wrap = Wrap.parse(sc.tileable)
    mirror = Wrap.parse(sc.symmetry)
    if wrap and periodic_size(out_hw, len(plan), wrap) != tuple(out_hw):
        raise GigapatchError(
            f"a tileable output of {out_hw[1]}x{out_hw[0]} cannot wrap at every one of its "
            f"{len(plan)} levels; use a size from api.output_size (sides that wrap must be "
            f"multiples of {2 ** (len(plan) - 1)})")
    outs: list[torch.Tensor] = []
    level_backends = []
    for lp in plan:  # choose and check every level first: refuse before any work
        b = backends[lp.level] if backends is not None else level_backend(
            cfg, dev, ref_hw=lp.ref_hw, out_hw=lp.out_hw, channels=channels)
        if not (lp.level == 0 and sc.mode == "retarget"):
            _check_index_fits(b, lp.ref_hw, channels, cfg, lp.level)
        level_backends.append(b)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan) * sc.steps, unit="step", desc="sampling", leave=False)
    try:
        coarse: torch.Tensor | None = None
        for lp in plan:
            h, w = lp.out_hw
            box = (0, 0, h, w)
            if lp.level == 0 and sc.mode == "retarget":
                coarse = _resize(ref_pyr[0], (h, w))
                outs.append(coarse)
                if bar is not None:
                    bar.update(sc.steps)
                continue
            p = sc.patch_size
            backend = level_backends[lp.level]
            denoise = build_level_denoiser(ref_pyr[lp.level], backend, patch_size=p,
                                           rho=sc.rho, denoiser=dn)
            if wrap:
                denoise = PeriodicDenoiser(denoise, p, wrap)
            if mirror:
                denoise = MirroredDenoiser(denoise, mirror)
            coarse_up = None if coarse is None else periodic_up2(coarse, wrap)[:, :h, :w] \
                if wrap else upsample_to_box(coarse, (0, 0), box)
            if bar is not None:
                bar.set_description(f"level {lp.level + 1}/{len(plan)} ({w}x{h})")
            coarse = sample_level(denoise, box=box, channels=channels, seed=seed,
                                  level=lp.level, sigmas=sigmas, eta=sc.eta,
                                  coarse_up=coarse_up, device=dev,
                                  callback=(lambda i: bar.update(1)) if bar else None,
                                  wrap=wrap)
            outs.append(coarse)
    finally:
        if bar is not None:
            bar.close()
    return outs
