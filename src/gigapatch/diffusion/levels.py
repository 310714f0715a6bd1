"""How many pyramid levels, and the reference and output size at each.

The reference pyramid is repeated 2x downsampling until the coarsest short side is about
``coarsest_ratio * P``; the output has the same number of levels, its level k being the
target size divided by 2**k (rounded up). Levels are dropped (coarsest first) while any
level of the output would be smaller than one patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .pyramid import level_shapes

__all__ = ["LevelShape", "auto_level_count", "plan_level_shapes", "patch_count"]


@dataclass(frozen=True)
class LevelShape:
    """One level: its index (0 = coarsest) and the reference and output (height, width)."""

    level: int
    ref_hw: tuple[int, int]
    out_hw: tuple[int, int]


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


def plan_level_shapes(ref_hw: tuple[int, int], out_hw: tuple[int, int], patch_size: int,
                      levels: int) -> list[LevelShape]:
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
    list of LevelShape
    """
    while levels > 1 and (min(min(s) for s in level_shapes(*ref_hw, levels)) < patch_size
                          or min(min(s) for s in level_shapes(*out_hw, levels)) < patch_size):
        levels -= 1
    refs = level_shapes(*ref_hw, levels)
    outs = level_shapes(*out_hw, levels)
    return [LevelShape(i, r, o) for i, (r, o) in enumerate(zip(refs, outs))]
