"""Web outputs: a Deep Zoom (DZI) tile pyramid for OpenSeadragon, and a small JPEG preview.

Both go through libvips (``dzsave``, ``thumbnail``), which makes them in one streaming pass.
A DZI is a descriptor ``NAME.dzi`` plus a folder ``NAME_files/`` of JPEG tiles (8-bit: a
16-bit output is reduced to 8 bits for the web). Both are written under temporary names; the
folder is moved into place first and the descriptor last, so a ``NAME.dzi`` that exists
always has its tiles.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import GigapatchError
from .atomic import atomic_path

__all__ = ["write_dzi", "write_preview", "preview_path", "PREVIEW_SIDE"]

#: long side of the preview JPEG, in pixels
PREVIEW_SIDE = 1024


def _vips_image(a: np.ndarray):
    """(H, W, C) uint8/uint16 -> an 8-bit sRGB or grey pyvips image."""
    import pyvips

    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    if a.shape[2] > 3:  # extra bands (e.g. NIR) are not shown on the web
        a = a[:, :, :3]
    im = pyvips.Image.new_from_array(np.ascontiguousarray(a))
    return im.copy(interpretation="srgb" if a.shape[2] == 3 else "b-w")


def write_dzi(path: str | os.PathLike, bands: Iterator[tuple[int, np.ndarray]],
              shape: tuple[int, int], *, channels: int, dtype: str | np.dtype,
              tile: int = 254, overlap: int = 1, quality: int = 90) -> Path:
    """Write ``NAME.dzi`` + ``NAME_files/`` (JPEG tiles) from level 0's row bands.

    Parameters
    ----------
    path : path
        The descriptor, ending in ``.dzi``.
    bands : iterator of (y0, (C, band, W) array)
        Level 0, top to bottom.
    shape : (H, W)
    channels, dtype
        As the bands; 16-bit is reduced to 8 bits, bands beyond the third are left out.
    tile, overlap, quality
        Deep Zoom tile side, tile overlap and JPEG quality.

    Needs free disk for one uncompressed copy of level 0 (a raw file beside the output).
    """
    import pyvips

    p = Path(os.fspath(path))
    if p.suffix.lower() != ".dzi":
        raise GigapatchError(f"output {p}: a Deep Zoom output ends in .dzi (e.g. out.dzi)")
    h, w = shape
    dt = np.dtype(dtype)
    work = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    raw = p.with_name(f".{p.name}.raw-{os.getpid()}")
    base = p.with_suffix("")
    files = base.with_name(base.name + "_files")
    try:
        work.mkdir()
        mm = np.memmap(raw, dtype=dt, mode="w+", shape=(h, w, channels))
        for y0, band in bands:
            mm[y0:y0 + band.shape[1]] = np.moveaxis(band, 0, -1)
        mm.flush()
        del mm
        im = pyvips.Image.rawload(str(raw), w, h, channels,
                                  format="uchar" if dt == np.uint8 else "ushort")
        if dt == np.uint16:
            im = (im >> 8).cast("uchar")
        if channels > 3:
            im = im.extract_band(0, n=3)
        im = im.copy(interpretation="srgb" if im.bands == 3 else "b-w")
        im.dzsave(str(work / base.name), tile_size=tile, overlap=overlap,
                  suffix=f".jpg[Q={quality}]", layout="dz", keep="none")
        del im
        old = files.with_name(f".{files.name}.old-{os.getpid()}")
        if files.exists():
            files.rename(old)
        (work / files.name).rename(files)
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
        os.replace(work / p.name, p)
    except (pyvips.Error, OSError) as exc:
        raise GigapatchError(f"cannot write Deep Zoom output {p} ({exc}); check that the "
                             f"folder is writable and the disk is not full") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(raw)
        shutil.rmtree(work, ignore_errors=True)
    return p


def preview_path(output: str | os.PathLike) -> Path:
    """``out.tif`` -> ``out.preview.jpg`` (``big.ome.zarr`` -> ``big.preview.jpg``)."""
    p = Path(os.fspath(output))
    name = p.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tif", ".ome.tiff"):
        if name.lower().endswith(suffix):
            return p.with_name(name[:-len(suffix)] + ".preview.jpg")
    return p.with_name(p.stem + ".preview.jpg")


def write_preview(path: str | os.PathLike, image: np.ndarray, *,
                  side: int = PREVIEW_SIDE) -> Path:
    """Write a JPEG whose long side is at most ``side`` px from an (H, W, C) uint image
    (pass the smallest pyramid level that is still >= ``side``; it is shrunk here)."""
    p = Path(os.fspath(path))
    im = _vips_image(image)
    scale = min(1.0, side / max(im.width, im.height))
    if scale < 1.0:
        im = im.resize(scale, kernel="lanczos3")
    with atomic_path(p) as tmp:
        im.jpegsave(str(tmp), Q=85, keep="none")
    return p
