"""The plan of a run: levels, backend per level, global / tiled / resize, halos, tile grids.

The one place that decides, for ``gigapatch.generate``, the tiled pipeline
(:func:`make_plan`), the CLI and ``gigapatch info``:

* :func:`denoiser_settings`: the config's denoiser section as one
  :class:`~gigapatch.diffusion.settings.DenoiserSettings`, built once per run;
* :func:`plan_levels`: how many levels, their sizes, each level's backend (``auto``
  resolved by ``diffusion.backends.level_backend``) and mode (:func:`is_tiled`), as
  :class:`~gigapatch.diffusion.levels.Level` records;
* :func:`is_tiled`: whether an output (or one level) of a given size is tiled: the one rule
  behind ``tiling.mode`` and ``tiling.global_max_pixels``.

The halo of a tiled level is never typed in: it is what the sampler's receptive field
needs, ``gigapatch.diffusion.generator.level_halo(P, T, blended, extra)`` (T denoiser calls
of reach P - 1, plus the blend's blur radius on every step but the last), with the extra
reach a denoiser backend declares (:func:`backend_extra_halo`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

from ..config import Config, TilingConfig, config_hash
from ..diffusion.backends import level_backend, level_settings
from ..diffusion.fast import fast_extra_halo
from ..diffusion.generator import level_halo
from ..diffusion.levels import Level, auto_level_count, level_sizes, patch_count
from ..diffusion.patch_index import patch_set_bytes
from ..diffusion.priors import PriorSettings
from ..diffusion.settings import CONFIG_FIELDS, DenoiserSettings
from ..diffusion.torus import Wrap, periodic_size
from ..device import device_memory_bytes
from ..errors import GigapatchError
from ..tiling import TileGrid, auto_tile, grid_for_level

__all__ = ["RunPlan", "make_plan", "plan_levels", "output_size", "is_tiled",
           "denoiser_settings", "prior_settings", "priors_dropped",
           "check_index_budget", "log_levels", "sampler_halo", "backend_extra_halo", "output_level_shapes", "MIN_TILE",
           "tile_advice", "disk_estimate", "resolve_tile", "window_bytes_per_pixel",
           "window_memory_bytes"]

log = logging.getLogger(__package__)

#: tile cores are multiples of this (and at least this)
MIN_TILE = 64


def prior_settings(config: Config) -> PriorSettings:
    """The config's ``prior`` section as the plain settings diffusion takes.

    A tileable output (``sampler.tileable`` not ``none``) is sampled without the priors: a
    torus has no frame for the position prior, the resized reference does not wrap (the
    partial-noise start would put a seam back in), and the usage pilot is not sampled on a
    torus. The returned settings then have every strength off and ``t0 = 1``
    (:func:`priors_dropped` says when that happens, for the note users see).
    """
    settings = PriorSettings(**asdict(config.prior))
    if priors_dropped(config):
        settings = replace(settings, position_strength=0.0, t0=1.0, usage_strength=0.0)
    return settings


def priors_dropped(config: Config) -> bool:
    """Whether the config asks for a prior that its tileable output does not take."""
    return config.sampler.tileable != "none" and PriorSettings(**asdict(config.prior)).active


def denoiser_settings(config: Config) -> DenoiserSettings:
    """The config's ``denoiser`` section as the settings object diffusion takes."""
    dn = config.denoiser
    return DenoiserSettings(**{f: getattr(dn, key) for f, key in CONFIG_FIELDS.items()})


def is_tiled(hw: tuple[int, int], tiling: TilingConfig, tiled: bool | None = None) -> bool:
    """Whether an image (an output, or one level of it) of ``hw`` is cut into tiles.

    ``tiled=True`` (``--tiled``) or ``tiling.mode: always`` tile every level; ``never``
    none; ``auto`` those larger than ``tiling.global_max_pixels``. Output levels grow
    towards the finest, so ``is_tiled(out_hw, ...)`` says whether any level is tiled.
    """
    if tiled or tiling.mode == "always":
        return True
    if tiling.mode == "never":
        return False
    return hw[0] * hw[1] > tiling.global_max_pixels


def backend_extra_halo(config: Config, backend: str) -> int:
    """Extra halo (pixels) a denoiser backend needs beyond the sampler's receptive field.

    Asked of the diffusion package, never hard-coded here: the fast backend declares it
    through ``gigapatch.diffusion.fast.fast_extra_halo(P, query_stride, steps)`` (candidate
    propagation between neighbouring queries). Exact and fused backends need none.
    """
    if backend != "fast":
        return 0
    sc = config.sampler
    return int(fast_extra_halo(sc.patch_size, config.denoiser.query_stride, sc.steps))


def sampler_halo(config: Config, blended: bool, backend: str = "exact") -> int:
    """Halo (even, pixels per side) one tiled level needs for its core to be exact."""
    sc = config.sampler
    return level_halo(sc.patch_size, sc.steps, blended,
                      extra=backend_extra_halo(config, backend))


def _check_sizes(ref_hw: tuple[int, int], out_hw: tuple[int, int], p: int) -> None:
    if min(ref_hw) < p:
        raise GigapatchError(
            f"the reference ({ref_hw[1]}x{ref_hw[0]}) is smaller than the patch size {p}; "
            f"use a larger image or --set sampler.patch_size=N with odd N <= {min(ref_hw)}")
    if min(out_hw) < p:
        raise GigapatchError(
            f"the output size {out_hw[1]}x{out_hw[0]} is smaller than the patch size {p}; "
            f"ask for at least {p}x{p} or lower sampler.patch_size")


def check_index_budget(levels: Sequence[Level], channels: int, config: Config) -> None:
    """Refuse, before any work, an exact or fused level whose patches exceed
    ``denoiser.index_budget_mb`` (those backends need every patch in memory)."""
    for lv in levels:
        need = patch_set_bytes(lv.ref_hw[0], lv.ref_hw[1], channels, config.sampler.patch_size)
        if lv.mode != "resize" and lv.backend in ("exact", "fused") \
                and need > config.denoiser.index_budget_mb * 2**20:
            raise GigapatchError(
                f"level {lv.level} of the reference ({lv.ref_hw[1]}x{lv.ref_hw[0]}) has "
                f"{need / 2**30:.1f} GiB of patches, more than denoiser.index_budget_mb="
                f"{config.denoiser.index_budget_mb}; the {lv.backend} backend needs them "
                "all. Use --set denoiser.backend=fast (or auto), which subsamples the index "
                "to the budget, or a smaller reference")


def log_levels(levels: Sequence[Level], config: Config) -> None:
    """Log the plan's automatic choices (``gigapatch -v`` shows them)."""
    log.info("%d pyramid level%s (sampler.levels=%s)", len(levels),
             "s" if len(levels) != 1 else "", config.sampler.levels)
    for lv in levels:
        log.info("level %d: %dx%d from the reference's %dx%d, %s, %s backend "
                 "(denoiser.backend=%s)%s", lv.level, lv.out_hw[1], lv.out_hw[0],
                 lv.ref_hw[1], lv.ref_hw[0], lv.mode, lv.backend, config.denoiser.backend,
                 f", halo {lv.halo}" if lv.mode == "tiled" else "")


def _level_sizes(ref_hw: tuple[int, int], out_hw: tuple[int, int], config: Config) \
        -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """``(ref_hw, out_hw)`` per level, coarsest first; refuses too-small sizes."""
    sc = config.sampler
    _check_sizes(ref_hw, out_hw, sc.patch_size)
    n = sc.levels
    if n == "auto":
        n = auto_level_count(ref_hw, sc.patch_size, sc.coarsest_ratio)
    return level_sizes(ref_hw, out_hw, sc.patch_size, n)


def output_size(ref_hw: tuple[int, int], out_hw: tuple[int, int], config: Config) \
        -> tuple[int, int]:
    """The output size a run uses: ``out_hw``, with the wrapped sides of a tileable run
    rounded up to a multiple of ``2 ** (levels - 1)`` (``diffusion.torus.periodic_size``:
    each level of a torus must be exactly half the next). Refuses too-small sizes."""
    wrap = Wrap.parse(config.sampler.tileable)
    while True:
        hw = periodic_size(out_hw, len(_level_sizes(ref_hw, out_hw, config)), wrap)
        if hw == out_hw:
            return hw
        out_hw = hw


def plan_levels(ref_hw: tuple[int, int], out_hw: tuple[int, int], channels: int,
                config: Config, *, device: Any = "cpu", tiled: bool | None = None,
                backends: Sequence[str] | None = None,
                settings: DenoiserSettings | None = None) -> tuple[Level, ...]:
    """The levels of a run, coarsest first.

    Parameters
    ----------
    ref_hw, out_hw : (int, int)
        Reference and output (height, width).
    channels : int
    config : Config
    device : torch.device or str
        Where the run samples (the ``auto`` backend depends on it).
    tiled : bool, optional
        ``True`` tiles every level (``--tiled``); ``None`` follows ``tiling.mode``.
    backends : sequence of str, optional
        One backend per level overriding the config's choice (benchmarks, fidelity).
    settings : DenoiserSettings, optional
        ``denoiser_settings(config)`` when the caller already built it.

    Raises
    ------
    GigapatchError
        When the reference or the output is smaller than one patch.
    """
    sc = config.sampler
    p = sc.patch_size
    settings = settings or denoiser_settings(config)
    sizes = _level_sizes(ref_hw, out_hw, config)
    levels = []
    for k, (r_hw, o_hw) in enumerate(sizes):
        backend = backends[k] if backends is not None else level_backend(
            settings, device, patch_size=p, ref_hw=r_hw, out_hw=o_hw, channels=channels)
        if k == 0 and sc.mode == "retarget":
            mode, halo = "resize", 0
        elif is_tiled(o_hw, config.tiling, tiled):
            mode, halo = "tiled", sampler_halo(config, k > 0, backend)
        else:
            mode, halo = "global", 0
        levels.append(Level(k, tuple(r_hw), tuple(o_hw), patch_count(r_hw, p), backend, mode,
                            halo))
    return tuple(levels)


def output_level_shapes(out_hw: tuple[int, int], tiff_tile: int) -> list[tuple[int, int]]:
    """The output pyramid: full size, then 2x reductions until one TIFF tile holds a level."""
    shapes = [tuple(out_hw)]
    while max(shapes[-1]) > tiff_tile:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


@dataclass(frozen=True)
class RunPlan:
    """Everything a tiled run needs, as plain values: its levels and their tile grids."""

    ref_hw: tuple[int, int]
    out_hw: tuple[int, int]
    channels: int
    seed: int
    tile: int
    levels: tuple[Level, ...]
    grids: tuple[TileGrid, ...]       # one per level (a single tile for global levels)
    denoiser: DenoiserSettings
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
        """One line per level: size, mode, backend, tiles, halo, overhead."""
        lines = []
        for lv, grid in zip(self.levels, self.grids):
            h, w = lv.out_hw
            lines.append(f"level {lv.level}: {w}x{h} {lv.mode:6s} {lv.backend:5s} "
                         f"tiles {len(grid):5d} "
                         f"halo {lv.halo:4d} computed/output {grid.overhead():.3f}")
        return lines


def window_bytes_per_pixel(channels: int, patch_size: int, settings: DenoiserSettings,
                           *, backend: str = "fast") -> int:
    """Estimated peak bytes per pixel of one tile window, above the denoiser's fixed
    working budget (``denoiser.memory_budget_mb``, which bounds its banded work: the
    unfolded query patches, the candidate union, the weights).

    Fast backend: what it holds for the whole window at once, per query (one per
    ``settings.query_stride``^2 pixels; pass a level's own, :func:`level_settings`): the
    reduced-space queries (4 ``pca_dims`` bytes) and two candidate lists (this step's and
    the last, 2 x 8 ``candidates`` bytes); plus about six float32 images of C channels
    (the state, the noise, the coarse level, the prediction, the fold's sums): 24 C bytes. At the default preset (64 dims, 16 candidates, stride 2,
    RGB) 200 bytes; measured 198 (BENCHMARKS.md, "Halo overhead at the default preset").
    The exact backend (not measured): its unfolded queries, 4 C P^2, plus 64 bytes.
    """
    if backend != "fast":
        return 4 * channels * patch_size * patch_size + 64
    per_query = 4 * settings.pca_dims + 2 * 8 * settings.candidates
    return per_query // (settings.query_stride ** 2) + 24 * channels


def resolve_tile(tile: int | str, halos: list[int], *, max_overhead: float,
                 window_bytes_per_px: int = 0, memory_bytes: int | None = None) -> int:
    """The tile core side of a run: ``tile`` itself, or for ``"auto"`` the smallest
    multiple of 512 whose halo cost stays within ``max_overhead`` at the largest halo of the
    tiled levels (``tiling.auto_tile``; 5120 at the default preset's 230 px halo), lowered
    in steps of 512 while its window ``(tile + 2 halo)^2 * window_bytes_per_px`` would
    exceed ``memory_bytes`` (the halo cost is then above ``max_overhead``: logged).
    1024 when no level is tiled (the chunk side of the store's global levels)."""
    if tile == "auto":
        if not halos:
            return 1024
        halo = max(halos)
        best = auto_tile(halo, max_overhead=max_overhead)
        t = best
        if memory_bytes is not None and window_bytes_per_px > 0:
            while t > 512 and (t + 2 * halo) ** 2 * window_bytes_per_px > memory_bytes:
                t -= 512
        if t != best:
            log.info("tile auto: %d (halo cost %.2f) would need ~%.1f GiB per tile window; "
                        "using %d (halo cost %.2f) to stay within %.1f GiB "
                        "(tiling.window_memory_mb)", best, (1 + 2 * halo / best) ** 2,
                        (best + 2 * halo) ** 2 * window_bytes_per_px / 2**30, t,
                        (1 + 2 * halo / t) ** 2, memory_bytes / 2**30)
        return t
    tile = int(tile)
    if tile < MIN_TILE or tile % MIN_TILE:
        near = max(MIN_TILE, round(tile / MIN_TILE) * MIN_TILE)
        raise GigapatchError(f"tile={tile}: the tile side must be a multiple of {MIN_TILE} "
                             f"(>= {MIN_TILE}), e.g. {near}")
    return tile


def window_memory_bytes(tiling: TilingConfig, device: Any) -> int | None:
    """``tiling.window_memory_mb`` in bytes; ``auto``: half the device's memory."""
    if tiling.window_memory_mb != "auto":
        return int(tiling.window_memory_mb) * 2**20
    try:
        total = device_memory_bytes(device)
    except (RuntimeError, TypeError, ValueError):  # a device name torch does not know
        return None
    return None if total is None else total // 2


def make_plan(ref_hw: tuple[int, int], out_hw: tuple[int, int], channels: int, config: Config,
              *, seed: int, ref_digest: str, tile: int | None = None,
              tiled: bool | None = None, device: Any = "cpu") -> RunPlan:
    """Plan a tiled run: :func:`plan_levels`, then a tile grid per level.

    A global level is one task (a single-tile grid); a tiled one is cut into tiles of
    ``tile`` (default ``tiling.tile``; ``auto``: :func:`resolve_tile`) with its halo;
    retarget's coarsest level is the resized reference (one task).

    ``run_key`` hashes what changes the stored data (sampler and denoiser config, seed,
    sizes, reference digest, tile and level layout, output bit depth): a run store made with
    another key is refused.
    """
    settings = denoiser_settings(config)
    levels = plan_levels(ref_hw, out_hw, channels, config, device=device, tiled=tiled,
                         settings=settings)
    log_levels(levels, config)
    tiled_levels = [lv for lv in levels if lv.mode == "tiled"]
    # the costliest tiled level's window per pixel (each fast level at its own query grid:
    # one under denoiser.full_stride_pixels queries every patch, 4x the per-query bytes)
    bpp = max((window_bytes_per_pixel(channels, config.sampler.patch_size,
                                      level_settings(settings, lv.out_hw), backend=lv.backend)
               for lv in tiled_levels), default=0)
    memory = window_memory_bytes(config.tiling, device)
    if memory is not None:  # the denoiser's fixed working budget comes first
        memory = max(0, memory - int(settings.memory_budget_mb * 2**20))
    tile = resolve_tile(tile or config.tiling.tile, [lv.halo for lv in tiled_levels],
                        max_overhead=config.tiling.max_overhead,
                        window_bytes_per_px=bpp, memory_bytes=memory)
    tl = config.sampler.tileable  # wrapped axes: edge tiles take their halo from the other side
    grids = tuple(grid_for_level(*lv.out_hw, tile=tile, halo=lv.halo,
                                 whole=lv.mode != "tiled", wrap=("y" in tl, "x" in tl))
                  for lv in levels)
    out_shapes = tuple(output_level_shapes(out_hw, config.output.tiff_tile))
    key_data: dict[str, Any] = {
        "config": config_hash(config), "seed": seed, "ref": ref_digest,
        "out_hw": list(out_hw), "tile": tile, "bit_depth": config.output.bits(),
        "levels": [[lv.mode, lv.backend, list(lv.out_hw)] for lv in levels],
        "output_shapes": [list(s) for s in out_shapes],
    }
    run_key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    return RunPlan(tuple(ref_hw), tuple(out_hw), channels, seed, tile, levels, grids,
                   settings, out_shapes, config.output.bits(), run_key)


def tile_advice(plan: RunPlan) -> str | None:
    """A one-line warning when the tile is under 4x the halo of a tiled level (each tile
    then computes several times its own pixels), naming the tile side to use; else None."""
    small = [(lv, grid) for lv, grid in zip(plan.levels, plan.grids)
             if lv.mode == "tiled" and plan.tile < 4 * lv.halo]
    if not small:
        return None
    halo = max(lv.halo for lv, _ in small)
    use = -(-4 * halo // MIN_TILE) * MIN_TILE
    worst = max(grid.overhead() for _, grid in small)
    return (f"tile {plan.tile} is under 4x the halo ({halo} px): tiles compute up to "
            f"{worst:.1f}x their pixels; use --tile {use} or larger (tiling.tile)")


def disk_estimate(plan: RunPlan, *, pyramid: bool = True,
                  ref_itemsize: int = 4) -> tuple[int, int]:
    """``(run store bytes, output file bytes)``: upper bounds (uncompressed) of what a tiled
    run of ``plan`` writes (``gigapatch.storage.diskspace``); ``pyramid=False`` for a
    PNG/JPEG output (level 0 only); ``ref_itemsize``: bytes per stored reference sample
    (1 for an 8-bit reference, 2 for 16-bit, 4 for float)."""
    from ..storage.diskspace import output_bytes, scratch_bytes

    item = 1 if plan.bit_depth == 8 else 2
    scratch = scratch_bytes(ref_hw=plan.ref_hw, level_shapes=[lv.out_hw for lv in plan.levels],
                            grid_shapes=[grid.shape for grid in plan.grids],
                            output_shapes=plan.output_shapes, chunk=plan.tile,
                            channels=plan.channels, out_itemsize=item,
                            ref_itemsize=ref_itemsize)
    return scratch, output_bytes(plan.output_shapes, channels=plan.channels,
                                 out_itemsize=item, pyramid=pyramid)
