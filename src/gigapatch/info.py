"""Cost estimates per pyramid level, for ``gigapatch info``.

These are estimates of the *exact* denoiser (docs/method.md#posterior-mean), which compares
every query patch of the output with every patch of the reference level:

* reference patches N = (h - P + 1) * (w - P + 1) of the reference level (stride 1);
* query patches M = (H - P + 1) * (W - P + 1) of the output level (no padding);
* patch dictionary: N * P * P * C float32 values, resident for the whole level;
* working set: the chunked GEMM + softmax never exceeds ``denoiser.memory_budget_mb``; when
  the whole M x N logit matrix (plus the queries and results) is smaller, that is used;
* work per level: two GEMMs of M x N x D (D = P*P*C) per step, 4 * M * N * D flops.

Only numbers are computed here; the CLI formats them. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .diffusion.levels import patch_count

__all__ = ["LevelEstimate", "estimate_levels", "format_bytes", "format_table"]


@dataclass(frozen=True)
class LevelEstimate:
    """Sizes and cost of one level (0 = coarsest)."""

    level: int
    ref_hw: tuple[int, int]
    out_hw: tuple[int, int]
    ref_patches: int
    query_patches: int
    dictionary_bytes: int
    working_bytes: int
    gflop: float
    tiled: bool

    @property
    def memory_bytes(self) -> int:
        """Dictionary plus working set: the peak the exact denoiser needs for this level."""
        return self.dictionary_bytes + self.working_bytes


def estimate_levels(levels: Iterable, *, patch_size: int, channels: int, steps: int,
                    memory_budget_mb: float, tiling_mode: str = "auto",
                    global_max_pixels: int | None = None) -> list[LevelEstimate]:
    """Estimates for each planned level.

    Parameters
    ----------
    levels : iterable
        Objects with ``level``, ``ref_hw`` and ``out_hw`` (as ``gigapatch.api.plan_levels``
        returns), or ``(ref_hw, out_hw)`` pairs, coarsest first.
    patch_size, channels, steps : int
    memory_budget_mb : float
        ``denoiser.memory_budget_mb``: the cap on one denoiser call's working memory.
    tiling_mode, global_max_pixels
        ``tiling.mode`` and ``tiling.global_max_pixels``: whether a level would be tiled.

    Returns
    -------
    list of LevelEstimate
    """
    p = patch_size
    d = p * p * channels
    budget = int(memory_budget_mb * 2**20)
    out: list[LevelEstimate] = []
    for i, lv in enumerate(levels):
        if isinstance(lv, tuple):
            level, (ref_hw, out_hw) = i, lv
        else:
            level, ref_hw, out_hw = lv.level, lv.ref_hw, lv.out_hw
        ref_hw = (int(ref_hw[0]), int(ref_hw[1]))
        out_hw = (int(out_hw[0]), int(out_hw[1]))
        n = patch_count(ref_hw, p)
        m = patch_count(out_hw, p)
        dictionary = n * d * 4 + n * 4  # patches + their squared norms
        full = m * n * 4 + 2 * m * d * 4  # logits + queries + results, unchunked
        working = min(budget, full)
        pixels = out_hw[0] * out_hw[1]
        if tiling_mode == "always":
            tiled = True
        elif tiling_mode == "never" or global_max_pixels is None:
            tiled = False
        else:
            tiled = pixels > global_max_pixels
        out.append(LevelEstimate(level, ref_hw, out_hw, n, m, dictionary, working,
                                 steps * 4.0 * m * n * d / 1e9, tiled))
    return out


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_table(estimates: Sequence[LevelEstimate],
                 backends: Sequence[str] | None = None) -> list[str]:
    """Aligned text rows (header first), one per level, coarsest first.

    ``backends``, when given, adds the denoiser backend each level will use.
    """
    rows = [("level", "reference", "output", "ref patches", "query patches", "dictionary",
             "working", "exact GFLOP", "tiled") + (("backend",) if backends else ())]
    for i, e in enumerate(estimates):
        rows.append((str(e.level), f"{e.ref_hw[1]}x{e.ref_hw[0]}",
                     f"{e.out_hw[1]}x{e.out_hw[0]}", f"{e.ref_patches:,}",
                     f"{e.query_patches:,}", format_bytes(e.dictionary_bytes),
                     format_bytes(e.working_bytes), f"{e.gflop:,.1f}",
                     "yes" if e.tiled else "no") + ((backends[i],) if backends else ()))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in
                      enumerate(zip(r, widths))).rstrip() for r in rows]
