"""Copy rate: how much of a sample is a near-verbatim copy of large reference regions.

Recipe (docs/EVALUATION.md, item 4): on a stride grid of large sample windows (32x32, 64x64),
the fraction whose nearest reference window (any position, stride 1) differs by less than
2/255 in mean absolute difference. Patch methods that copy big regions score high; a good
generator stays low. The reference itself scores 1, noise 0.

Search: exact in the end. A lower bound prefilters the reference windows cheaply: the mean
absolute difference of two windows is at least the mean absolute difference of their block
means (triangle inequality), so block means of b x b blocks (a box filter of the reference,
read with a dilated unfold) rule out every window whose bound is >= the threshold. The
survivors are checked exactly, nearest bound first, stopping at the first true copy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gigapatch.errors import GigapatchError
from gigapatch.metrics._common import (
    as_image,
    extract_patches,
    match_channels,
    require_min_size,
    resolve_device,
)

__all__ = ["copy_rate"]


def _block_features(x: torch.Tensor, window: int, block: int) -> tuple[torch.Tensor, int, int]:
    """Block means of every window position of x (C, H, W): (L, C*g*g), nh, nw."""
    c, h, w = x.shape
    g = window // block
    boxed = F.avg_pool2d(x[None], kernel_size=block, stride=1)  # (1, C, H-b+1, W-b+1)
    cols = F.unfold(boxed, kernel_size=g, dilation=block)[0]  # (C*g*g, nh' * nw')
    nh_all = boxed.shape[-2] - block * (g - 1)
    nw_all = boxed.shape[-1] - block * (g - 1)
    nh, nw = h - window + 1, w - window + 1
    cols = cols.view(c * g * g, nh_all, nw_all)[:, :nh, :nw]
    return cols.reshape(c * g * g, nh * nw).T.contiguous(), nh, nw


def copy_rate(
    sample: Any,
    reference: Any,
    *,
    window: int = 32,
    stride: int | None = None,
    threshold: float = 2.0 / 255.0,
    max_windows: int | None = 1024,
    seed: int = 0,
    key_chunk: int = 65_536,
    check_batch: int = 64,
    device: str | torch.device | None = "cpu",
) -> float:
    """Fraction of sample windows that are near-copies of some reference window.

    Parameters
    ----------
    sample, reference : numpy.ndarray or torch.Tensor
        Images, shape (H, W) or (H, W, C) (see :func:`gigapatch.metrics.patch_swd`); sizes
        may differ but both must be at least ``window`` on each side.
    window : int
        Window side (32; 64 is the other standard size).
    stride : int, optional
        Grid step of the sample windows; defaults to ``window`` (non-overlapping grid).
    threshold : float
        A window is a copy when its mean absolute difference to the nearest reference window
        is strictly below this (2/255).
    max_windows : int or None
        If the grid has more windows, a random subset of this size (fixed seed) is tested.
    seed : int
        Seed of that subset.
    key_chunk : int
        Reference windows compared per step in the prefilter (bounds memory).
    check_batch : int
        Candidate windows checked exactly per step.
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.

    Returns
    -------
    float
        In [0, 1]: 1.0 for the reference itself, ~0 for noise.

    Raises
    ------
    GigapatchError
        If either image is smaller than ``window``.
    """
    if window < 1:
        raise GigapatchError(f"metrics: copy-rate window must be >= 1, got {window}")
    stride = window if stride is None else int(stride)
    if stride < 1:
        raise GigapatchError(f"metrics: copy-rate stride must be >= 1, got {stride}")
    dev = resolve_device(device)
    ts = as_image(sample, name="sample", device=dev)
    tr = as_image(reference, name="reference", device=dev)
    what = f"the {window}x{window} copy-rate window"
    require_min_size(ts, window, name="sample", what=what)
    require_min_size(tr, window, name="reference", what=what)
    ts, tr = match_channels(ts, tr)
    c = ts.shape[0]
    block = max(1, window // 8)
    g = window // block
    coverage = (g * block) ** 2 / float(window * window)

    with torch.no_grad():
        # Query windows on the grid (optionally a seeded subset).
        h, w = ts.shape[-2:]
        gy = torch.arange(0, h - window + 1, stride)
        gx = torch.arange(0, w - window + 1, stride)
        qy = gy.repeat_interleave(len(gx))
        qx = gx.repeat(len(gy))
        if max_windows is not None and len(qy) > max_windows:
            gen = torch.Generator(device="cpu").manual_seed(int(seed))
            keep = torch.randperm(len(qy), generator=gen)[: int(max_windows)]
            qy, qx = qy[keep], qx[keep]
        nq = len(qy)

        sfeat, s_nh, s_nw = _block_features(ts, window, block)
        qfeat = sfeat[(qy * s_nw + qx).to(dev)]  # (nq, D)
        rfeat, r_nh, r_nw = _block_features(tr, window, block)
        dfeat = rfeat.shape[1]

        # Prefilter: lower bound of the exact mean abs difference; keep bound < threshold.
        cand_idx: list[list[torch.Tensor]] = [[] for _ in range(nq)]
        cand_lb: list[list[torch.Tensor]] = [[] for _ in range(nq)]
        for ks in range(0, rfeat.shape[0], key_chunk):
            k = rfeat[ks : ks + key_chunk]
            lb = torch.cdist(qfeat, k, p=1.0) * (coverage / dfeat)  # (nq, nk)
            hit = lb < threshold
            rows, cols = torch.nonzero(hit, as_tuple=True)
            if rows.numel() == 0:
                continue
            vals = lb[rows, cols]
            rows_c = rows.cpu()
            for i in torch.unique(rows_c).tolist():
                m = rows_c == i
                cand_idx[i].append(cols[m.to(cols.device)] + ks)
                cand_lb[i].append(vals[m.to(vals.device)])

        copies = 0
        for i in range(nq):
            if not cand_idx[i]:
                continue
            idx = torch.cat(cand_idx[i])
            order = torch.argsort(torch.cat(cand_lb[i]))
            idx = idx[order]
            q = extract_patches(
                ts, window, positions=(qy[i : i + 1], qx[i : i + 1])
            )  # (1, C*w*w)
            for s in range(0, len(idx), check_batch):
                kk = idx[s : s + check_batch]
                keys = extract_patches(tr, window, positions=(kk // r_nw, kk % r_nw))
                mad = (keys - q).abs().mean(dim=1)
                if bool((mad < threshold).any()):
                    copies += 1
                    break
    return copies / nq if nq else 0.0
