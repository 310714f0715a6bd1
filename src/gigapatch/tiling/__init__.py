"""Tiles of one pyramid level: the one ``Box``, tile grids, chunks under a box (numpy only).

Import rule: this package imports nothing else of gigapatch. The halo a level needs is
the sampler's reach, computed by the diffusion package
(``gigapatch.diffusion.generator.level_halo``, with any extra a denoiser backend declares)
and passed in here as a number; diffusion takes windows as plain ``Box.as_tuple()``.
"""

from .grid import (Box, Tile, TileGrid, auto_tile, chunk_span, chunks_under, grid_for_level,
                   worst_overhead, wrap_pieces, wrap_runs)

__all__ = ["Box", "Tile", "TileGrid", "auto_tile", "chunk_span", "chunks_under",
           "grid_for_level", "worst_overhead", "wrap_pieces", "wrap_runs"]
