"""Images in and out of model space: (H, W, C) in [0, 1] <-> (C, H, W) in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["to_model", "to_unit"]


def to_model(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, C) float32 in [0, 1] -> Tensor (C, H, W) in [-1, 1] on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(device) * 2 - 1


def to_unit(x: torch.Tensor) -> np.ndarray:
    """Tensor (C, H, W) in model space -> (H, W, C) float32 in [0, 1] (clamped), on the CPU."""
    out = ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(out, dtype=np.float32)
