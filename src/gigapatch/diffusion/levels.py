"""How many pyramid levels, the reference and output size at each, and the level record.

The reference pyramid is repeated 2x downsampling until the coarsest short side is about
``coarsest_ratio * P``; the output has the same number of levels, its level k being the
target size divided by 2**k (rounded up). Levels are dropped (coarsest first) while any
level of the output would be smaller than one patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .pyramid import level_shapes

__all__ = ["Level", "LEVEL_MODES", "auto_level_count", "level_sizes", "patch_count"]

#: how a level is sampled: one window over the whole level, a grid of tiles with a halo,
#: or (retargeting's coarsest level) the resized reference
LEVEL_MODES = ("global", "tiled", "resize")


@dataclass(frozen=True)
class Level:
    """One pyramid level of a run, as planned (``gigapatch.pipeline.plan.plan_levels``).

    The one level record: ``generate``, the tiled pipeline and ``gigapatch info`` all read
    these.

    Attributes
    ----------
    level : int
        0 = coarsest.
    ref_hw, out_hw : (int, int)
        Reference and output (height, width) at this level.
    patches : int
        Reference patches (stride 1) of the level: the exact denoiser's index size.
    backend : {"exact", "fused", "fast"}
        The level's denoiser backend (``auto`` already resolved).
    mode : {"global", "tiled", "resize"}
        See :data:`LEVEL_MODES`.
    halo : int
        Pixels per side a tile window adds to its core (0 unless ``mode == "tiled"``).
    """

    level: int
    ref_hw: tuple[int, int]
    out_hw: tuple[int, int]
    patches: int
    backend: str
    mode: str
    halo: int = 0

    def __post_init__(self) -> None:
        if self.mode not in LEVEL_MODES:
            raise ValueError(f"level mode {self.mode!r} is not one of {LEVEL_MODES}")


def patch_count(hw: tuple[int, int], patch_size: int) -> int:
    """Stride-1 P x P patch positions of an (height, width) image (0 if it is smaller)."""
    return max(0, hw[0] - patch_size + 1) * max(0, hw[1] - patch_size + 1)


def auto_level_count(ref_hw: tuple[int, int], patch_size: int, coarsest_ratio: float = 1.6) \
        -> int:
    """Levels so the reference's coarsest short side is closest (in log scale) to ratio * P.

    Parameters
    ----------
    ref_hw : (int, int)
        Reference (height, width); its short side must be >= P.
    patch_size : int
    coarsest_ratio : float

    Returns
    -------
    int
        >= 1; the coarsest level always holds at least one patch.
    """
    short = min(ref_hw)
    target = coarsest_ratio * patch_size
    best, best_err = 1, math.inf
    k = 0
    while math.ceil(short / 2**k) >= patch_size:
        err = abs(math.log(math.ceil(short / 2**k) / target))
        if err < best_err:
            best, best_err = k + 1, err
        k += 1
    return best


def level_sizes(ref_hw: tuple[int, int], out_hw: tuple[int, int], patch_size: int,
                levels: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Reference and output sizes per level, coarsest first.

    Parameters
    ----------
    ref_hw, out_hw : (int, int)
        Finest (height, width) of the reference and of the output; both >= P per side.
    patch_size : int
    levels : int
        Requested level count; reduced while a reference or output level would be
        smaller than P.

    Returns
    -------
    list of ((int, int), (int, int))
        ``(ref_hw, out_hw)`` of each level, coarsest first.
    """
    while levels > 1 and (min(min(s) for s in level_shapes(*ref_hw, levels)) < patch_size
                          or min(min(s) for s in level_shapes(*out_hw, levels)) < patch_size):
        levels -= 1
    refs = level_shapes(*ref_hw, levels)
    outs = level_shapes(*out_hw, levels)
    return list(zip(refs, outs))
