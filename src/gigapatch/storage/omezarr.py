"""OME-Zarr 0.5 multiscales: metadata, and writing a run's output pyramid as ``.ome.zarr``.

OME-Zarr 0.5 is Zarr v3 with the metadata under ``attributes.ome``; images are stored
channel-first ``(c, y, x)`` and every array's ``dimension_names`` match the axes. The run
store's ``output`` group already is such a multiscale image (see ``runstore``), so writing
an ``.ome.zarr`` is a chunk-by-chunk file copy into a temporary folder, renamed when
complete. Nothing holds more than one chunk file in memory. Layout:
docs/file-formats.md#ome-zarr.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from .atomic import atomic_path

__all__ = ["ome_multiscales_attrs", "write_ome_zarr", "OME_VERSION"]

OME_VERSION = "0.5"


def ome_multiscales_attrs(level_shapes: Sequence[tuple[int, int]], *, name: str = "image",
                          channel_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``attributes`` of an OME-Zarr 0.5 image group with ``len(level_shapes)`` levels.

    Level ``r`` is at path ``"r"`` with scale ``(1, 2**r, 2**r)`` on axes (c, y, x) (the
    levels are 2x box reductions of level 0).
    """
    datasets = [{"path": str(r),
                 "coordinateTransformations": [
                     {"type": "scale", "scale": [1.0, float(2 ** r), float(2 ** r)]}]}
                for r in range(len(level_shapes))]
    ms: dict[str, Any] = {
        "name": name,
        "axes": [{"name": "c", "type": "channel"},
                 {"name": "y", "type": "space"},
                 {"name": "x", "type": "space"}],
        "datasets": datasets,
        "type": "mean",
    }
    ome: dict[str, Any] = {"version": OME_VERSION, "multiscales": [ms]}
    return {"ome": ome}


def write_ome_zarr(src_group: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy an OME-Zarr image group (the run store's ``output``) to ``path`` atomically.

    The copy goes to ``.NAME.tmp-PID`` beside ``path`` and is renamed over it when complete;
    an existing ``path`` is replaced only then (:func:`~gigapatch.storage.atomic.atomic_path`).
    """
    src, dst = Path(src_group), Path(path)
    with atomic_path(dst) as tmp:
        shutil.copytree(src, tmp)
    return dst
