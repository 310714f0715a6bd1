"""Reading and writing images (and, with the tiled pipeline, run stores and pyramids).

Import rule: storage may use ``gigapatch.tiling``; it never imports diffusion or pipeline.
"""

from .imageio import (
    DEFAULT_MAX_INPUT_PIXELS,
    WRITE_SUFFIXES,
    ImageInfo,
    check_writable,
    numbered_path,
    read_image,
    write_image,
)

__all__ = [
    "DEFAULT_MAX_INPUT_PIXELS",
    "WRITE_SUFFIXES",
    "ImageInfo",
    "check_writable",
    "numbered_path",
    "read_image",
    "write_image",
]
