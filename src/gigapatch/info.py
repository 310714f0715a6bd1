"""Cost estimates per pyramid level, for ``gigapatch info``.

The work is the *exact* denoiser's (docs/method.md#posterior-mean), which compares every
query patch of the output with every patch of the reference level:

* reference patches N = (h - P + 1) * (w - P + 1) of the reference level (stride 1);
* query patches M = (H - P + 1) * (W - P + 1) of the output level (no padding);
* work per level: two GEMMs of M x N x D (D = P*P*C) per step, 4 * M * N * D flops.

The memory is that of the backend the level runs with:

* exact / fused: the patch dictionary, N * D float32 values (+ norms), resident for the
  whole level; the chunked GEMM + softmax never exceeds ``denoiser.memory_budget_mb`` (when
  the whole M x N logit matrix, queries and results are smaller, that is used);
* fast: the level's index, at most ``denoiser.index_budget_mb`` of patches
  (``backends.index_entries``), with its reduced-space copy, positions and the broad steps'
  dictionary (:func:`fast_index_bytes`), plus the working budget;
* both: the images of the window a denoiser call runs on (the whole level, or with a tile
  the tile's core plus two halos), ``pipeline.plan.window_bytes_per_pixel`` per pixel.

Process overhead (torch, the decoded reference and its pyramid) comes on top.

Only numbers are computed here, from the plan's level records; the CLI prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .diffusion.backends import level_settings
from .diffusion.levels import Level, patch_count
from .diffusion.settings import DenoiserSettings

__all__ = ["LevelCost", "level_costs", "fast_index_bytes", "format_bytes", "format_table"]


@dataclass(frozen=True)
class LevelCost:
    """The cost of one planned level (derived from its ``Level``): the exact denoiser's
    work, the memory of the level's own backend."""

    level: Level
    query_patches: int
    dictionary_bytes: int   # resident index of the level's backend
    working_bytes: int      # one denoiser call's working set (capped by the budget)
    gflop: float            # the exact denoiser's work
    window_bytes: int = 0   # the images of one window (whole level or one tile)

    @property
    def memory_bytes(self) -> int:
        """Index, working set and window: the peak this level's denoiser needs."""
        return self.dictionary_bytes + self.working_bytes + self.window_bytes


def fast_index_bytes(entries: int, ref_hw: tuple[int, int], *, dim: int, pca_dims: int,
                     dictionary_size: int) -> int:
    """Bytes of one fast level (``diffusion.fast.FastLevel``) of ``entries`` patches.

    The index: patches (4 D each), multiplicity and norm (4 + 4), positions (2 x 8); the
    position map (8 per reference position); the reduced space (4 ``pca_dims`` + 4); the
    entries grouped by representative (8); the broad steps' dictionary of
    ``min(dictionary_size, entries)`` representatives (4 D + 4 + 4 + 3 x 8) and the basis.
    """
    d, k = dim, min(pca_dims, dim)
    reps = min(dictionary_size, entries)
    per_entry = 4 * d + 8 + 16 + 4 * k + 4 + 8
    return (entries * per_entry + ref_hw[0] * ref_hw[1] * 8 + reps * (4 * d + 32)
            + 4 * d * (k + 1))


def level_costs(levels: Iterable[Level], *, patch_size: int, channels: int, steps: int,
                memory_budget_mb: float, settings: DenoiserSettings | None = None,
                tile: int | None = None) -> list[LevelCost]:
    """The cost of each planned level (``gigapatch.pipeline.plan.plan_levels``).

    Parameters
    ----------
    levels : iterable of Level
        Coarsest first.
    patch_size, channels, steps : int
    memory_budget_mb : float
        ``denoiser.memory_budget_mb``: the cap on one denoiser call's working memory.
    settings : DenoiserSettings, optional
        The denoiser's settings: with them a fast level's memory is the fast backend's
        (its index budget, reduced space, window), without them the exact denoiser's.
    tile : int, optional
        The tile core side of a tiled run: a ``tiled`` level's window is the core plus
        two halos (clipped to the level); otherwise every window is the whole level.

    Returns
    -------
    list of LevelCost
    """
    from .diffusion.backends import index_entries
    from .pipeline.plan import window_bytes_per_pixel

    p = patch_size
    d = p * p * channels
    budget = int(memory_budget_mb * 2**20)
    out: list[LevelCost] = []
    for lv in levels:
        n = lv.patches
        m = patch_count(lv.out_hw, p)
        gflop = steps * 4.0 * m * n * d / 1e9
        h, w = lv.out_hw
        if tile is not None and lv.mode == "tiled":
            h, w = min(h, tile + 2 * lv.halo), min(w, tile + 2 * lv.halo)
        if lv.backend == "fast" and settings is not None:
            st = level_settings(settings, lv.out_hw)
            entries = min(n, index_entries("fast", st, channels=channels, patch_size=p))
            index = fast_index_bytes(entries, lv.ref_hw, dim=d, pca_dims=st.pca_dims,
                                     dictionary_size=st.dictionary_size)
            window = h * w * window_bytes_per_pixel(channels, p, st, backend="fast")
            out.append(LevelCost(lv, m, index, budget, gflop, window))
            continue
        dictionary = n * d * 4 + n * 4  # patches + their squared norms
        full = m * n * 4 + 2 * m * d * 4  # logits + queries + results, unchunked
        working = min(budget, full)
        window = 0 if settings is None else \
            h * w * window_bytes_per_pixel(channels, p, settings, backend=lv.backend)
        out.append(LevelCost(lv, m, dictionary, working, gflop, window))
    return out


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _backend(lv: Level, settings: DenoiserSettings | None) -> str:
    if lv.backend != "fast" or settings is None:
        return lv.backend
    return f"fast, stride {level_settings(settings, lv.out_hw).query_stride}"


def format_table(costs: Sequence[LevelCost], *,
                 settings: DenoiserSettings | None = None) -> list[str]:
    """Aligned text rows (header first), one per level, coarsest first, with whether the
    level is tiled and the denoiser backend it will use (with ``settings``, a fast level
    also shows its query stride: ``diffusion.backends.level_settings``)."""
    rows = [("level", "reference", "output", "ref patches", "query patches", "index",
             "working", "window", "exact GFLOP", "tiled", "backend")]
    for e in costs:
        lv = e.level
        rows.append((str(lv.level), f"{lv.ref_hw[1]}x{lv.ref_hw[0]}",
                     f"{lv.out_hw[1]}x{lv.out_hw[0]}", f"{lv.patches:,}",
                     f"{e.query_patches:,}", format_bytes(e.dictionary_bytes),
                     format_bytes(e.working_bytes), format_bytes(e.window_bytes),
                     f"{e.gflop:,.1f}",
                     "yes" if lv.mode == "tiled" else "no", _backend(lv, settings)))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in
                      enumerate(zip(r, widths))).rstrip() for r in rows]
