"""The Dask graph of a tiled run: one task per tile per level, one per output chunk.

A tile of level L depends only on the tiles of level L - 1 whose cores intersect the coarse
window its sampler reads (``coarse_box_for`` of its core + halo), so Dask can start level L
while level L - 1 is still running elsewhere. The output pyramid's chunk (iy, ix) of level r
depends on the (up to 4) chunks of level r - 1 under it; chunks of output level 0 are
written by the finest level's tiles. Tasks already marked done in the run store are left
out of the graph (resume), and so are edges to them. A big run's graph is built and
computed in waves of bounded size (:func:`iter_graphs`), so planning time and memory do
not grow with the tile count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ..diffusion.generator import coarse_box_for
from ..storage.runstore import RunStore
from ..tiling import Box, chunks_under, wrap_pieces
from .plan import RunPlan
from .tasks import TaskSpec, run_level_tile, run_output_chunk

__all__ = ["TileGraph", "build_graph", "iter_graphs", "graph_totals", "level_label",
           "label_level"]


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


def level_label(level: int, n_levels: int) -> str:
    """The progress label of ``level``'s tasks: ``"level 3/5"`` (1-based)."""
    return f"level {level + 1}/{n_levels}"


def label_level(label: str) -> int | None:
    """The level of a :func:`level_label` (None for another label, e.g. ``"pyramid"``)."""
    if not label.startswith("level "):
        return None
    return int(label[6:].split("/", 1)[0]) - 1


def graph_totals(plan: RunPlan, store: RunStore) -> tuple[dict[str, int], dict[str, int]]:
    """Tasks per progress label in the whole run, and how many are already done."""
    totals: dict[str, int] = {}
    done: dict[str, int] = {}
    n_levels = len(plan.levels)
    for lv, grid in zip(plan.levels, plan.grids):
        label = level_label(lv.level, n_levels)
        totals[label] = len(grid)
        done[label] = int(store.done_mask(f"done/{lv.level}").sum())
    for r in range(1, len(plan.output_shapes)):
        mask = store.done_mask(f"output_done/{r}")
        totals["pyramid"] = totals.get("pyramid", 0) + mask.size
        done["pyramid"] = done.get("pyramid", 0) + int(mask.sum())
    return totals, done


def build_graph(plan: RunPlan, spec: TaskSpec, store: RunStore, *,
                prefix: str | None = None) -> TileGraph:
    """The whole graph of the tasks not yet done, in topological order (one wave of
    :func:`iter_graphs` without a bound)."""
    return next(iter_graphs(plan, spec, store, prefix=prefix))


def iter_graphs(plan: RunPlan, spec: TaskSpec, store: RunStore, *,
                prefix: str | None = None, max_tasks: int | None = None) \
        -> Iterator[TileGraph]:
    """The tasks not yet done, in waves of at most ``max_tasks`` tasks (None: one graph).

    Waves follow the topological order (level by level, each level's tiles row by row,
    then the output pyramid's levels), so every task depends only on tasks of its own wave
    or of earlier ones; a dependency on an earlier wave is left out of the graph, which is
    right when each wave is computed before the next is used (the earlier task's chunks
    are then in the store, marked done). Memory and time per wave are bounded by
    ``max_tasks`` whatever the run's tile count; the generator is lazy (the next wave is
    built when asked for). Always yields at least one graph (maybe empty). Every key
    starts with ``prefix`` (default ``gp-`` and the run key's first 8 digits): a batch
    composing several runs' graphs into one gives each its own.
    """
    prefix = prefix or f"gp-{plan.run_key[:8]}"
    spec_key = f"{prefix}-spec"
    totals, done_counts = graph_totals(plan, store)
    n_levels = len(plan.levels)
    g = TileGraph({spec_key: spec}, [], totals=totals, done=done_counts)
    # producer[(array, iy, ix)] -> key of the (pending) task of this wave writing that chunk
    producer: dict[tuple[str, int, int], str] = {}
    yielded = False

    def full() -> bool:
        return max_tasks is not None and len(g.keys) >= max_tasks

    def add(key: str, func: Callable, args: tuple, deps: list[str], label: str) -> None:
        deps = sorted(set(d for d in deps if d is not None))
        g.dsk[key] = (func, spec_key, *args, *deps)
        g.keys.append(key)
        g.label[key] = label

    for lv, grid in zip(plan.levels, plan.grids):
        L = lv.level
        label = level_label(L, n_levels)
        done = store.done_mask(f"done/{L}")
        prev = plan.levels[L - 1] if L > 0 else None
        for iy, ix in zip(*np.nonzero(~done)):  # row by row
            if full():
                yield g
                yielded = True
                g = TileGraph({spec_key: spec}, [], totals=totals, done=done_counts)
                producer = {}
            t = grid.tile_at(int(iy), int(ix))
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
            # chunks of this level's array the task writes (several for a global level)
            for c in chunks_under(t.core, plan.tile):
                producer[(f"levels/{L}", *c)] = key
                if L == n_levels - 1:
                    producer[("output/0", *c)] = key

    for r in range(1, len(plan.output_shapes)):
        label = "pyramid"
        done = store.done_mask(f"output_done/{r}")
        for iy, ix in zip(*np.nonzero(~done)):
            if full():
                yield g
                yielded = True
                g = TileGraph({spec_key: spec}, [], totals=totals, done=done_counts)
                producer = {}
            iy, ix = int(iy), int(ix)
            key = _key(prefix, "P", r, iy, ix)
            src = Box(2 * iy * plan.tile, 2 * ix * plan.tile,
                      2 * (iy + 1) * plan.tile, 2 * (ix + 1) * plan.tile) \
                .clip(plan.output_shapes[r - 1])
            deps = [producer.get((f"output/{r - 1}", cy, cx))
                    for cy, cx in chunks_under(src, plan.tile)]
            add(key, run_output_chunk, (r, iy, ix), deps, label)
            producer[(f"output/{r}", iy, ix)] = key
    if g.keys or not yielded:
        yield g
