"""The whole-image run: every level of one output in memory, coarsest first.

The counterpart of the tiled ``run.run_tiled`` for outputs that fit in memory: the plan
(``plan.plan_levels``, every level global), then ``diffusion.generator.sample_levels``.
``gigapatch.generate`` and batch jobs run it on prepared values (a reference array, the
output size, a ``Config``, a torch device).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from ..config import Config
from ..diffusion import generator
from ..diffusion.backends import LevelCache
from ..diffusion.model_space import to_model
from ..diffusion.pyramid import gaussian_pyramid
from ..diffusion.schedules import flow_linear
from ..diffusion.torus import Wrap, periodic_size
from ..errors import GigapatchError
from .plan import check_index_budget, denoiser_settings, log_levels, plan_levels, prior_settings

__all__ = ["sample_levels"]

log = logging.getLogger(__package__)


def sample_levels(ref: np.ndarray, out_hw: tuple[int, int], config: Config, *, seed: int = 0,
                  device: torch.device = torch.device("cpu"), progress: bool = False,
                  backends: Sequence[str] | None = None,
                  cache: LevelCache | None = None) -> list[torch.Tensor]:
    """Sample every pyramid level of one output, coarsest first (what ``generate`` runs).

    Parameters
    ----------
    ref : ndarray, shape (H, W, C)
        The reference: float32 in [0, 1], or its uint8 / uint16 samples
        (``load_reference(native=True)``; ``to_model`` converts them in bands).
    out_hw : (int, int)
        Output (height, width) of the finest level.
    config : Config
    seed : int
    device : torch.device
    progress : bool
    backends : sequence of str, optional
        One backend per level (exact | fused | fast) overriding the config's choice
        (benchmarks and fidelity checks).
    cache : LevelCache, optional
        Built level indexes kept between outputs of this process (batch workers); the
        output is the same with or without.

    Returns
    -------
    list of Tensor, shape (C, h_k, w_k)
        Each level's clean estimate in [-1, 1] (not clamped), coarsest first.
    """
    sc = config.sampler
    settings = denoiser_settings(config)
    levels = plan_levels(ref.shape[:2], out_hw, ref.shape[2], config, device=device,
                         tiled=False, backends=backends, settings=settings)
    check_index_budget(levels, ref.shape[2], config)
    wrap, mirror = Wrap.parse(sc.tileable), Wrap.parse(sc.symmetry)
    if wrap and periodic_size(out_hw, len(levels), wrap) != tuple(out_hw):
        raise GigapatchError(
            f"a tileable output of {out_hw[1]}x{out_hw[0]} cannot wrap at every one of its "
            f"{len(levels)} levels; use a size from api.output_size (sides that wrap must be "
            f"multiples of {2 ** (len(levels) - 1)})")
    log_levels(levels, config)
    log.info("sampling %dx%d on %s, whole image in memory", out_hw[1], out_hw[0], device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(levels) * sc.steps, unit="step", desc="sampling", leave=False)
    current = [-1]

    def step(lv, n: int) -> None:
        if lv.level != current[0]:
            current[0] = lv.level
            bar.set_description(f"level {lv.level + 1}/{len(levels)} "
                                f"({lv.out_hw[1]}x{lv.out_hw[0]})")
        bar.update(n)

    try:
        # the pyramid as a list that sample_levels consumes: no frame here keeps the
        # model-space reference, so each level is freed once its index is built
        pyramid = gaussian_pyramid(to_model(ref, device), len(levels))
        return generator.sample_levels(
            pyramid, levels, patch_size=sc.patch_size, rho=sc.rho,
            sigmas=flow_linear(sc.steps, sc.s_min), eta=sc.eta, settings=settings, seed=seed,
            wrap=wrap, mirror=mirror, progress=step if bar is not None else None,
            cache=cache, prior=prior_settings(config))
    finally:
        if bar is not None:
            bar.close()
