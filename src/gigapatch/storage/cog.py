"""Cloud-Optimized GeoTIFF output through GDAL's COG driver (optional extra ``gis``).

A COG needs a strict byte layout (IFDs first, overviews before full resolution, tiles in
order, ghost header); GDAL's COG driver is the reference implementation, so we do not write
that layout ourselves. :func:`write_cog` writes the pyramid as a plain tiled TIFF with the
levels in the main IFD chain (our tifffile writer, beside the output), then lets GDAL copy
it to a COG with ``OVERVIEWS=FORCE_USE_EXISTING``: GDAL reuses our box-reduced levels as
the overviews instead of computing them again. Georeferencing, nodata, band names and the
ICC profile come from a :class:`~gigapatch.storage.metadata.OutputMetadata`.

GDAL comes with the ``rasterio`` wheel: ``pip install "gigapatch[gis]"``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import GigapatchError
from .atomic import atomic_path
from .tiff import check_layout, write_tiff_tifffile

__all__ = ["write_cog", "have_gdal", "need_rasterio", "GDAL_COMPRESSION"]

#: our output.compression names -> GDAL COMPRESS values
GDAL_COMPRESSION = {"none": "NONE", "deflate": "DEFLATE", "zstd": "ZSTD", "lzw": "LZW",
                    "jpeg": "JPEG"}


def have_gdal() -> bool:
    """Whether rasterio (with its bundled GDAL) can be imported."""
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def need_rasterio():
    try:
        import rasterio
        import rasterio.shutil  # noqa: F401
    except ImportError:
        raise GigapatchError('--format cog needs GDAL through rasterio; install it with '
                             'pip install "gigapatch[gis]", or write --format tiff') from None
    return rasterio


def write_cog(path: str | os.PathLike, bands_per_level: Sequence, shapes:
              Sequence[tuple[int, int]], *, channels: int, dtype: str | np.dtype,
              tile: int = 256, compression: str = "deflate", metadata=None) -> Path:
    """Write a Cloud-Optimized GeoTIFF from per-level band iterators.

    Parameters
    ----------
    path : path
        Output ``.tif``.
    bands_per_level, shapes, channels, dtype, tile, compression
        As :func:`gigapatch.storage.tiff.write_tiff_tifffile`; any channel count.
    metadata : OutputMetadata, optional
        CRS, geotransform, nodata, band names, ICC profile, resolution.

    Needs a free-disk copy of the compressed pyramid beside the output while it runs
    (``.NAME.src-PID.tif``, removed afterwards).
    """
    rasterio = need_rasterio()
    from .metadata import apply_to_gdal

    p = Path(os.fspath(path))
    check_layout("chain")
    src = p.with_name(f".{p.name}.src-{os.getpid()}.tif")
    try:
        write_tiff_tifffile(src, bands_per_level, shapes, channels=channels, dtype=dtype,
                            tile=tile, compression=compression, layout="chain",
                            metadata=metadata)
        if metadata is not None:
            with rasterio.Env(GTIFF_SRS_SOURCE="EPSG"):
                with rasterio.open(src, "r+") as ds:
                    apply_to_gdal(ds, metadata)
        opts = dict(COMPRESS=GDAL_COMPRESSION[compression], BLOCKSIZE=str(tile),
                    OVERVIEWS="FORCE_USE_EXISTING", BIGTIFF="IF_SAFER", NUM_THREADS="2")
        if compression in ("deflate", "zstd", "lzw"):
            opts["PREDICTOR"] = "YES"
        if compression == "jpeg":
            opts["QUALITY"] = "95"
        with atomic_path(p) as tmp:
            with rasterio.Env(GTIFF_SRS_SOURCE="EPSG"):
                rasterio.shutil.copy(str(src), str(tmp), driver="COG", **opts)
    except rasterio.errors.RasterioError as exc:
        raise GigapatchError(f"cannot write COG {p} ({exc}); check the free disk space and "
                             f"that the folder is writable") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(src)
    return p
