"""The DDIM step and sampler fed a perfect denoiser."""

from __future__ import annotations

import pytest
import torch

from gigapatch.diffusion.noise import gaussian_noise
from gigapatch.diffusion.sampling import ddim_step, sample_ddim
from gigapatch.diffusion.schedules import flow_linear

from ..helpers import rand


def test_ddim_step_keeps_the_perfect_trajectory():
    y, e = rand(2, 5, 5, seed=13), torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(1))
    s, s_next = 0.8, 0.55
    x_t = (1 - s) * y + s * e
    torch.testing.assert_close(ddim_step(x_t, y, y, s, s_next, 0.0, None),
                               (1 - s_next) * y + s_next * e)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_sampler_fed_the_perfect_denoiser_lands_on_the_target(eta):
    target = rand(3, 9, 8, seed=14)
    seen = []

    def perfect(x, s):
        seen.append(s)
        return target

    x0 = gaussian_noise(0, 0, -1, (0, 0, 9, 8), 3)
    out = sample_ddim(perfect, x0, flow_linear(7), eta=eta,
                      noise=lambda i: gaussian_noise(0, 0, i, (0, 0, 9, 8), 3))
    torch.testing.assert_close(out, target)
    assert seen[0] == 1.0 and seen[-1] == pytest.approx(1e-4) and len(seen) == 7
