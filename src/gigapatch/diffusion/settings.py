"""``DenoiserSettings``: the denoiser's knobs as one small frozen value (no config object).

Built once per run from the config's ``denoiser`` section
(``gigapatch.pipeline.plan.denoiser_settings``) and passed down unchanged: to the per-level
backend choice and construction (``diffusion.backends``), to the fast backend
(``diffusion.fast``) and, pickled inside a task spec, to tiled workers.

The config is the one place that holds defaults: every field that is a config key has no
default here, so the two cannot disagree. ``broad_stride``, ``init``, ``expand_groups``,
``expand_below_ess`` and ``reseed_groups`` are not config keys
(internal knobs of the fast backend that tests and benchmarks vary); their defaults are the
only ones.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DenoiserSettings", "CONFIG_FIELDS"]

#: DenoiserSettings field -> its key in the config's ``denoiser`` section
CONFIG_FIELDS = {
    "backend": "backend", "dtype": "dtype", "memory_budget_mb": "memory_budget_mb",
    "candidates": "candidates", "pca_dims": "pca_dims", "dictionary_size": "dictionary_size",
    "broad_steps": "broad_below_steps", "broad_min_ess": "broad_min_ess",
    "prune_tolerance": "prune_tolerance",
    "query_stride": "query_stride", "full_stride_pixels": "full_stride_pixels",
    "probes": "probes", "index_budget_mb": "index_budget_mb",
}


@dataclass(frozen=True)
class DenoiserSettings:
    """How one run's image denoisers are chosen and built (see ``configs/default.yaml``,
    section ``denoiser``, for each key's meaning).

    Attributes
    ----------
    backend : {"auto", "exact", "fused", "fast"}
        The configured backend; ``auto`` is resolved per level by
        ``diffusion.backends.level_backend``.
    dtype : {"float32", "bfloat16", "float16"}
        Precision of the similarity search.
    memory_budget_mb : float
        Cap on one denoiser call's working memory.
    candidates, pca_dims, dictionary_size, query_stride, probes : int
        Fast backend: candidates per query, PCA dimensions of the search space, broad-step
        dictionary size, query grid step, random probes per query and step.
    broad_steps : int
        Fast backend: the first ``broad_steps`` calls use the dictionary (config key
        ``broad_below_steps``), at most: see ``broad_min_ess``.
    broad_min_ess : float
        Fast backend: a level leaves the dictionary for good at the first call whose
        noise level ``s`` gives a median dictionary ESS below this, measured on the level's
        own reference patches noised at ``s`` (``diffusion.fast.dictionary_ess``): global
        per level, never from a window's content, so every tile switches at the same step.
    full_stride_pixels : int
        Fast backend: a level of at most this many output pixels queries every patch
        (query and broad stride 1; ``diffusion.backends.level_settings``).
    prune_tolerance : float
        Merge reference patches closer than this (0: keep all).
    index_budget_mb : int
        Memory cap of one level's patch index; the fast backend subsamples to it.
    broad_stride : int
        Fast backend: query stride of the broad steps (not a config key).
    expand_groups : int
        Fast backend, broad steps: how many of each query's heaviest representatives are
        replaced by the entries of their groups (0: the dictionary alone; not a config
        key).
    expand_below_ess : float
        Fast backend: the groups are expanded at the broad steps whose median dictionary
        ESS (``diffusion.fast.dictionary_ess``, global per level and s) is below this
        (not a config key; above it the dictionary alone is within a few percent).
    init : {"groups", "dictionary", "exhaustive"}
        Fast backend: how the first late step finds its candidates (not a config key):
        the groups of the query's nearest representatives (default), the representatives
        themselves, or every entry (see ``diffusion.fast``).
    reseed_groups : int
        Fast backend: every late step after the first adds to each query's candidates the
        groups of its ``reseed_groups`` nearest representatives (an inverted-file probe;
        0: propagation and probes alone; not a config key).
    """

    backend: str
    dtype: str
    memory_budget_mb: float
    candidates: int
    pca_dims: int
    dictionary_size: int
    broad_steps: int
    broad_min_ess: float
    prune_tolerance: float
    query_stride: int
    probes: int
    index_budget_mb: int
    full_stride_pixels: int
    broad_stride: int = 4
    init: str = "groups"
    expand_groups: int = 4
    expand_below_ess: float = 32.0
    reseed_groups: int = 4
