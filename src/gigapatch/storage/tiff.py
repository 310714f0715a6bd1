"""Streaming pyramidal (Big)TIFF writers fed from the run store's output pyramid.

Two writers, same result layout. :data:`LAYOUTS`: ``chain`` (default; level 0 in the first
IFD, each reduced level in the next IFD of the main chain, ``NewSubfileType=1``) is the one
every reader we measured sees fully (tifffile, pyvips, GDAL, OpenSlide, tiffslide: the
matrix in BENCHMARKS.md, "Pyramid layouts"); ``subifd`` (reduced levels as SubIFDs of level 0,
the OME-TIFF style) is an option: OpenSlide sees only level 0 of it.

- :func:`write_tiff_tifffile` (default): tifffile gets one tile generator per level, each
  reading one chunk row of the Zarr level at a time; the reduced levels were computed into
  Zarr before (2x box reductions, ``RunStore.reduce_output_chunk``). Memory: one band of
  ``chunk`` rows of one level.
- :func:`write_tiff_vips`: level 0 is streamed into a raw temporary file (beside the
  output), which libvips maps lazily (``rawload``) and saves with ``pyramid=True`` in one
  streaming pass (libvips computes its own reduced levels, also 2x box means). Needs free
  disk for one uncompressed copy of level 0.

Both write ``.NAME.tmp-PID`` beside the output and rename it when complete
(:func:`~gigapatch.storage.atomic.atomic_path`).

Viewer note: the libtiff inside the pyvips-binary wheel (libvips 8.18) has no ZSTD codec:
it cannot write ZSTD and reads ZSTD tiles as zeros without an error. Prefer deflate (the
default) for files meant for vips-based viewers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import GigapatchError
from .atomic import atomic_path
from .metadata import OutputMetadata, geokey_tags

__all__ = ["write_tiff_tifffile", "write_tiff_vips", "tiff_levels", "check_layout", "COMPRESSIONS",
           "LAYOUTS"]

COMPRESSIONS = ("none", "deflate", "zstd", "lzw", "jpeg")

#: Where the reduced levels of a pyramidal TIFF go: the main IFD chain or SubIFDs.
LAYOUTS = ("chain", "subifd")


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise GigapatchError(f"output.layout={layout!r}: expected chain (every reader sees "
                             f"every level) or subifd (OME-TIFF style SubIFDs)")


def _tiles(bands: Iterator[tuple[int, np.ndarray]], width: int, tile: int) \
        -> Iterator[np.ndarray]:
    """(tile, tile, C) tiles in row-major order from (C, band, W) bands (band % tile == 0)."""
    for _, band in bands:
        hwc = np.moveaxis(band, 0, -1)  # (band, W, C) view
        for ty in range(0, hwc.shape[0], tile):
            rows = hwc[ty:ty + tile]
            for tx in range(0, width, tile):
                t = rows[:, tx:tx + tile]
                if t.shape[0] != tile or t.shape[1] != tile:
                    full = np.zeros((tile, tile, t.shape[2]), dtype=t.dtype)
                    full[:t.shape[0], :t.shape[1]] = t
                    t = full
                yield np.ascontiguousarray(t)


def _compression_args(compression: str, dtype: np.dtype) -> dict:
    if compression not in COMPRESSIONS:
        raise GigapatchError(f"output.compression={compression!r}: expected one of "
                             f"{', '.join(COMPRESSIONS)}")
    if compression == "none":
        return {}
    if compression == "jpeg":
        if dtype != np.uint8:
            raise GigapatchError("output.compression=jpeg holds 8 bits only; use deflate, "
                                 "zstd or lzw for 16-bit output")
        return {"compression": "jpeg", "compressionargs": {"level": 95}}
    # tifffile's "deflate" is the legacy code 32946 (libtiff warns about it); "zlib" is the
    # same codec under the portable code 8 (Adobe deflate).
    codec = "zlib" if compression == "deflate" else compression
    return {"compression": codec, "predictor": True}


def write_tiff_tifffile(path: str | os.PathLike, bands_per_level: Sequence, shapes:
                        Sequence[tuple[int, int]], *, channels: int, dtype: str | np.dtype,
                        tile: int = 256, compression: str = "deflate",
                        dpi: float | None = None, layout: str = "chain",
                        metadata: OutputMetadata | None = None, bigtiff: bool = True) -> Path:
    """Write a pyramidal tiled BigTIFF from per-level band iterators.

    Parameters
    ----------
    path : path
        Output ``.tif``/``.tiff``.
    bands_per_level : sequence of callables
        ``bands_per_level[r]()`` -> iterator of ``(y0, (C, band, W_r))`` row bands of level
        ``r`` (full size first), ``band`` a multiple of ``tile`` except the last.
    shapes : sequence of (H_r, W_r)
    channels : int
        1 (grey), 3 (RGB), or any other count (e.g. 4 = RGB + NIR: RGB with unspecified
        extra samples, never alpha).
    dtype : uint8 or uint16
    tile : {256, 512}
    compression : {"none", "deflate", "zstd", "lzw", "jpeg"}
        A horizontal predictor is added for deflate, zstd and lzw.
    dpi : float, optional
        Resolution tags (pixels per inch) on every level (scaled for reduced levels); a
        shorthand for ``metadata=OutputMetadata(dpi=dpi)``.
    metadata : OutputMetadata, optional
        Resolution (print DPI or microscopy pixel size, on every level, scaled), ICC
        profile, GeoTIFF tags, GDAL nodata and band names (on level 0). Without any, the
        resolution tags say "no unit" (1/1, unit NONE: TIFF requires the tags).
    layout : {"chain", "subifd"}
        Reduced levels as the next IFDs of the main chain (default: OpenSlide, GDAL/QGIS,
        tiffslide, pyvips and tifffile all see them) or as SubIFDs of level 0 (OME-TIFF
        style; OpenSlide sees level 0 only).
    """
    import tifffile

    p = Path(os.fspath(path))
    dt = np.dtype(dtype)
    comp = _compression_args(compression, dt)
    check_layout(layout)
    meta = metadata if metadata is not None else OutputMetadata(dpi=dpi or None)
    photometric = "rgb" if channels >= 3 else "minisblack"
    extra = {}
    if channels not in (1, 3):  # e.g. RGB + NIR: extra samples are data, not alpha
        extra["extrasamples"] = (0,) * (channels - (3 if channels >= 3 else 1))
    geotags = geokey_tags(meta)
    with atomic_path(p) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
            for r, (h, w) in enumerate(shapes):
                kw = dict(shape=(h, w, channels) if channels > 1 else (h, w), dtype=dt,
                          tile=(tile, tile), photometric=photometric, metadata=None, **comp,
                          **extra)
                if channels > 1:
                    kw["planarconfig"] = "contig"
                res = meta.resolution(r)
                if res:
                    kw.update(resolution=(res[0], res[0]), resolutionunit=res[1])
                if r == 0:
                    if meta.icc:
                        kw["iccprofile"] = meta.icc
                    if geotags:
                        kw["extratags"] = geotags
                    if layout == "subifd" and len(shapes) > 1:
                        kw["subifds"] = len(shapes) - 1
                else:
                    kw["subfiletype"] = 1
                tiles = _tiles(bands_per_level[r](), w, tile)
                if channels == 1:
                    tiles = (t[:, :, 0] for t in tiles)
                tw.write(tiles, **kw)
    return p


def write_tiff_vips(path: str | os.PathLike, bands: Iterator[tuple[int, np.ndarray]],
                    shape: tuple[int, int], *, channels: int, dtype: str | np.dtype,
                    tile: int = 256, compression: str = "deflate",
                    dpi: float | None = None, layout: str = "chain",
                    metadata: OutputMetadata | None = None) -> Path:
    """Write a pyramidal tiled BigTIFF with libvips from level 0's row bands.

    Level 0 goes to a raw temporary file first (``.NAME.raw-PID`` beside the output,
    removed afterwards); libvips reads it lazily and builds the pyramid itself, in the main
    IFD chain (``layout="chain"``) or as SubIFDs (``"subifd"``). ``metadata`` carries the
    resolution and ICC profile; libvips cannot write GeoTIFF keys or non-alpha extra bands
    (use the tifffile writer). libvips always writes a resolution: with none known, the
    tags are rewritten afterwards to 1/1 with unit NONE, as the tifffile writer writes them.
    """
    import pyvips

    p = Path(os.fspath(path))
    dt = np.dtype(dtype)
    _compression_args(compression, dt)  # validates
    check_layout(layout)
    meta = metadata if metadata is not None else OutputMetadata(dpi=dpi or None)
    if meta.is_georeferenced or meta.nodata is not None or channels not in (1, 3):
        raise GigapatchError("output.writer=vips cannot write GeoTIFF keys, nodata or more "
                             "than 3 bands; use output.writer=tifffile (the default)")
    if compression == "zstd":
        raise GigapatchError("output.compression=zstd: the libvips bundled with pyvips-binary "
                             "has no ZSTD support; use deflate, or output.writer=tifffile")
    h, w = shape
    raw = p.with_name(f".{p.name}.raw-{os.getpid()}")
    try:
        mm = np.memmap(raw, dtype=dt, mode="w+", shape=(h, w, channels))
        for y0, band in bands:
            mm[y0:y0 + band.shape[1]] = np.moveaxis(band, 0, -1)
        mm.flush()
        del mm
        fmt = "uchar" if dt == np.uint8 else "ushort"
        interp = ("srgb" if dt == np.uint8 else "rgb16") if channels == 3 else \
            ("b-w" if dt == np.uint8 else "grey16")
        im = pyvips.Image.rawload(str(raw), w, h, channels, format=fmt,
                                  interpretation=interp)
        kw = dict(tile=True, tile_width=tile, tile_height=tile, pyramid=True,
                  subifd=layout == "subifd",
                  bigtiff=True, compression=compression if compression != "none" else "none")
        if compression in ("deflate", "zstd", "lzw"):
            kw["predictor"] = "horizontal"
        if compression == "jpeg":
            kw["Q"] = 95
        res = meta.resolution(0)
        if res:
            ppmm = res[0] / (25.4 if res[1] == "INCH" else 10.0)  # libvips: pixels per mm
            im = im.copy(xres=ppmm, yres=ppmm)
            kw["resunit"] = "inch" if res[1] == "INCH" else "cm"
        if meta.icc:
            im = im.copy()
            im.set_type(pyvips.GValue.blob_type, "icc-profile-data", meta.icc)
        else:
            kw["keep"] = "none"
        with atomic_path(p) as tmp:
            im.tiffsave(str(tmp), **kw)
            del im
            if not res:
                _no_resolution(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(raw)
    return p


def _no_resolution(path: Path) -> None:
    """Rewrite every level's resolution tags in place to 1/1, unit NONE ("not known")."""
    import tifffile

    with tifffile.TiffFile(path, mode="r+b") as tf:
        for level in tf.series[0].levels:
            for page in level.pages:
                tags = page.tags
                if 296 in tags:
                    tags[296].overwrite(1)
                for code in (282, 283):
                    if code in tags:
                        tags[code].overwrite((1, 1))


def tiff_levels(path: str | os.PathLike) -> list[tuple[int, int]]:
    """(H, W) of every level of a pyramidal TIFF written here (level 0 first)."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        s = tf.series[0]
        return [tuple(lv.shape[:2]) for lv in s.levels]
