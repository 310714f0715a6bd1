"""The tiled gigapixel pipeline: plan -> run store -> Dask graph of tiles -> writers.

The only package that imports dask; it reads the config and hands plain values and small
settings objects to diffusion, tiling and storage. ``plan`` is also the one planner of
``gigapatch.generate`` and ``gigapatch info``.
"""

from .plan import RunPlan, denoiser_settings, is_tiled, make_plan, plan_levels, sampler_halo
from .run import TiledOptions, TiledResult, default_run_dir, output_format, read_result, \
    run_tiled

__all__ = ["run_tiled", "TiledOptions", "TiledResult", "make_plan", "RunPlan", "plan_levels",
           "is_tiled", "denoiser_settings", "sampler_halo", "default_run_dir", "output_format",
           "read_result"]
