"""The output's metadata from the reference file and the ``output`` config keys."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Config
from ..storage.metadata import (OutputMetadata, output_metadata, parse_bounds, parse_pair,
                                parse_pixel_size, read_metadata)

__all__ = ["resolve_output_metadata"]


def resolve_output_metadata(reference, config: Config, out_hw: tuple[int, int],
                            channels: int) -> OutputMetadata:
    """Resolution, ICC profile, georeferencing and band names for an output of ``out_hw``.

    Parameters
    ----------
    reference : path, array or OutputMetadata
        The reference file (its metadata is read and carried when
        ``output.keep_metadata``), its already-read :class:`OutputMetadata`, or an array
        (nothing to carry).
    config : Config
        ``output.dpi``, ``pixel_size``, ``crs``, ``origin``, ``bounds``, ``nodata`` override.
    out_hw : (H, W)
    channels : int
        Band names are kept only when the output has the reference's band count.
    """
    oc = config.output
    ref = None
    if oc.keep_metadata:
        if isinstance(reference, OutputMetadata):
            ref = reference
        elif isinstance(reference, (str, os.PathLike, Path)):
            ref = read_metadata(reference)
    return output_metadata(
        ref, out_hw=out_hw, channels=channels, dpi=oc.dpi,
        pixel_size_um=parse_pixel_size(oc.pixel_size) if oc.pixel_size is not None else None,
        crs=oc.crs, origin=parse_pair(oc.origin, "origin") if oc.origin else None,
        bounds=parse_bounds(oc.bounds) if oc.bounds else None, nodata=oc.nodata)
