"""Diversity over N samples of one reference (docs/evaluation.md#diversity).

* pixel diversity (SinGAN): per pixel the std over samples of the grayscale value, averaged
  over pixels, divided by the std of the grayscale reference. 0 for identical samples; the
  SinGAN paper reports 0.15 for its exact sampler.
* pairwise SWD: mean multi-scale patch SWD over all pairs of samples.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from gigapatch.errors import GigapatchError
from gigapatch.device import resolve_device
from gigapatch.metrics._common import as_image, as_image_list, to_gray
from gigapatch.metrics.swd import patch_swd

__all__ = ["pixel_diversity", "pairwise_swd"]


def pixel_diversity(
    samples: Any, reference: Any, *, device: str | torch.device | None = "cpu"
) -> float:
    """SinGAN's pixel diversity of N samples of one size.

    Parameters
    ----------
    samples : sequence of arrays or array of shape (N, H, W, C)
        N >= 2 samples, all of the same height and width; each (H, W) or (H, W, C).
    reference : numpy.ndarray or torch.Tensor
        The reference image (any size), (H_r, W_r) or (H_r, W_r, C).
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.

    Returns
    -------
    float
        mean over pixels of std over samples (ddof 0) of the luma, divided by the std of the
        reference luma.

    Raises
    ------
    GigapatchError
        Fewer than two samples, samples of different sizes, or a flat reference.
    """
    dev = resolve_device(device)
    imgs = as_image_list(samples, device=dev)
    if len(imgs) < 2:
        raise GigapatchError(
            f"metrics: pixel diversity needs at least 2 samples, got {len(imgs)}; "
            "generate more samples of the same size"
        )
    shape0 = tuple(imgs[0].shape[-2:])
    for i, im in enumerate(imgs):
        if tuple(im.shape[-2:]) != shape0:
            raise GigapatchError(
                f"metrics: pixel diversity needs samples of one size, but sample {i} is "
                f"{im.shape[-1]}x{im.shape[-2]} and sample 0 is {shape0[1]}x{shape0[0]}; "
                "generate all samples with the same size"
            )
    ref = as_image(reference, name="reference", device=dev)
    ref_std = float(to_gray(ref).std(unbiased=False).item())
    if ref_std <= 0:
        raise GigapatchError(
            "metrics: the reference is flat (grayscale std 0), pixel diversity is undefined; "
            "use a reference with some contrast"
        )
    gray = torch.stack([to_gray(im) for im in imgs])  # (N, H, W)
    return float(gray.std(dim=0, unbiased=False).mean().item() / ref_std)


def pairwise_swd(samples: Any, **swd_kwargs: Any) -> float:
    """Mean multi-scale patch SWD over all pairs of samples (sizes may differ).

    Parameters
    ----------
    samples : sequence of arrays or array of shape (N, H, W, C)
        N >= 2 samples.
    **swd_kwargs
        Keywords of :func:`gigapatch.metrics.patch_swd` (``device``, ``seed``, ...).

    Returns
    -------
    float
        Mean of ``patch_swd(s_i, s_j).mean`` over i < j; 0 for identical samples.
    """
    device = swd_kwargs.get("device", "cpu")
    imgs = as_image_list(samples, device=device)
    if len(imgs) < 2:
        raise GigapatchError(
            f"metrics: pairwise SWD needs at least 2 samples, got {len(imgs)}"
        )
    # patch_swd takes (H, W, C): hand it channels-last views.
    hwc = [im.permute(1, 2, 0) for im in imgs]
    vals = [patch_swd(a, b, **swd_kwargs).mean for a, b in itertools.combinations(hwc, 2)]
    return float(sum(vals) / len(vals))
