"""Cost estimates per pyramid level, for ``gigapatch info``.

These are estimates of the *exact* denoiser (docs/method.md#posterior-mean), which compares
every query patch of the output with every patch of the reference level:

* reference patches N = (h - P + 1) * (w - P + 1) of the reference level (stride 1);
* query patches M = (H - P + 1) * (W - P + 1) of the output level (no padding);
* patch dictionary: N * P * P * C float32 values, resident for the whole level;
* working set: the chunked GEMM + softmax never exceeds ``denoiser.memory_budget_mb``; when
  the whole M x N logit matrix (plus the queries and results) is smaller, that is used;
* work per level: two GEMMs of M x N x D (D = P*P*C) per step, 4 * M * N * D flops.

Only numbers are computed here, from the plan's level records; the CLI prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .diffusion.backends import level_settings
from .diffusion.levels import Level, patch_count
from .diffusion.settings import DenoiserSettings

__all__ = ["LevelCost", "level_costs", "format_bytes", "format_table"]


@dataclass(frozen=True)
class LevelCost:
    """The exact denoiser's cost of one planned level (derived from its ``Level``)."""

    level: Level
    query_patches: int
    dictionary_bytes: int
    working_bytes: int
    gflop: float

    @property
    def memory_bytes(self) -> int:
        """Dictionary plus working set: the peak the exact denoiser needs for this level."""
        return self.dictionary_bytes + self.working_bytes


def level_costs(levels: Iterable[Level], *, patch_size: int, channels: int, steps: int,
                memory_budget_mb: float) -> list[LevelCost]:
    """The cost of each planned level (``gigapatch.pipeline.plan.plan_levels``).

    Parameters
    ----------
    levels : iterable of Level
        Coarsest first.
    patch_size, channels, steps : int
    memory_budget_mb : float
        ``denoiser.memory_budget_mb``: the cap on one denoiser call's working memory.

    Returns
    -------
    list of LevelCost
    """
    p = patch_size
    d = p * p * channels
    budget = int(memory_budget_mb * 2**20)
    out: list[LevelCost] = []
    for lv in levels:
        n = lv.patches
        m = patch_count(lv.out_hw, p)
        dictionary = n * d * 4 + n * 4  # patches + their squared norms
        full = m * n * 4 + 2 * m * d * 4  # logits + queries + results, unchunked
        working = min(budget, full)
        out.append(LevelCost(lv, m, dictionary, working, steps * 4.0 * m * n * d / 1e9))
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
    rows = [("level", "reference", "output", "ref patches", "query patches", "dictionary",
             "working", "exact GFLOP", "tiled", "backend")]
    for e in costs:
        lv = e.level
        rows.append((str(lv.level), f"{lv.ref_hw[1]}x{lv.ref_hw[0]}",
                     f"{lv.out_hw[1]}x{lv.out_hw[0]}", f"{lv.patches:,}",
                     f"{e.query_patches:,}", format_bytes(e.dictionary_bytes),
                     format_bytes(e.working_bytes), f"{e.gflop:,.1f}",
                     "yes" if lv.mode == "tiled" else "no", _backend(lv, settings)))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in
                      enumerate(zip(r, widths))).rstrip() for r in rows]
