"""image_denoise in row bands against a written-out float64 oracle (issue 9 item 5).

The band loop rebuilt its window weights only when the band's patch count differed from
``P * P`` (it compared the wrong axis), so a last band of exactly ``P * P`` patches folded
the previous band's weights and crashed (``gigapatch generate balloons.png --size 239x235
--config quality --set sampler.steps=1``: 225 columns of 15x15 patches).
Mutant killed: the band's window weights compared on the wrong axis / reused across bands.
"""

from __future__ import annotations

import numpy as np
import torch

import gigapatch
from gigapatch.api import load_reference
from gigapatch.config import load_config
from gigapatch.diffusion.denoiser import fold_window, image_denoise, posterior_mean_exact
from gigapatch.diffusion.patch_index import PatchIndex

from ..helpers import DATA


def _oracle(x: torch.Tensor, keys: torch.Tensor, a: float, s: float, p: int, rho: float) \
        -> torch.Tensor:
    """Every patch's posterior mean (float64 softmax, one patch at a time) folded back with
    the Gaussian window, pixel by pixel: no unfold, no fold, no bands."""
    c, h, w = x.shape
    x = x.double()
    keys = keys.double()
    u = torch.linspace(-1.0, 1.0, p, dtype=torch.float64)
    g = torch.exp(-(u * u) / (2 * rho * rho))
    win = torch.outer(g, g)
    num = torch.zeros((c, h, w), dtype=torch.float64)
    den = torch.zeros((h, w), dtype=torch.float64)
    for i in range(h - p + 1):
        for j in range(w - p + 1):
            q = x[:, i:i + p, j:j + p].reshape(-1)
            logits = -((q[None, :] - a * keys) ** 2).sum(1) / (2 * s * s)
            wts = torch.softmax(logits, 0)
            mean = (wts[:, None] * keys).sum(0).reshape(c, p, p)
            num[:, i:i + p, j:j + p] += mean * win
            den[i:i + p, j:j + p] += win
    return (num / den).float()


def test_last_band_of_exactly_p_squared_patches_matches_the_oracle():
    p, c = 3, 1
    gen = torch.Generator().manual_seed(3)
    # 9 patch columns (= P * P) and 5 patch rows; the budget gives bands of 2, 2, 1 rows,
    # so the last band has exactly P * P patches
    x = torch.randn((c, 7, 11), generator=gen)
    ref = torch.rand((c, 6, 6), generator=gen) * 2 - 1
    index = PatchIndex.from_image(ref, p)
    a, s, rho = 0.8, 0.6, 0.4
    per_row = (11 - p + 1) * c * p * p * 16
    budget_mb = 2 * per_row * 2 / 2**20

    def patches(q: torch.Tensor) -> torch.Tensor:
        return posterior_mean_exact(q, index, a, s)

    out = image_denoise(x, patches, p, rho, memory_budget_mb=budget_mb)
    whole = image_denoise(x, patches, p, rho)
    expected = _oracle(x, index.patches, a, s, p, rho)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole, expected, atol=1e-5, rtol=1e-5)


def test_issue_case_quality_preset_one_step_matches_the_written_out_fold():
    """The reported command, through the API: exact backend, one step (s = 1: every
    patch's posterior mean is the patch-set mean), a 239-wide output whose finest level's
    last row band holds 225 = 15 * 15 patches. Away from the borders every pixel is covered
    by all P * P offsets of that mean patch, so it equals the window-weighted average of the
    reference's mean patch: a value written out here from the reference alone."""
    cfg = load_config("quality", ["sampler.steps=1"])
    ref = load_reference(DATA / "balloons.png")
    out = gigapatch.generate(DATA / "balloons.png", size=(239, 235), config=cfg, seed=0,
                             device="cpu")
    assert out.shape == (235, 239, 3)
    p = 15
    r = ref.astype(np.float64) * 2 - 1
    hh, ww = r.shape[0] - p + 1, r.shape[1] - p + 1
    mean_patch = np.stack([[r[u:u + hh, v:v + ww].mean((0, 1)) for v in range(p)]
                           for u in range(p)])  # (P, P, C)
    win = fold_window(p, 0.2).double().numpy()
    value = (mean_patch * win[:, :, None]).sum((0, 1)) / win.sum()
    expected = (np.clip(value, -1, 1) + 1) / 2
    core = out[p - 1:-(p - 1), p - 1:-(p - 1)]
    np.testing.assert_allclose(core, np.broadcast_to(expected, core.shape), atol=2e-5)
