"""All file I/O: images, run stores, pyramids, patch index folders (docs/file-formats.md).

Every file write goes through :func:`atomic_path` (storage/atomic.py) and every float
image is made 8- or 16-bit by :func:`quantise` / :func:`quantise_model` (storage/quantise.py).
Patch index folders: :mod:`gigapatch.storage.patch_index_io` (imported on demand: it needs
torch).

Import rule: storage may use ``gigapatch.tiling``; it never imports diffusion or pipeline.
"""

from .atomic import atomic_path, atomic_write_text
from .imageio import (
    DEFAULT_MAX_INPUT_PIXELS,
    WRITE_SUFFIXES,
    ImageInfo,
    check_writable,
    numbered_path,
    read_image,
    write_image,
)
from .cog import write_cog
from .metadata import OutputMetadata, read_metadata
from .quantise import quantise, quantise_model
from .web import preview_path, write_dzi, write_preview

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "quantise",
    "quantise_model",
    "OutputMetadata",
    "read_metadata",
    "write_cog",
    "write_dzi",
    "write_preview",
    "preview_path",
    "DEFAULT_MAX_INPUT_PIXELS",
    "WRITE_SUFFIXES",
    "ImageInfo",
    "check_writable",
    "numbered_path",
    "read_image",
    "write_image",
]
