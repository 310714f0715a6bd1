"""The Python API, a thin facade: ``generate``, ``generate_tiled`` and the input helpers the
CLI shares with them.

Every entry point normalises its inputs once here (:func:`prepare`: config, device,
reference, output size) and hands prepared values to the pipeline: the whole-image run
(``pipeline.whole.sample_levels``, for ``generate``) or the tiled one
(``pipeline.run.run_tiled``, for ``generate_tiled``). Nothing below this module imports it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .config import Config, load_config
from .device import resolve_device
from .diffusion.model_space import to_unit
from .errors import GigapatchError
from .inputs import check_config, check_page, check_scale, check_seed, check_size, resolve_size
from .pipeline.outmeta import resolve_output_metadata
from .pipeline.plan import output_size
from .pipeline.run import TiledOptions, TiledResult, run_tiled
from .pipeline.whole import sample_levels
from .storage.metadata import OutputMetadata

__all__ = ["generate", "generate_tiled", "resolve_size", "resolve_device", "as_config",
           "load_reference", "sample_levels", "prepare", "MAX_GLOBAL_PIXELS", "output_size"]

#: outputs above this many pixels need the tiled pipeline
MAX_GLOBAL_PIXELS = 2**31


def as_config(config: Config | str | Path | None) -> Config:
    """A ``Config`` from a Config, a YAML path, a preset name, or ``None`` (default)."""
    if isinstance(config, Config):
        return config
    return load_config(config)


def load_reference(reference: Any, *, max_pixels: int = 400_000_000,
                   page: int | None = None, native: bool = False) -> np.ndarray:
    """A reference as float32 (H, W, C) in [0, 1] from a path, an array or a PIL image.

    Files: see ``gigapatch.storage.read_image`` (``page`` picks a page of a multi-page
    file); arrays, tensors and PIL images: see ``gigapatch.storage.coerce_image``.
    ``native``: 8- and 16-bit samples stay uint8 / uint16 (a quarter / half of the
    float32 memory; ``diffusion.model_space.to_model`` converts them to the same values).
    """
    from .storage.read import coerce_image, read_image

    page = check_page(page)
    if isinstance(reference, (str, os.PathLike)):
        return read_image(reference, max_pixels=max_pixels, what="reference", page=page,
                          words="api", native=native)[0]
    if page is not None:
        raise GigapatchError("page= only applies to a reference given as a file path")
    return coerce_image(reference, name="reference", native=native)[0]


def prepare(reference: Any, size: Sequence[int] | None,
            scale: float | Sequence[float] | None, config: Config | str | Path | None,
            device: str | torch.device, *, page: int | None = None,
            native: bool = False) -> tuple[Config, torch.device, np.ndarray, tuple[int, int]]:
    """What every run starts with (``generate`` and the tiled ``run_tiled``): the config,
    the device, the reference (H, W, C) in [0, 1] (``native``: 8/16-bit samples kept as
    uint8/uint16, see ``load_reference``) and the output (height, width)."""
    check_size(size)
    check_scale(scale)
    cfg = as_config(check_config(config))
    dev = resolve_device(device)
    ref = load_reference(reference, max_pixels=cfg.output.max_input_pixels, page=page,
                         native=native)
    out_hw = output_size(ref.shape[:2], resolve_size(ref.shape[:2], size, scale), cfg)
    return cfg, dev, ref, out_hw


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
    seed = check_seed(seed)
    # native: an 8-bit reference is held as uint8 and converted to model space in bands,
    # never as a float32 (H, W, C) copy (a 100 MP reference: 0.3 GB instead of 1.2 GB)
    cfg, dev, ref, out_hw = prepare(reference, size, scale, config, device, page=page,
                                    native=True)
    if out_hw[0] * out_hw[1] > MAX_GLOBAL_PIXELS:
        raise GigapatchError(f"output {out_hw[1]}x{out_hw[0]} is too large to hold in memory; "
                             "write it to a .tif so the tiled pipeline streams it")
    levels = sample_levels(ref, out_hw, cfg, seed=seed, device=dev, progress=progress)
    return to_unit(levels[-1])  # the finest level




def generate_tiled(reference, output: str | os.PathLike | None = None, *,
                   size: Sequence[int] | None = None,
                   scale: float | Sequence[float] | None = None, seed: int = 0,
                   config: Config | str | Path | None = None,
                   device: str | torch.device = "auto", options: TiledOptions | None = None,
                   progress: bool = False, page: int | None = None,
                   metadata: OutputMetadata | None = None) -> TiledResult:
    """Generate one image tile by tile through a resumable run store.

    Parameters
    ----------
    reference, size, scale, seed, config, device
        As for :func:`generate`; same seed, same image as ``generate`` (up to float
        summation order, max abs difference <= 1e-4 before quantisation).
    output : path, optional
        ``.tif``/``.tiff`` (pyramidal tiled BigTIFF), ``.ome.zarr`` (OME-Zarr 0.5), or
        ``.png``/``.jpg`` (small outputs only). ``None``: only the run store is filled.
    options : TiledOptions, optional
        Run dir, tile size, forced tiling, cluster, workers, format, writer
        (``gigapatch.pipeline.TiledOptions``; default: ``TiledOptions()``).
    progress : bool
        tqdm bars per level on stderr.
    page : int, optional
        As for :func:`generate`.
    metadata : OutputMetadata, optional
        The output's resolution, ICC profile, georeferencing and band names (default: the
        reference file's with the ``output`` config keys applied,
        ``pipeline.outmeta.resolve_output_metadata``).

    Returns
    -------
    TiledResult
    """
    seed = check_seed(seed)
    # native: an 8/16-bit reference reaches the run store as its samples directly (the
    # same model-space floats; no float32 copy to check back, model_space.exact_samples)
    cfg, dev, ref, out_hw = prepare(reference, size, scale, config, device, page=page,
                                    native=True)
    if metadata is None:
        metadata = resolve_output_metadata(reference, cfg, out_hw, ref.shape[2])
    return run_tiled(ref, out_hw, output, seed=seed, config=cfg, device=dev,
                     options=options or TiledOptions(), progress=progress, metadata=metadata)
