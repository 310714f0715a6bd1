"""Shared fixtures and automatic GPU skipping.

Tests marked ``@pytest.mark.gpu`` are skipped when ``torch.cuda.is_available()`` is false
(no per-test skipif needed). Plain helpers (``rand``, ``texture``, ``DATA``) are in
helpers.py; per-area fixtures are in each folder's conftest.py (pipeline/ overrides
``ref`` with its own tiny reference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from .helpers import DATA, TINY


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is false)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not item.keywords: a parametrize id "gpu" is a keyword too
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data: the committed reference images."""
    return DATA


@pytest.fixture(scope="session")
def balloons() -> np.ndarray:
    """tests/data/balloons.png as read by gigapatch: (H, W, 3) float32 in [0, 1].

    Read-only: slice and ``.copy()`` before changing it.
    """
    from gigapatch.storage import read_image

    a = read_image(DATA / "balloons.png")[0]
    a.flags.writeable = False
    return a


@pytest.fixture(scope="session")
def ref_u8(balloons: np.ndarray) -> np.ndarray:
    """A 24x20 uint8 RGB crop of balloons (rows 40-60, cols 60-84): the input tests' image."""
    return np.rint(balloons[40:60, 60:84] * 255).astype(np.uint8)


@pytest.fixture
def tiny_config():
    """The TINY sampler settings as a Config."""
    from gigapatch.config import load_config

    return load_config(overrides=TINY)


# ---- the metrics and eval-CLI tests' images: a real texture, crops of it, noise


@pytest.fixture(scope="package")
def texture(balloons: np.ndarray) -> np.ndarray:
    """A real image: tests/data/balloons.png, (186, 248, 3) float32 in [0, 1]."""
    assert min(balloons.shape[:2]) >= 150  # the crops below need 150 px
    return balloons


@pytest.fixture(scope="package")
def ref(texture: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(texture[:96, :96])


@pytest.fixture(scope="package")
def shifted(texture: np.ndarray) -> np.ndarray:
    """A crop of the same image, shifted: a 'sample' with the reference's patch statistics."""
    return np.ascontiguousarray(texture[24:120, 30:126])


@pytest.fixture(scope="package")
def noise(ref: np.ndarray) -> np.ndarray:
    return np.random.default_rng(1).random(ref.shape).astype(np.float32)
