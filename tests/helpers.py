"""Plain helpers shared by the test files (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import torch

DATA = Path(__file__).parent / "data"  # the committed reference images (SOURCES.md)

# the cheapest sampler settings that still run several levels (P=5, 4 steps, 2 levels)
TINY = ["sampler.patch_size=5", "sampler.steps=4", "sampler.levels=2"]


def rand(*shape, seed=0):
    """Uniform values in [-1, 1), shape ``shape``, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 2 - 1


def texture(h: int = 28, w: int = 32, seed: int = 0) -> torch.Tensor:
    """A small structured image in [-1, 1] (stripes + blobs + a flat area + noise)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    base = torch.stack([torch.sin(xx / 2.0), torch.cos(yy / 3.0), torch.sin((xx + yy) / 4.0)])
    img = 0.7 * base + 0.2 * torch.rand((3, h, w), generator=g)
    img[:, :6, :8] = 0.25  # exact duplicates
    return img.clamp(-1, 1)
