"""The fold (patch estimates -> image) in its two limits and with the identity map."""

from __future__ import annotations

import math

import torch

from gigapatch.diffusion.denoiser import fold_window, image_denoise
from gigapatch.diffusion.patch_index import extract_patches

from ..helpers import rand


def test_fold_with_vanishing_rho_is_centre_pixel_reconstruction():
    p, c = 5, 2
    x = rand(c, 14, 13, seed=10)

    def nonlinear(q):  # any patch map: each output pixel must come from its own centre
        return torch.tanh(3 * q) + q.mean(1, keepdim=True)

    out = image_denoise(x, nonlinear, p, 0.01)
    patches = extract_patches(x, p)  # rows over top-left corners
    den = nonlinear(patches).reshape(14 - p + 1, 13 - p + 1, c, p, p)
    centre = den[:, :, :, p // 2, p // 2].permute(2, 0, 1)  # patch centred at (y, x)
    r = p // 2
    torch.testing.assert_close(out[:, r:14 - r, r:13 - r], centre, atol=1e-5, rtol=1e-5)


def test_fold_with_infinite_rho_is_plain_average():
    p = 3
    x = rand(1, 6, 7, seed=11)
    out = image_denoise(x, lambda q: q * 0 + torch.arange(q.shape[0])[:, None].float(), p,
                        math.inf)
    # plain average of the indices of the patches covering each pixel
    want = torch.zeros(6, 7)
    cnt = torch.zeros(6, 7)
    for i in range(6 - p + 1):
        for j in range(7 - p + 1):
            want[i:i + p, j:j + p] += i * (7 - p + 1) + j
            cnt[i:i + p, j:j + p] += 1
    torch.testing.assert_close(out[0], want / cnt)
    assert fold_window(p, math.inf).eq(1).all()


def test_identity_denoiser_folds_back_to_the_image():
    x = rand(3, 20, 17, seed=12)
    torch.testing.assert_close(image_denoise(x, lambda q: q, 5, 0.2), x, atol=1e-5, rtol=1e-5)
    # row bands (small budget) give the same result
    torch.testing.assert_close(image_denoise(x, lambda q: q * q, 5, 0.2, memory_budget_mb=0.01),
                               image_denoise(x, lambda q: q * q, 5, 0.2), atol=1e-6, rtol=1e-5)
