"""Samplers: pure functions over a ``denoise(x, s) -> x_hat`` callable.

In the style of k-diffusion's sampling.py, a sampler knows nothing of patches, tiles or
files: it gets the initial noise, the schedule, a denoiser, and optional callables for the
per-step noise and the coarse-to-fine blend, and returns the final estimate.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .pyramid import blur2
from .schedules import signal_scale

__all__ = ["ddim_step", "sample_ddim", "laplacian_blend", "Denoise", "Blend", "StepNoise"]

#: (x_t (C, H, W), s) -> x_hat (C, H, W)
Denoise = Callable[[torch.Tensor, float], torch.Tensor]
#: (x_hat (C, H, W), step index) -> x_tilde (C, H, W)
Blend = Callable[[torch.Tensor, int], torch.Tensor]
#: step index -> z (C, H, W), standard normal
StepNoise = Callable[[int], torch.Tensor]


def ddim_step(x_t: torch.Tensor, x_hat: torch.Tensor, x_tilde: torch.Tensor, s_t: float,
              s_next: float, eta: float, z: torch.Tensor | None) -> torch.Tensor:
    """One DDIM step of the flow-linear schedule (docs/method.md#schedule-and-ddim-step).

    Parameters
    ----------
    x_t : Tensor, shape (C, H, W)
        Current noisy image at noise level ``s_t``.
    x_hat : Tensor, shape (C, H, W)
        Denoiser output on ``x_t``; it defines the noise estimate e_hat.
    x_tilde : Tensor, shape (C, H, W)
        The clean estimate to move towards (``x_hat`` or its coarse-to-fine blend).
    s_t, s_next : float
        Noise levels now and after the step.
    eta : float
        Stochasticity in [0, 1].
    z : Tensor, shape (C, H, W), optional
        Fresh standard normal noise; needed when ``eta > 0``.

    Returns
    -------
    Tensor, shape (C, H, W)
        x at noise level ``s_next``.
    """
    a_t, a_next = signal_scale(s_t), signal_scale(s_next)
    e_hat = (x_t - a_t * x_hat) / s_t
    c = eta * s_next
    out = a_next * x_tilde + math.sqrt(max(s_next * s_next - c * c, 0.0)) * e_hat
    if c > 0:
        if z is None:
            raise ValueError("eta > 0 needs step noise")
        out = out + c * z
    return out


def sample_ddim(denoise: Denoise, x_init: torch.Tensor, sigmas: torch.Tensor, *,
                eta: float = 0.0, noise: StepNoise | None = None, blend: Blend | None = None,
                callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Run the DDIM sampler from pure noise to a clean estimate.

    Parameters
    ----------
    denoise : callable
        ``denoise(x, s)`` -> posterior-mean image, shape of ``x``.
    x_init : Tensor, shape (C, H, W)
        Initial state at ``sigmas[0]`` (standard normal noise when sigmas[0] = 1).
    sigmas : Tensor, shape (T,)
        Noise levels of the T denoiser calls, decreasing (see ``schedules.flow_linear``).
    eta : float
        Stochasticity in [0, 1]; 0 is deterministic.
    noise : callable, optional
        ``noise(i)`` -> standard normal tensor for step ``i`` (only called when eta > 0).
    blend : callable, optional
        ``blend(x_hat, i)`` -> x_tilde, applied after every denoiser call but the last.
    callback : callable, optional
        Called with the step index after each denoiser call (progress reporting).

    Returns
    -------
    Tensor, shape (C, H, W)
        The denoiser's output at the last step.
    """
    x = x_init
    steps = sigmas.shape[0]
    for i in range(steps):
        s = float(sigmas[i])
        x_hat = denoise(x, s)
        if callback is not None:
            callback(i)
        if i == steps - 1:
            return x_hat
        s_next = float(sigmas[i + 1])
        x_tilde = blend(x_hat, i) if blend is not None else x_hat
        z = noise(i) if (eta > 0 and noise is not None) else None
        x = ddim_step(x, x_hat, x_tilde, s, s_next, eta, z)
    raise AssertionError("unreachable")


def laplacian_blend(coarse_up: torch.Tensor,
                    blur: Callable[[torch.Tensor], torch.Tensor] = blur2) -> Blend:
    """The coarse-to-fine blend: keep x_hat's high frequencies, take the coarse lows.

    ``x_tilde = x_hat - blur(x_hat) + coarse_up`` (docs/method.md#coarse-to-fine).

    Parameters
    ----------
    coarse_up : Tensor, shape (C, H, W)
        The finished coarser level, upsampled by 2 to this level's size.
    blur : callable
        The low-pass: ``pyramid.blur2``, or on a torus ``torus.periodic_blur2``.

    Returns
    -------
    callable
        ``blend(x_hat, i) -> x_tilde``.
    """
    def blend(x_hat: torch.Tensor, i: int) -> torch.Tensor:
        return x_hat - blur(x_hat) + coarse_up

    return blend
