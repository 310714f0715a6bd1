"""Noise keyed by global coordinates: windows are crops of the whole, CUDA equals CPU."""

from __future__ import annotations

import pytest
import torch

from gigapatch.diffusion.noise import gaussian_noise


def test_noise_is_keyed_by_global_coordinates():
    full = gaussian_noise(7, 2, 3, (0, 0, 40, 50), 3)
    win = gaussian_noise(7, 2, 3, (13, 21, 30, 44), 3)
    torch.testing.assert_close(win, full[:, 13:30, 21:44], rtol=0, atol=0)
    assert not torch.equal(full, gaussian_noise(8, 2, 3, (0, 0, 40, 50), 3))
    assert not torch.equal(full, gaussian_noise(7, 2, 4, (0, 0, 40, 50), 3))
    assert not torch.equal(full[0], full[1])
    big = gaussian_noise(0, 0, 0, (0, 0, 256, 256), 1).double()
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1) < 0.02
    # neighbours are uncorrelated
    assert abs((big[:, 1:, :] * big[:, :-1, :]).mean()) < 0.02


@pytest.mark.gpu
def test_noise_on_cuda_equals_cpu():
    cpu = gaussian_noise(3, 1, 2, (5, 7, 69, 90), 3)
    gpu = gaussian_noise(3, 1, 2, (5, 7, 69, 90), 3, device="cuda").cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-6, rtol=1e-6)
