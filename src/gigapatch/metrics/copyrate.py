"""Copy rate: how much of a sample is a near-verbatim copy of large reference regions.

Recipe (docs/evaluation.md#copy-rate): on a stride grid of large sample windows (32x32, 64x64),
the fraction whose nearest reference window (any position, stride 1) differs by less than
2/255 in mean absolute difference. Patch methods that copy big regions score high; a good
generator stays low. The reference itself scores 1, noise 0.

Search: exact in the end, with two lower bounds as prefilters. The mean absolute difference
(MAD) of two windows is at least the MAD of their block means (triangle inequality), and for
values in [0, 1]. So:

1. coarse: 4x4 block means of every reference window (a box filter read with a dilated
   unfold, in bands of rows for bounded memory); the L1 distance to the query's block means
   (cdist) bounds the MAD from below; windows whose bound is >= the threshold go;
2. fine: 8x8 block means of the survivors, the same bound, tighter;
3. exact MAD of the remaining windows, nearest bound first, stopping at the first copy.

No window that could be a copy is ever dropped, so the decision equals a brute-force search.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gigapatch.device import resolve_device
from gigapatch.errors import GigapatchError
from gigapatch.metrics._common import (
    as_image,
    extract_patches,
    match_channels,
    require_min_size,
)

__all__ = ["copy_rate"]


def _box(x: torch.Tensor, block: int) -> torch.Tensor:
    """Box filter (C, H, W) -> (C, H-b+1, W-b+1): the mean of each b x b block."""
    return F.avg_pool2d(x[None], kernel_size=block, stride=1)[0]


def _gather_blocks(
    boxed: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, block: int, g: int
) -> torch.Tensor:
    """Block-mean features (N, C*g*g) of windows at top-left corners (ys, xs)."""
    c, hb, wb = boxed.shape
    off = torch.arange(g, device=boxed.device) * block
    oy = (ys.to(boxed.device)[:, None] + off[None, :])[:, :, None]
    ox = (xs.to(boxed.device)[:, None] + off[None, :])[:, None, :]
    lin = (oy * wb + ox).reshape(len(ys), g * g)
    out = boxed.reshape(c, hb * wb)[:, lin]  # (C, N, g*g)
    return out.permute(1, 0, 2).reshape(len(ys), c * g * g)


def _band_blocks(
    boxed: torch.Tensor, y0: int, y1: int, nw: int, block: int, g: int
) -> torch.Tensor:
    """Block-mean features (L, C*g*g) of all windows with top row in [y0, y1), x < nw."""
    c = boxed.shape[0]
    span = boxed[:, y0 : y1 + block * (g - 1), :]
    cols = F.unfold(span[None], kernel_size=g, dilation=block)[0]
    nw_all = span.shape[-1] - block * (g - 1)
    cols = cols.view(c * g * g, y1 - y0, nw_all)[:, :, :nw]
    return cols.reshape(c * g * g, (y1 - y0) * nw).T


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
        Reference windows compared per step in the coarse prefilter (bounds memory).
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
    bc = max(1, window // 4)  # coarse blocks: 4x4 grid
    bf = max(1, window // 8)  # fine blocks: 8x8 grid
    gc, gf = window // bc, window // bf
    cov_c = (gc * bc) ** 2 / float(window * window)
    cov_f = (gf * bf) ** 2 / float(window * window)
    # float32 rounding of the bounds is far below this slack; keeping a few extra
    # candidates is harmless (they are checked exactly).
    slack = 1e-5

    with torch.no_grad():
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

        qc = _gather_blocks(_box(ts, bc), qy, qx, bc, gc)  # (nq, Dc)
        qf = _gather_blocks(_box(ts, bf), qy, qx, bf, gf)  # (nq, Df)
        box_c, box_f = _box(tr, bc), _box(tr, bf)
        r_nh, r_nw = tr.shape[-2] - window + 1, tr.shape[-1] - window + 1
        band = max(1, key_chunk // r_nw)

        # 1. coarse bound: cov_c * mean |block-mean difference| <= MAD.
        cand: list[list[torch.Tensor]] = [[] for _ in range(nq)]
        for y0 in range(0, r_nh, band):
            y1 = min(r_nh, y0 + band)
            k = _band_blocks(box_c, y0, y1, r_nw, bc, gc)
            lb = torch.cdist(qc, k.contiguous(), p=1.0) * (cov_c / qc.shape[1])
            hit = lb < threshold + slack
            rows, cols = torch.nonzero(hit, as_tuple=True)
            if rows.numel() == 0:
                continue
            rows_c, cols = rows.cpu(), cols.cpu() + y0 * r_nw
            for i in torch.unique(rows_c).tolist():
                cand[i].append(cols[rows_c == i])

        copies = 0
        for i in range(nq):
            if not cand[i]:
                continue
            idx = torch.cat(cand[i])
            # 2. fine bound: cov_f * mean |block-mean difference| <= MAD.
            lb = torch.cat([
                (_gather_blocks(box_f, idx[s : s + 65536] // r_nw, idx[s : s + 65536] % r_nw, bf, gf)
                 - qf[i]).abs().mean(dim=1) * cov_f
                for s in range(0, len(idx), 65536)
            ])
            ok = (lb < threshold + slack).cpu()
            idx, lb = idx[ok], lb.cpu()[ok]
            if idx.numel() == 0:
                continue
            idx = idx[torch.argsort(lb)]
            # 3. exact mean absolute difference, nearest bound first.
            q = extract_patches(ts, window, positions=(qy[i : i + 1], qx[i : i + 1]))
            for s in range(0, len(idx), check_batch):
                kk = idx[s : s + check_batch]
                keys = extract_patches(tr, window, positions=(kk // r_nw, kk % r_nw))
                if bool(((keys - q).abs().mean(dim=1) < threshold).any()):
                    copies += 1
                    break
    return copies / nq if nq else 0.0
