"""One level's sampler (generator.sample_level): a one-patch prior, and a window
with the derived halo equal to the whole level."""

from __future__ import annotations

import torch

from gigapatch.config import load_config
from gigapatch.diffusion.backends import make_denoise
from gigapatch.diffusion.generator import (coarse_box_for, level_halo, sample_level,
                                           upsample_to_box)
from gigapatch.diffusion.patch_index import PatchIndex
from gigapatch.diffusion.schedules import flow_linear
from gigapatch.pipeline.plan import denoiser_settings

from ..helpers import rand

#: the default config's denoiser settings (the exact backend reads dtype and memory budget)
SETTINGS = denoiser_settings(load_config())


def test_sampler_on_a_single_patch_set_reproduces_it():
    # the prior is one image's patches and the output has the image's size: with one patch
    # (image == patch) the posterior is that patch at every step
    img = rand(3, 5, 5, seed=15)
    idx = PatchIndex.from_image(img, 5)
    den = make_denoise(idx, patch_size=5, rho=0.2, backend="exact", settings=SETTINGS)
    out = sample_level(den, box=(0, 0, 5, 5), channels=3, seed=1, level=0,
                       sigmas=flow_linear(5), eta=0.0)
    torch.testing.assert_close(out, img)


def _window_sample(index, p, t, whole_hw, box, seed, coarse=None):
    sig = flow_linear(t)
    den = make_denoise(index, patch_size=p, rho=0.2, backend="exact", settings=SETTINGS)
    up = None
    if coarse is not None:
        cb = coarse_box_for(box, coarse.shape[1:])
        up = upsample_to_box(coarse[:, cb[0]:cb[2], cb[1]:cb[3]], cb[:2], box)
    return sample_level(den, box=box, channels=3, seed=seed, level=1, sigmas=sig, eta=0.5,
                        coarse_up=up)


def test_window_with_derived_halo_reproduces_the_whole_level():
    p, t = 5, 3
    ref = rand(3, 24, 24, seed=17)
    index = PatchIndex.from_image(ref, p)
    coarse = rand(3, 22, 25, seed=18) * 0.5
    h, w = 44, 50
    whole = _window_sample(index, p, t, (h, w), (0, 0, h, w), 3, coarse)
    halo = level_halo(p, t, blended=True)
    core = (16, 18, 30, 34)  # even origin
    box = (max(0, core[0] - halo), max(0, core[1] - halo),
           min(h, core[2] + halo), min(w, core[3] + halo))
    win = _window_sample(index, p, t, (h, w), box, 3, coarse)
    got = win[:, core[0] - box[0]:core[2] - box[0], core[1] - box[1]:core[3] - box[1]]
    want = whole[:, core[0]:core[2], core[1]:core[3]]
    assert (got - want).abs().max() <= 1e-4
    # and a halo that is too small does not: the halo is not over-generous by accident
    small = 4
    box2 = (core[0] - small, core[1] - small, core[2] + small, core[3] + small)
    win2 = _window_sample(index, p, t, (h, w), box2, 3, coarse)
    got2 = win2[:, small:small + 14, small:small + 16]
    assert (got2 - want).abs().max() > 1e-3
