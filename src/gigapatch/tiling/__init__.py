"""Tiles of one pyramid level: boxes, tile grids and their halos (numpy only).

Import rule: this package imports nothing else of gigapatch. The halo a level needs is
computed by the diffusion package (``gigapatch.diffusion.generator.level_halo``, plus any
extra a denoiser backend declares) and passed in here as a number.
"""

from .grid import Box, Tile, TileGrid, chunk_span, grid_for_level

__all__ = ["Box", "Tile", "TileGrid", "chunk_span", "grid_for_level"]
