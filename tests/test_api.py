"""gigapatch.generate end to end on tiny images: determinism, sizes, quality against
blur and noise, the exact backend's index budget, CUDA against CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gigapatch
from gigapatch.config import load_config
from gigapatch.errors import GigapatchError

from .helpers import DATA, TINY


def test_same_seed_same_image_different_seed_different_image(tiny_config):
    ref = np.random.default_rng(0).random((20, 24, 3)).astype(np.float32)
    cfg = tiny_config
    a = gigapatch.generate(ref, seed=1, config=cfg, device="cpu")
    b = gigapatch.generate(ref, seed=1, config=cfg, device="cpu")
    c = gigapatch.generate(ref, seed=2, config=cfg, device="cpu")
    assert a.shape == (20, 24, 3) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01


def test_other_sizes_and_aspect_ratios(tiny_config):
    ref = np.random.default_rng(1).random((20, 24)).astype(np.float32)
    cfg = tiny_config
    assert gigapatch.generate(ref, size=(40, 15), config=cfg).shape == (15, 40, 1)
    assert gigapatch.generate(ref, scale=(0.75, 1.5), config=cfg).shape == (30, 18, 1)


def test_sample_of_a_real_reference_beats_blur_and_noise():
    from gigapatch.metrics import patch_fd, patch_swd
    from gigapatch.storage.imageio import read_image

    ref = read_image(DATA / "wild_bush_crop.png")[0]  # 72x96 foliage texture
    cfg = load_config(overrides=["sampler.patch_size=7", "sampler.steps=5"])
    sample = gigapatch.generate(ref, seed=0, config=cfg)
    t = torch.from_numpy(ref).permute(2, 0, 1)[None]
    for _ in range(2):  # a mild blur: a 3x3 box twice
        t = torch.nn.functional.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)
    blurred = t[0].permute(1, 2, 0).numpy()
    noise = np.random.default_rng(0).random(ref.shape).astype(np.float32)
    kw = dict(min_size=16, n_directions=64)
    swd = {k: patch_swd(ref, v, **kw) for k, v in
           (("sample", sample), ("blurred", blurred), ("noise", noise))}
    # finest scale: the sample keeps the texture's fine statistics, the blur does not
    assert swd["sample"].levels[0] < swd["blurred"].levels[0]
    assert swd["sample"].mean < 0.25 * swd["noise"].mean
    fd = {k: patch_fd(ref, v).mean for k, v in
          (("sample", sample), ("blurred", blurred), ("noise", noise))}
    assert fd["sample"] < 0.5 * fd["blurred"] and fd["sample"] < 0.05 * fd["noise"]
    # and it is a new image, not a copy of the reference
    assert np.abs(sample - ref).mean() > 0.05


@pytest.mark.gpu
def test_generate_on_cuda_matches_cpu():
    ref = np.random.default_rng(3).random((24, 28, 3)).astype(np.float32)
    cfg = load_config(overrides=TINY + ["denoiser.backend=exact", "sampler.eta=1"])
    a = gigapatch.generate(ref, seed=4, config=cfg, device="cpu")
    b = gigapatch.generate(ref, seed=4, config=cfg, device="cuda")
    assert np.abs(a - b).max() < 1e-3


def test_exact_refuses_oversized_index_and_fast_runs():
    from gigapatch.api import generate
    from gigapatch.config import load_config

    ref = (np.random.default_rng(0).random((100, 110, 3)) * 255).astype(np.uint8)
    small = ["sampler.patch_size=15", "denoiser.index_budget_mb=16", "sampler.steps=3"]
    with pytest.raises(GigapatchError, match="denoiser.backend=fast"):
        generate(ref, size=(32, 32), config=load_config(None, small + ["denoiser.backend=exact"]),
                 device="cpu")
    out = generate(ref, size=(40, 36), config=load_config(None, small + [
        "denoiser.backend=fast"]), device="cpu")
    assert out.shape == (36, 40, 3) and np.isfinite(out).all()
