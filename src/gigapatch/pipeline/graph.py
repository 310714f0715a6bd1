"""The Dask graph of a tiled run: one task per tile per level, one per output chunk.

A tile of level L depends only on the tiles of level L - 1 whose cores intersect the coarse
window its sampler reads (``coarse_box_for`` of its core + halo), so Dask can start level L
while level L - 1 is still running elsewhere. The output pyramid's chunk (iy, ix) of level r
depends on the (up to 4) chunks of level r - 1 under it; chunks of output level 0 are
written by the finest level's tiles. Tasks already marked done in the run store are left
out of the graph (resume), and so are edges to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..diffusion.generator import coarse_box_for
from ..storage.runstore import RunStore
from ..tiling import Box, chunks_under, wrap_pieces
from .plan import RunPlan
from .tasks import TaskSpec, run_level_tile, run_output_chunk

__all__ = ["TileGraph", "build_graph"]


@dataclass
class TileGraph:
    """A Dask graph (legacy dict form) plus what progress reporting needs."""

    dsk: dict[str, Any]
    keys: list[str]                                   # every task key, topological order
    label: dict[str, str] = field(default_factory=dict)  # key -> progress label
    totals: dict[str, int] = field(default_factory=dict)  # label -> tasks in the run
    done: dict[str, int] = field(default_factory=dict)    # label -> already done (resume)


def _key(prefix: str, kind: str, level: int, iy: int, ix: int) -> str:
    return f"{prefix}-{kind}{level}-{iy}-{ix}"


def build_graph(plan: RunPlan, spec: TaskSpec, store: RunStore, *,
                prefix: str | None = None) -> TileGraph:
    """The graph of the tasks not yet done, in topological order.

    Every key starts with ``prefix`` (default ``gp-`` and the run key's first 8 digits): a
    batch composing several runs' graphs into one gives each its own.
    """
    prefix = prefix or f"gp-{plan.run_key[:8]}"
    spec_key = f"{prefix}-spec"
    g = TileGraph({spec_key: spec}, [])
    n_levels = len(plan.levels)
    # producer[(array, iy, ix)] -> key of the (pending) task that writes that chunk
    producer: dict[tuple[str, int, int], str] = {}

    def add(key: str, func: Callable, args: tuple, deps: list[str], label: str) -> None:
        deps = sorted(set(d for d in deps if d is not None))
        g.dsk[key] = (func, spec_key, *args, *deps)
        g.keys.append(key)
        g.label[key] = label

    for lv, grid in zip(plan.levels, plan.grids):
        L = lv.level
        label = f"level {L + 1}/{n_levels}"
        done = store.done_mask(f"done/{L}")
        g.totals[label] = len(grid)
        g.done[label] = int(done.sum())
        prev = plan.levels[L - 1] if L > 0 else None
        for t in grid:
            # chunks of this level's array the task writes (several for a global level)
            owned = chunks_under(t.core, plan.tile)
            if done[t.iy, t.ix]:
                continue
            key = _key(prefix, "L", L, t.iy, t.ix)
            deps: list[str] = []
            if prev is not None and lv.mode != "resize":
                wrap = (grid.wrap_y, grid.wrap_x)  # a tileable level: read modulo its size
                cb = Box(*coarse_box_for(t.window.as_tuple(), prev.out_hw, wrap))
                deps = [producer.get((f"levels/{L - 1}", cy, cx))
                        for cy, cx in sorted({c for piece, _ in wrap_pieces(cb, prev.out_hw,
                                                                            wrap)
                                              for c in chunks_under(piece, plan.tile)})]
            add(key, run_level_tile, (L, t.iy, t.ix), deps, label)
            for c in owned:
                producer[(f"levels/{L}", *c)] = key
                if L == n_levels - 1:
                    producer[("output/0", *c)] = key

    for r in range(1, len(plan.output_shapes)):
        h, w = plan.output_shapes[r]
        label = "pyramid"
        done = store.done_mask(f"output_done/{r}")
        g.totals[label] = g.totals.get(label, 0) + done.size
        g.done[label] = g.done.get(label, 0) + int(done.sum())
        for iy in range(done.shape[0]):
            for ix in range(done.shape[1]):
                if done[iy, ix]:
                    continue
                key = _key(prefix, "P", r, iy, ix)
                src = Box(2 * iy * plan.tile, 2 * ix * plan.tile,
                          2 * (iy + 1) * plan.tile, 2 * (ix + 1) * plan.tile) \
                    .clip(plan.output_shapes[r - 1])
                deps = [producer.get((f"output/{r - 1}", cy, cx))
                        for cy, cx in chunks_under(src, plan.tile)]
                add(key, run_output_chunk, (r, iy, ix), deps, label)
                producer[(f"output/{r}", iy, ix)] = key
    return g

