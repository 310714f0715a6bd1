"""Box, Tile and TileGrid: frozen dataclasses over half-open pixel windows.

Coordinates are global pixel coordinates of one pyramid level, ``(y0, x0, y1, x1)``
half-open. A :class:`TileGrid` splits a level of shape ``(H, W)`` into cores of
``tile x tile`` pixels (the last row/column of cores may be smaller); each core is one
chunk of the level's array, so the task that computes a tile owns exactly one chunk.
A tile's *window* is its core grown by the halo on every side and clipped to the level:
that is what the sampler runs on; only the core is kept.

Tile cores start at multiples of ``tile`` (a multiple of 2) and halos are even, so every
window origin is even, as the exact 2x pyramid filters require.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

__all__ = ["Box", "Tile", "TileGrid", "auto_tile", "chunk_span", "chunks_under",
           "grid_for_level", "worst_overhead", "wrap_pieces", "wrap_runs"]


@dataclass(frozen=True, order=True)
class Box:
    """A half-open window ``[y0, y1) x [x0, x1)`` in global pixel coordinates."""

    y0: int
    x0: int
    y1: int
    x1: int

    def __post_init__(self) -> None:
        if self.y1 < self.y0 or self.x1 < self.x0:
            raise ValueError(f"empty or inverted box {self.as_tuple()}")

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def area(self) -> int:
        return self.height * self.width

    def as_tuple(self) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)``, the form the sampler takes."""
        return self.y0, self.x0, self.y1, self.x1

    def grow(self, margin: int) -> "Box":
        """The box grown by ``margin`` pixels on every side (not clipped)."""
        return Box(self.y0 - margin, self.x0 - margin, self.y1 + margin, self.x1 + margin)

    def clip(self, shape: tuple[int, int]) -> "Box":
        """The part of the box inside ``[0, H) x [0, W)``."""
        h, w = shape
        y0, x0 = min(max(self.y0, 0), h), min(max(self.x0, 0), w)
        return Box(y0, x0, max(y0, min(self.y1, h)), max(x0, min(self.x1, w)))

    def intersects(self, other: "Box") -> bool:
        return (self.y0 < other.y1 and other.y0 < self.y1
                and self.x0 < other.x1 and other.x0 < self.x1)

    def contains(self, other: "Box") -> bool:
        return (self.y0 <= other.y0 and self.x0 <= other.x0
                and other.y1 <= self.y1 and other.x1 <= self.x1)

    def relative_to(self, origin: "Box") -> "Box":
        """This box in the coordinates of ``origin``'s top-left corner."""
        return Box(self.y0 - origin.y0, self.x0 - origin.x0,
                   self.y1 - origin.y0, self.x1 - origin.x0)

    def slices(self) -> tuple[slice, slice]:
        """``(slice(y0, y1), slice(x0, x1))`` for indexing the last two axes."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass(frozen=True)
class Tile:
    """One tile of a grid: its index, its core (owned output) and its window (computed)."""

    iy: int
    ix: int
    core: Box
    window: Box

    @property
    def index(self) -> tuple[int, int]:
        return self.iy, self.ix

    @property
    def core_in_window(self) -> Box:
        """The core in the window's coordinates (what to crop from the sampler's result)."""
        return self.core.relative_to(self.window)


def chunk_span(start: int, stop: int, size: int) -> range:
    """Indices of the chunks of side ``size`` that ``[start, stop)`` touches."""
    if stop <= start:
        return range(0)
    return range(start // size, (stop - 1) // size + 1)


def chunks_under(box: Box, chunk: int) -> list[tuple[int, int]]:
    """Indices ``(iy, ix)`` of the ``chunk x chunk`` chunks (or tile cores) that ``box``
    touches, row by row."""
    return [(iy, ix) for iy in chunk_span(box.y0, box.y1, chunk)
            for ix in chunk_span(box.x0, box.x1, chunk)]


@dataclass(frozen=True)
class TileGrid:
    """A level of shape ``(height, width)`` cut into ``tile``-sized cores with a halo.

    Parameters
    ----------
    height, width : int
        The level's size.
    tile : int
        Core side (the chunk side of the level's array); even.
    halo : int
        Pixels added on each side of a core to form its window; even (the planner's
        ``gigapatch.diffusion.generator.level_halo``).
    """

    height: int
    width: int
    tile: int
    halo: int
    wrap_y: bool = False  # a tileable level: windows are not clipped on wrapped axes
    wrap_x: bool = False

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"level size {self.height}x{self.width} must be >= 1")
        if self.tile < 2 or self.tile % 2:
            raise ValueError(f"tile {self.tile} must be an even number >= 2")
        if self.halo < 0 or self.halo % 2:
            raise ValueError(f"halo {self.halo} must be an even number >= 0 (window origins "
                             "must stay on the 2x grid)")

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tiles (rows, columns)."""
        return -(-self.height // self.tile), -(-self.width // self.tile)

    @property
    def level_shape(self) -> tuple[int, int]:
        return self.height, self.width

    def __len__(self) -> int:
        ny, nx = self.shape
        return ny * nx

    def core(self, iy: int, ix: int) -> Box:
        ny, nx = self.shape
        if not (0 <= iy < ny and 0 <= ix < nx):
            raise IndexError(f"tile ({iy}, {ix}) outside a {ny}x{nx} grid")
        t = self.tile
        return Box(iy * t, ix * t, min((iy + 1) * t, self.height), min((ix + 1) * t,
                                                                        self.width))

    def tile_at(self, iy: int, ix: int) -> Tile:
        core = self.core(iy, ix)
        win = core.grow(self.halo)
        h, w = self.level_shape  # clip the axes that do not wrap
        y0, y1 = (win.y0, win.y1) if self.wrap_y else (max(win.y0, 0), min(win.y1, h))
        x0, x1 = (win.x0, win.x1) if self.wrap_x else (max(win.x0, 0), min(win.x1, w))
        return Tile(iy, ix, core, Box(y0, x0, y1, x1))

    def __iter__(self) -> Iterator[Tile]:
        ny, nx = self.shape
        for iy in range(ny):
            for ix in range(nx):
                yield self.tile_at(iy, ix)

    def tiles_under(self, box: Box) -> list[tuple[int, int]]:
        """Indices of the tiles whose cores intersect ``box`` (clipped to the level; on a
        wrapped axis taken modulo the level's size)."""
        if not (self.wrap_y or self.wrap_x):
            return chunks_under(box.clip(self.level_shape), self.tile)
        return sorted({c for piece, _ in wrap_pieces(box, self.level_shape,
                                                     (self.wrap_y, self.wrap_x))
                       for c in chunks_under(piece, self.tile)})

    def computed_pixels(self) -> int:
        """Pixels the sampler runs on: the sum of every window's area.

        Windows are separable (row band x column band), so the sum is the product of the
        row windows' heights and the column windows' widths: O(ny + nx), not one step per
        tile (a 10^6 x 10^6 level has ~10^6 tiles).
        """
        ny, nx = self.shape
        rows = sum(self.tile_at(iy, 0).window.height for iy in range(ny))
        cols = sum(self.tile_at(0, ix).window.width for ix in range(nx))
        return rows * cols

    def overhead(self) -> float:
        """Computed pixels / level pixels (1.0 = no halo cost)."""
        return self.computed_pixels() / (self.height * self.width)

    def coverage(self) -> np.ndarray:
        """How many cores cover each pixel (all ones for a valid grid; for tests)."""
        cov = np.zeros(self.level_shape, dtype=np.int32)
        for t in self:
            cov[t.core.slices()] += 1
        return cov


def wrap_runs(lo: int, hi: int, n: int) -> list[tuple[int, int, int]]:
    """``[lo, hi)`` of a wrapped axis of length ``n`` as contiguous pieces of ``[0, n)``.

    Returns
    -------
    list of (src0, src1, dst0)
        ``[src0, src1)`` of the level goes to ``[dst0, dst0 + src1 - src0)`` of the window.
    """
    runs, pos = [], lo
    while pos < hi:
        a = pos % n
        b = min(n, a + hi - pos)
        runs.append((a, b, pos - lo))
        pos += b - a
    return runs


def wrap_pieces(box: Box, shape: tuple[int, int], wrap: tuple[bool, bool]) \
        -> list[tuple[Box, tuple[int, int]]]:
    """A window of a level whose wrapped axes may run past it, as boxes inside the level.

    Returns
    -------
    list of (Box, (dy, dx))
        Each piece of the level and where it goes in the window (offset from its corner).
        Axes that do not wrap are clipped to the level.
    """
    def axis(lo: int, hi: int, n: int, w: bool) -> list[tuple[int, int, int]]:
        if w:
            return wrap_runs(lo, hi, n)
        a, b = max(lo, 0), min(hi, n)
        return [(a, b, a - lo)] if b > a else []

    ys = axis(box.y0, box.y1, shape[0], wrap[0])
    xs = axis(box.x0, box.x1, shape[1], wrap[1])
    return [(Box(y0, x0, y1, x1), (dy, dx)) for y0, y1, dy in ys for x0, x1, dx in xs]


def grid_for_level(height: int, width: int, *, tile: int, halo: int,
                   whole: bool = False, wrap: tuple[bool, bool] = (False, False)) -> TileGrid:
    """The grid of one level: ``whole=True`` gives a single tile (the level sampled globally).

    A single-tile grid still uses ``tile`` as its chunk side in the store; only the task
    layout differs. Its halo is 0 (the window is the level).
    """
    if whole:
        return TileGrid(height, width, _even_ceil(max(height, width)), 0, *wrap)
    return TileGrid(height, width, tile, halo, *wrap)


def _even_ceil(n: int) -> int:
    return n + (n % 2) if n > 1 else 2


def worst_overhead(tile: int, halo: int) -> float:
    """The largest computed/output pixel ratio a grid of ``tile`` cores and ``halo`` can have.

    Along one axis a level of any length L cut into k cores computes L + 2 * halo * (k - 1)
    pixels (windows are clipped to the level, so only the k - 1 inner borders cost), and
    k - 1 <= (L - 1) // tile, so the ratio is below ``1 + 2 * halo / tile``; the 2-D ratio
    is the product of the two axes'. :meth:`TileGrid.overhead` gives the exact figure of
    one level; this is its bound over every level size.
    """
    return (1.0 + 2.0 * halo / tile) ** 2


def auto_tile(halo: int, *, max_overhead: float, multiple: int = 512) -> int:
    """The smallest tile core side, a multiple of ``multiple``, whose
    :func:`worst_overhead` with ``halo`` is at most ``max_overhead``.

    Parameters
    ----------
    halo : int
        The largest halo of the tiled levels (pixels per side).
    max_overhead : float
        Target computed/output pixel ratio (> 1).
    multiple : int
        Tile sides are multiples of this (512: every TIFF tile size divides the core, so an
        output band is one tile row).

    Returns
    -------
    int
    """
    if max_overhead <= 1.0:
        raise ValueError(f"max_overhead {max_overhead} must be > 1")
    if halo <= 0:
        return multiple
    t = 2.0 * halo / (math.sqrt(max_overhead) - 1.0)
    tile = max(multiple, math.ceil(t / multiple) * multiple)
    while worst_overhead(tile, halo) > max_overhead:  # float rounding at the boundary
        tile += multiple
    return tile
