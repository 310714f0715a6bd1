"""The tiled gigapixel pipeline: plan -> run store -> Dask graph of tiles -> writers.

The only package that imports dask and reads the config (with ``gigapatch.api``).
"""

from .plan import LevelTiling, RunPlan, make_plan, output_level_shapes, sampler_halo
from .run import TiledResult, default_run_dir, output_format, read_result, run_tiled, \
    should_tile

__all__ = ["run_tiled", "TiledResult", "make_plan", "RunPlan", "LevelTiling", "sampler_halo",
           "output_level_shapes", "should_tile", "default_run_dir", "output_format",
           "read_result"]
