"""Images in and out of model space: (H, W, C) in [0, 1] <-> (C, H, W) in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["to_model", "to_unit", "SAMPLE_TOPS", "exact_samples", "samples_to_model"]

#: integer samples ``to_model`` takes as they are stored: value / top is the [0, 1] value
#: (the same division as ``gigapatch.storage.read``'s, so the same float32 bits)
SAMPLE_TOPS = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}

#: bytes of float32 per band of rows converted at a time
_BAND_BYTES = 32 * 2**20


def to_model(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, C) image -> Tensor (C, H, W) float32 in [-1, 1] on ``device``.

    Parameters
    ----------
    image : ndarray, shape (H, W, C)
        float32 in [0, 1], or uint8 / uint16 samples (divided by 255 / 65535 in float32,
        exactly as the reader converts them).

    Returns
    -------
    Tensor, shape (C, H, W), float32
        ``x * 2 - 1`` of the [0, 1] values, bit for bit.

    Notes
    -----
    Converted in bands of rows straight into the one (C, H, W) result, which is then
    scaled in place: the only full-size allocation is the result (an 8-bit reference is
    never held as a float32 (H, W, C) copy too). ``image`` is never written to.
    """
    h, w, c = image.shape
    top = SAMPLE_TOPS.get(image.dtype)
    out = torch.empty((c, h, w), dtype=torch.float32, device=device)
    rows = max(1, _BAND_BYTES // max(1, w * c * 4))
    for r0 in range(0, h, rows):
        band = image[r0:r0 + rows]
        if top is None:
            f = np.asarray(band, dtype=np.float32)
        else:
            f = band.astype(np.float32)
            f /= np.float32(top)
        out[:, r0:r0 + rows] = torch.from_numpy(np.ascontiguousarray(f)).to(device) \
            .permute(2, 0, 1)
    return out.mul_(2).sub_(1)


def to_unit(x: torch.Tensor) -> np.ndarray:
    """Tensor (C, H, W) in model space -> (H, W, C) float32 in [0, 1] (clamped), on the CPU."""
    out = ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(out, dtype=np.float32)


def exact_samples(image: np.ndarray, model: np.ndarray) -> np.ndarray | None:
    """The image as (C, H, W) integer samples whose ``to_model`` is ``model`` bit for bit,
    or None: a uint8 / uint16 image as it is; a float32 one whose values are all k / 255
    as uint8 (what ``gigapatch.api.load_reference`` makes of an 8-bit file); else None.
    A run store keeps these (4x smaller than float32 for 8-bit) instead of ``model``.

    Parameters
    ----------
    image : ndarray, shape (H, W, C)
        The reference as given to ``to_model``.
    model : ndarray, shape (C, H, W), float32
        ``to_model(image)``.
    """
    if image.dtype in SAMPLE_TOPS:
        return np.ascontiguousarray(np.moveaxis(image, -1, 0))
    if image.dtype != np.float32:
        return None
    h, w, c = image.shape
    out = np.empty((c, h, w), dtype=np.uint8)
    rows = max(1, _BAND_BYTES // max(1, w * c * 4))
    for r0 in range(0, h, rows):  # banded: no full-size temporaries
        u = np.rint(image[r0:r0 + rows] * np.float32(255))
        if not (np.all(u >= 0) and np.all(u <= 255)):
            return None
        u8 = u.astype(np.uint8)
        if not np.array_equal(to_model(u8).numpy(), model[:, r0:r0 + rows]):
            return None
        out[:, r0:r0 + rows] = np.moveaxis(u8, -1, 0)
    return out


def samples_to_model(samples: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(C, H, W) stored reference -> Tensor (C, H, W) float32 in [-1, 1]: integer samples
    through ``to_model`` (the same bits as the image they came from), float32 as it is."""
    if samples.dtype == np.float32:
        return torch.from_numpy(np.ascontiguousarray(samples)).to(device)
    return to_model(np.moveaxis(samples, 0, -1), device)
