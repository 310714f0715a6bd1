"""Progress of a tiled run: one tqdm bar per level (tiles done / total, rate, ETA).

Fed by task completions: the local scheduler's ``posttask`` callback, or
``distributed.as_completed`` under a cluster (dask's own ProgressBar shows nothing there).
A local run also reports each sampler step of a running tile (:meth:`TileProgress.advance`),
so a level of a few big tiles (a 5120 px CPU tile of the default preset takes ~20 minutes)
moves by fractions of a tile and has an ETA before its first tile is done.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

__all__ = ["TileProgress"]

# tqdm's default shows a fractional count as repr(float); one decimal: "1.4/4 tile"
_BAR_FORMAT = "{l_bar}{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class TileProgress:
    """Bars keyed by label ("level 3/5", "pyramid"), created in the order given."""

    def __init__(self, totals: dict[str, int], done: dict[str, int], *, enabled: bool = True):
        self.enabled = enabled
        self.lock = threading.Lock()
        self.bars: dict[str, Any] = {}
        self.counts = {k: done.get(k, 0) for k in totals}
        self.totals = dict(totals)
        self.seconds: dict[str, float] = {k: 0.0 for k in totals}
        self.t0 = time.perf_counter()
        # (label, task key) -> fraction of that running task already credited to its bar
        self.partial: dict[tuple[str, str], float] = {}
        if enabled:
            from tqdm.auto import tqdm

            for pos, (label, total) in enumerate(totals.items()):
                self.bars[label] = tqdm(total=total, initial=done.get(label, 0), desc=label,
                                        unit="tile", position=pos, leave=True,
                                        file=sys.stderr, dynamic_ncols=True,
                                        bar_format=_BAR_FORMAT)

    def advance(self, label: str, key: str, fraction: float) -> None:
        """Task ``key`` of ``label`` is ``fraction`` (0..1) done: its bar moves by what
        was not credited yet (the task's completion, :meth:`update`, credits the rest)."""
        with self.lock:
            before = self.partial.get((label, key), 0.0)
            fraction = min(max(fraction, before), 1.0)
            self.partial[(label, key)] = fraction
            bar = self.bars.get(label)
            if bar is not None and fraction > before:
                bar.update(fraction - before)

    def shown(self, label: str) -> float:
        """Tasks of ``label`` the bar shows done: whole ones plus running fractions."""
        with self.lock:
            return self.counts.get(label, 0) + sum(
                f for (lb, _k), f in self.partial.items() if lb == label)

    def update(self, label: str, seconds: float = 0.0, key: str | None = None) -> bool:
        """Count one task of ``label`` done (``key``: the task whose fractions
        :meth:`advance` credited); True when that was the label's last."""
        with self.lock:
            credited = self.partial.pop((label, key), 0.0) if key is not None else 0.0
            self.counts[label] = self.counts.get(label, 0) + 1
            self.seconds[label] = self.seconds.get(label, 0.0) + seconds
            bar = self.bars.get(label)
            if bar is not None:
                bar.update(1.0 - credited)
            return self.counts[label] == self.totals.get(label, -1)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
