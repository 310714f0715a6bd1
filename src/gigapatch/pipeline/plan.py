"""Plan a tiled run: levels, global vs tiled, tile grids and halos derived from the sampler.

The halo of a tiled level is never typed in: it is what the sampler's receptive field
needs, ``gigapatch.diffusion.generator.level_halo(P, T, blended)`` (T denoiser calls of
reach P - 1, plus the blend's blur radius on every step but the last), plus whatever extra
a denoiser backend declares through :func:`backend_extra_halo`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from ..config import Config, config_hash
from ..errors import GigapatchError
from ..tiling import TileGrid, grid_for_level

__all__ = ["LevelTiling", "RunPlan", "make_plan", "sampler_halo", "backend_extra_halo",
           "output_level_shapes"]


def backend_extra_halo(config: Config, backend: str) -> int:
    """Extra halo (pixels) a denoiser backend needs beyond the sampler's receptive field.

    Asked of the diffusion package, never hard-coded here: the fast backend declares it
    through ``gigapatch.diffusion.fast.fast_extra_halo(P, query_stride, steps)`` (candidate
    propagation between neighbouring queries). Exact and fused backends need none.
    """
    if backend != "fast":
        return 0
    try:
        from ..diffusion.fast import fast_extra_halo
    except ImportError:  # a version without the fast backend
        return 0
    sc = config.sampler
    return int(fast_extra_halo(sc.patch_size, config.denoiser.query_stride, sc.steps))


def sampler_halo(config: Config, blended: bool, backend: str = "exact") -> int:
    """Halo (even, pixels per side) one tiled level needs for its core to be exact."""
    from ..diffusion.generator import level_halo

    sc = config.sampler
    halo = level_halo(sc.patch_size, sc.steps, blended) + backend_extra_halo(config, backend)
    return halo + (halo % 2)


def output_level_shapes(out_hw: tuple[int, int], tiff_tile: int) -> list[tuple[int, int]]:
    """The output pyramid: full size, then 2x reductions until one TIFF tile holds a level."""
    shapes = [tuple(out_hw)]
    while max(shapes[-1]) > tiff_tile:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


@dataclass(frozen=True)
class LevelTiling:
    """One level of a tiled run."""

    level: int
    out_hw: tuple[int, int]
    ref_hw: tuple[int, int]
    patches: int
    mode: str            # "global" (one task) | "tiled" | "resize" (retarget's level 0)
    backend: str         # denoiser backend of the level
    halo: int            # the halo the level needs when tiled (0 for global levels)
    grid: TileGrid

    @property
    def tiles(self) -> int:
        return len(self.grid)

    @property
    def overhead(self) -> float:
        """Computed pixels / level pixels (halo cost)."""
        return self.grid.overhead()


@dataclass(frozen=True)
class RunPlan:
    """Everything the graph needs, as plain values."""

    ref_hw: tuple[int, int]
    out_hw: tuple[int, int]
    channels: int
    seed: int
    tile: int
    levels: tuple[LevelTiling, ...]
    output_shapes: tuple[tuple[int, int], ...]
    bit_depth: int
    run_key: str

    @property
    def tiled(self) -> bool:
        return any(lv.mode == "tiled" for lv in self.levels)

    def summary(self) -> str:
        return (f"{self.out_hw[1]}x{self.out_hw[0]}, seed {self.seed}, tile {self.tile}, "
                f"config {self.run_key[:8]}")

    def table(self) -> list[str]:
        """One line per level: size, mode, tiles, halo, overhead."""
        lines = []
        for lv in self.levels:
            h, w = lv.out_hw
            lines.append(f"level {lv.level}: {w}x{h} {lv.mode:6s} {lv.backend:5s} "
                         f"tiles {lv.tiles:5d} "
                         f"halo {lv.halo:4d} computed/output {lv.overhead:.3f}")
        return lines


def _tiling_mode(config: Config, force_tiled: bool | None) -> str:
    if force_tiled:
        return "always"
    return config.tiling.mode


def make_plan(ref_hw: tuple[int, int], out_hw: tuple[int, int], channels: int, config: Config,
              *, seed: int, ref_digest: str, tile: int | None = None,
              force_tiled: bool | None = None, device: str = "cpu") -> RunPlan:
    """Plan the levels of a tiled run.

    A level is sampled globally (one task) when it fits ``tiling.global_max_pixels`` and
    ``tiling.mode`` is not ``always`` (``--tiled``); otherwise it is cut into tiles of
    ``tile`` (default ``tiling.tile``) with the halo :func:`sampler_halo` gives.
    Retarget's coarsest level is the resized reference (one task).

    ``run_key`` hashes what changes the stored data (sampler and denoiser config, seed,
    sizes, reference digest, tile and level layout, output bit depth): a run store made with
    another key is refused.
    """
    from ..api import level_backend, plan_levels

    tile = int(tile or config.tiling.tile)
    if tile < 64 or tile % 64:
        raise GigapatchError(f"tile={tile}: the tile side must be a multiple of 64 (>= 64), "
                             f"e.g. {max(64, round(tile / 64) * 64)}")
    mode = _tiling_mode(config, force_tiled)
    levels = []
    for lp in plan_levels(ref_hw, out_hw, config):
        h, w = lp.out_hw
        blended = lp.level > 0
        backend = level_backend(config, device, ref_hw=lp.ref_hw, out_hw=lp.out_hw,
                                channels=channels)
        halo = sampler_halo(config, blended, backend)
        if lp.level == 0 and config.sampler.mode == "retarget":
            kind, grid = "resize", grid_for_level(h, w, tile=tile, halo=0, whole=True)
        elif mode != "always" and h * w <= config.tiling.global_max_pixels:
            kind, grid = "global", grid_for_level(h, w, tile=tile, halo=0, whole=True)
        else:
            kind, grid = "tiled", grid_for_level(h, w, tile=tile, halo=halo)
        levels.append(LevelTiling(lp.level, lp.out_hw, lp.ref_hw, lp.patches, kind, backend,
                                  halo if kind == "tiled" else 0, grid))
    out_shapes = tuple(output_level_shapes(out_hw, config.output.tiff_tile))
    key_data: dict[str, Any] = {
        "config": config_hash(config), "seed": seed, "ref": ref_digest,
        "out_hw": list(out_hw), "tile": tile, "bit_depth": config.output.bits(),
        "levels": [[lv.mode, lv.backend, list(lv.out_hw)] for lv in levels],
        "output_shapes": [list(s) for s in out_shapes],
    }
    run_key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    return RunPlan(tuple(ref_hw), tuple(out_hw), channels, seed, tile, tuple(levels),
                   out_shapes, config.output.bits(), run_key)
