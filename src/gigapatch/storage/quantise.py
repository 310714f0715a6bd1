"""The one quantiser: float samples -> the 8- or 16-bit integers every output file stores.

Both paths to an output file go through here, so a whole-image run and a tiled run of the
same seed store the same integers (docs/file-formats.md#quantisation):

- :func:`quantise` takes values in [0, 1] (``generate``'s output, ``write_image``'s input);
- :func:`quantise_model` takes the sampler's model space [-1, 1] (the tiled pipeline's
  tiles) and maps it to [0, 1] first, exactly as ``generate`` does.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quantise", "quantise_model", "max_value"]


def max_value(bit_depth: int) -> int:
    """The largest stored integer: 255 for 8 bits, 65535 for 16 bits."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit depth {bit_depth} is not supported; use 8 or 16")
    return 255 if bit_depth == 8 else 65535


def quantise(unit: np.ndarray, bit_depth: int) -> np.ndarray:
    """Values in [0, 1] -> uint8 or uint16: ``rint(clip(x, 0, 1) * top)``, float32 arithmetic.

    Parameters
    ----------
    unit : np.ndarray
        Any shape, any real dtype; computed in float32; values outside [0, 1] are clipped.
    bit_depth : {8, 16}
        ``top`` = 255 (uint8) or 65535 (uint16).

    Returns
    -------
    np.ndarray
        Same shape, C-contiguous, uint8 or uint16. Ties round half to even (``np.rint``).
    """
    top = max_value(bit_depth)
    a = np.asarray(unit).astype(np.float32, copy=False)
    q = np.rint(np.clip(a, 0.0, 1.0) * np.float32(top))
    return np.ascontiguousarray(q.astype(np.uint8 if bit_depth == 8 else np.uint16))


def quantise_model(model: np.ndarray, bit_depth: int) -> np.ndarray:
    """Model space [-1, 1] -> uint8/uint16: :func:`quantise` of ``(clip(x, -1, 1) + 1) / 2``."""
    unit = (np.clip(np.asarray(model), -1.0, 1.0) + 1.0) / 2.0
    return quantise(unit, bit_depth)
