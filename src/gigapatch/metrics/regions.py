"""Per-region novelty: which blocks of an output hold colour or texture the reference never
has (the "grey mush" search of issue 13; docs/evaluation.md).

A block's feature is its 4 x 4 colour thumbnail (mean colour of each sub-block) and its
high-frequency energy (RMS of the grey image minus its 3x3 box blur): a block of the mean
of dissimilar patches is a colour layout the reference has nowhere (a grey between a green
field and a blue sky, where the reference only has sky above field), and the finer levels'
dressing of it is high-frequency energy at that colour. The block's score is the
distance from its feature to the nearest feature of any reference block of the same size
(reference blocks at a stride of ``block // 4``): 0 where the reference has such a block,
large where it has nothing like it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gigapatch.metrics._common import as_image, match_channels

__all__ = ["RegionNovelty", "region_novelty", "block_features"]


@dataclass(frozen=True)
class RegionNovelty:
    """Result of :func:`region_novelty`.

    Attributes
    ----------
    scores : Tensor, shape (Hb, Wb)
        Per output block (stride ``block // 2``), the distance to the nearest reference
        block feature.
    max : float
        The largest block score (the image's worst region).
    p99 : float
        Its 99th percentile.
    block : int
    """

    scores: torch.Tensor
    max: float
    p99: float
    block: int


def block_features(img: torch.Tensor, block: int, stride: int) -> torch.Tensor:
    """Features of every block: its 4 x 4 thumbnail (the mean colour of each of its 4 x 4
    sub-blocks, divided by 4 so that distances are RMS colour differences) and its
    high-frequency RMS. Shape (Hb, Wb, 16 C + 1).

    Parameters
    ----------
    img : Tensor, shape (C, H, W), values in [0, 1]
    block : int
        Block side, a multiple of 4.
    stride : int
        Block step, a multiple of ``block // 4``.
    """
    q = block // 4
    x = img[None].float()
    grey = x.mean(1, keepdim=True)
    hp = grey - F.avg_pool2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), 3, 1)
    sub = F.avg_pool2d(torch.cat([x, hp * hp], 1), q, q)  # (1, C + 1, H / q, W / q)
    c = img.shape[0]
    cols = F.unfold(sub, 4, stride=stride // q)[0]  # ((C + 1) * 16, L)
    hb = (sub.shape[2] - 4) // (stride // q) + 1
    wb = (sub.shape[3] - 4) // (stride // q) + 1
    thumb = cols[:c * 16] / 4.0
    hf = cols[c * 16:].mean(0, keepdim=True).sqrt()
    return torch.cat([thumb, hf], 0).T.reshape(hb, wb, c * 16 + 1)


def region_novelty(reference: Any, output: Any, *, block: int = 16) -> RegionNovelty:
    """Per-block distance of an output's local colour and texture to the reference's.

    Parameters
    ----------
    reference, output : array or tensor, (H, W) or (H, W, C)
        Images as accepted by :func:`gigapatch.metrics.as_image`; both at least
        ``block`` px per side.
    block : int
        Block side in pixels.

    Returns
    -------
    RegionNovelty
    """
    ref = as_image(reference, name="reference")
    out = as_image(output, name="output")
    ref, out = match_channels(ref, out)
    if block % 4 or block < 4:
        raise ValueError("block must be a multiple of 4")
    fr = block_features(ref, block, block // 4)
    fr = fr.reshape(-1, fr.shape[-1])
    fo = block_features(out, block, max(1, block // 2))
    hb, wb, k = fo.shape
    d = torch.cdist(fo.reshape(-1, k).double(), fr.double()).min(1).values.float()
    scores = d.reshape(hb, wb)
    return RegionNovelty(scores, float(d.max()), float(torch.quantile(d, 0.99)), block)
