"""Progress of a tiled run: one tqdm bar per level (tiles done / total, rate, ETA).

Fed by task completions: the local scheduler's ``posttask`` callback, or
``distributed.as_completed`` under a cluster (dask's own ProgressBar shows nothing there).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

__all__ = ["TileProgress"]


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
        if enabled:
            from tqdm.auto import tqdm

            for pos, (label, total) in enumerate(totals.items()):
                self.bars[label] = tqdm(total=total, initial=done.get(label, 0), desc=label,
                                        unit="tile", position=pos, leave=True,
                                        file=sys.stderr, dynamic_ncols=True)

    def update(self, label: str, seconds: float = 0.0) -> bool:
        """Count one task of ``label`` done; True when that was the label's last."""
        with self.lock:
            self.counts[label] = self.counts.get(label, 0) + 1
            self.seconds[label] = self.seconds.get(label, 0.0) + seconds
            bar = self.bars.get(label)
            if bar is not None:
                bar.update(1)
            return self.counts[label] == self.totals.get(label, -1)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
