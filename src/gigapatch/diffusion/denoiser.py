"""The closed-form patch denoiser and the image denoiser built on it.

``posterior_mean_exact`` and ``posterior_mean_fused`` compute the same function
(docs/method.md#posterior-mean)::

    D(x) = sum_j w_j y_j,  w_j = softmax_j((2 a x.y_j - a^2 |y_j|^2) / (2 s^2) + log n_j)

The exact form is a chunked float32 GEMM with a streaming (online) softmax over key chunks:
its memory is bounded by ``memory_budget_mb``, never by the image or the patch set. The
fused form is the same computation as softmax attention with q = [x, 1],
k = [a y, -a^2 |y|^2 / 2 + s^2 log n], v = y and scale 1 / s^2, through torch's
``scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA).

``image_denoise`` takes every overlapping patch of an image, denoises it, and folds the
results back with a separable Gaussian window (docs/method.md#fold), in row bands so that
memory stays within the budget.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .numerics import blas_invariant
from .patch_index import PatchIndex
from .priors import PairBias

__all__ = [
    "posterior_mean_exact",
    "posterior_mean_fused",
    "posterior_mean",
    "fold_window",
    "image_denoise",
    "PatchDenoiser",
    "GEMM_DTYPES",
]

#: a function (patches (M, D), a, s) -> denoised patches (M, D)
PatchDenoiser = Callable[[torch.Tensor, float, float], torch.Tensor]

#: ``dtype`` setting -> the torch dtype of the similarity GEMMs
GEMM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _chunk_rows(budget_bytes: int, per_row_bytes: int, total: int) -> int:
    return max(1, min(total, budget_bytes // max(per_row_bytes, 1)))


@blas_invariant
def posterior_mean_exact(x: torch.Tensor, index: PatchIndex, a: float, s: float, *,
                         memory_budget_mb: float = 1024, dtype: str = "float32",
                         pair_bias: PairBias | None = None) -> torch.Tensor:
    """Posterior mean of clean patches given noisy patches, by chunked GEMM.

    Parameters
    ----------
    x : Tensor, shape (M, D)
        Noisy patches x = a y + s e.
    index : PatchIndex
        N clean patches (N, D) with log multiplicities.
    a, s : float
        Signal and noise scale of x (s > 0).
    memory_budget_mb : float
        Bound on the working memory (logit and weight blocks).
    dtype : {"float32", "bfloat16", "float16"}
        Precision of the similarity GEMM; the softmax and the weighted sum stay float32.
    pair_bias : PairBias, optional
        An extra per-(query, entry) logit term (the position prior, ``diffusion.priors``)
        over these M queries and the N entries; ``None`` is the paper's posterior.

    Returns
    -------
    Tensor, shape (M, D), float32
    """
    m, d = x.shape
    n = index.size
    if n == 0:
        raise ValueError("empty patch index")
    x = x.to(torch.float32)
    if a == 0.0 and pair_bias is None:
        # no signal: every query gets the multiplicity-weighted mean of the patch set
        return index.mean().expand(m, d).clone()
    out = torch.empty((m, d), dtype=torch.float32, device=x.device)
    inv2s2 = 1.0 / (2.0 * s * s)
    # per key: bias_j = -a^2 |y_j|^2 / (2 s^2) + log n_j
    bias = index.log_counts - (a * a * inv2s2) * index.sq_norms
    budget = int(memory_budget_mb * 2**20)
    # blocks of (mq x nk) float32 logits, plus their exp, plus the query/output rows
    nk = _chunk_rows(budget // 4, 8 * 64, n)  # at least 64 query rows per key block
    mq = _chunk_rows(budget, 8 * nk + 8 * d, m)
    gemm_dtype = GEMM_DTYPES[dtype]
    keys = index.patches if gemm_dtype == torch.float32 else index.patches.to(gemm_dtype)
    scale = 2.0 * a * inv2s2
    for q0 in range(0, m, mq):
        xq = x[q0:q0 + mq]
        xq_g = xq if gemm_dtype == torch.float32 else xq.to(gemm_dtype)
        run_max = torch.full((xq.shape[0], 1), -math.inf, device=x.device)
        run_sum = torch.zeros((xq.shape[0], 1), device=x.device)
        acc = torch.zeros((xq.shape[0], d), device=x.device)
        for k0 in range(0, n, nk):
            kb = keys[k0:k0 + nk]
            logits = (xq_g @ kb.T).to(torch.float32)
            logits.mul_(scale).add_(bias[k0:k0 + nk])
            if pair_bias is not None:
                logits.add_(pair_bias.block(q0, q0 + xq.shape[0], k0, k0 + kb.shape[0]))
            blk_max = logits.max(dim=1, keepdim=True).values
            new_max = torch.maximum(run_max, blk_max)
            logits.sub_(new_max).exp_()
            corr = torch.exp(run_max - new_max)
            run_sum = run_sum * corr + logits.sum(dim=1, keepdim=True)
            acc = acc * corr + _weighted_sum(logits, index.patches[k0:k0 + nk])
            run_max = new_max
        out[q0:q0 + mq] = acc / run_sum
    return out


#: weights below this (relative to the block's largest, which is 1) are dropped from the
#: weighted sum: e^-40 ~ 4e-18, far below float32 resolution even summed over 10^8 patches
_NEGLIGIBLE = math.exp(-40.0)


def _weighted_sum(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``weights @ values`` that skips weights too small to change a float32 result.

    At low noise nearly all weights underflow: a gather over the few that matter replaces
    the dense GEMM. The result equals the dense product to float32 rounding.

    Parameters
    ----------
    weights : Tensor, shape (M, N), values in [0, 1]
    values : Tensor, shape (N, D)

    Returns
    -------
    Tensor, shape (M, D)
    """
    if weights.device.type != "cpu":
        return weights @ values
    mask = weights > _NEGLIGIBLE
    nnz = int(mask.sum())
    m, n = weights.shape
    # the gather pays off only when a row keeps a handful of weights AND most weights
    # underflow: with few keys (a coarse level's 16 patches) every weight may survive,
    # and the gathered rows (nnz, D) would be n times the dense result
    if nnz > 16 * m or 8 * nnz > m * n:
        return weights @ values
    out = torch.zeros((m, values.shape[1]), dtype=values.dtype, device=values.device)
    # row blocks of about m kept weights each: the gathered block stays the size of `out`
    block = max(1, (m * m) // max(1, nnz))
    for r0 in range(0, m, block):
        rows, cols = mask[r0:r0 + block].nonzero(as_tuple=True)
        contrib = values[cols] * weights[r0:r0 + block][rows, cols, None]
        out.index_add_(0, rows + r0, contrib)
    return out


@blas_invariant
def posterior_mean_fused(x: torch.Tensor, index: PatchIndex, a: float, s: float, *,
                         memory_budget_mb: float = 1024, dtype: str = "float32",
                         pair_bias: PairBias | None = None) -> torch.Tensor:
    """Posterior mean through ``scaled_dot_product_attention``.

    Same parameters and result as :func:`posterior_mean_exact`. The queries are chunked to
    respect ``memory_budget_mb`` when the kernel falls back to materialising the attention
    matrix (CPU); on CUDA the flash / memory-efficient kernels never do.
    """
    m, d = x.shape
    n = index.size
    gemm_dtype = GEMM_DTYPES[dtype]
    dev = x.device
    # q = [x, 1], k = [a y, -a^2 |y|^2 / 2 + s^2 log n], v = y, scale = 1 / s^2
    k = torch.cat([a * index.patches,
                   (-0.5 * a * a * index.sq_norms + s * s * index.log_counts)[:, None]], 1)
    q = torch.cat([x.to(torch.float32), torch.ones((m, 1), device=dev)], 1)
    if pair_bias is not None:
        # -w (u - v)^2 = 2 w u v - w v^2 - w u^2; the last term is constant per query
        # (softmax-invariant): one more q column u and k column 2 w v s^2 per axis, and
        # -w v^2 s^2 in the bias column
        s2 = s * s
        for ax, wa in enumerate(pair_bias.w):
            if wa:
                v = pair_bias.e[:, ax]
                k[:, d] -= wa * v * v * s2
                k = torch.cat([k, (2.0 * wa * s2 * v)[:, None]], 1)
                q = torch.cat([q, pair_bias.q[:, ax, None]], 1)
    extra = q.shape[1] - (d + 1)
    # pad the head dimension to a multiple of 8 (kernel requirement on CUDA); zeros change
    # nothing in the dot products
    pad = (-(d + 1 + extra)) % 8
    if pad:
        q = F.pad(q, (0, pad))
        k = F.pad(k, (0, pad))
    v = F.pad(index.patches, (0, (-d) % 8)) if d % 8 else index.patches
    q, k, v = (t.to(gemm_dtype) for t in (q, k, v))
    if dev.type == "cuda":
        mq = m
    else:
        mq = _chunk_rows(int(memory_budget_mb * 2**20), 8 * n + 8 * d, m)
    outs = []
    for q0 in range(0, m, mq):
        o = F.scaled_dot_product_attention(q[None, None, q0:q0 + mq], k[None, None],
                                           v[None, None], scale=1.0 / (s * s))
        outs.append(o[0, 0, :, :d].to(torch.float32))
    return torch.cat(outs, 0)


def posterior_mean(x: torch.Tensor, index: PatchIndex, a: float, s: float, *,
                   backend: str = "exact", memory_budget_mb: float = 1024,
                   dtype: str = "float32", pair_bias: PairBias | None = None) -> torch.Tensor:
    """Dispatch to the exact or fused posterior mean (see those functions)."""
    if backend == "exact":
        return posterior_mean_exact(x, index, a, s, memory_budget_mb=memory_budget_mb,
                                    dtype=dtype, pair_bias=pair_bias)
    if backend == "fused":
        return posterior_mean_fused(x, index, a, s, memory_budget_mb=memory_budget_mb,
                                    dtype=dtype, pair_bias=pair_bias)
    raise ValueError(f"unknown backend {backend!r}")


def fold_window(patch_size: int, rho: float, *, device: torch.device | str = "cpu") \
        -> torch.Tensor:
    """Separable Gaussian window over a patch's normalised coordinates.

    Parameters
    ----------
    patch_size : int
    rho : float
        Standard deviation on coordinates u, v in [-1, 1]; ``math.inf`` gives all ones.

    Returns
    -------
    Tensor, shape (P, P)
        Peak 1 at the centre.
    """
    if math.isinf(rho):
        return torch.ones((patch_size, patch_size), device=device)
    u = torch.linspace(-1.0, 1.0, patch_size, dtype=torch.float64)
    g = torch.exp(-(u * u) / (2.0 * rho * rho))
    return torch.outer(g, g).to(torch.float32).to(device)


def image_denoise(x: torch.Tensor, denoise_patches: Callable[..., torch.Tensor],
                  patch_size: int, rho: float, *, memory_budget_mb: float = 1024,
                  with_positions: bool = False,
                  wrap: tuple[bool, bool] = (False, False)) -> torch.Tensor:
    """Denoise every overlapping patch of an image and fold them back.

    No padding on a plain axis: pixels near the border are covered by fewer patches and the
    fold normalises by the window weights that actually cover each pixel.

    On a wrapped axis of length ``n`` (a torus, docs/method.md#tileable-and-symmetric-outputs)
    the ``n`` patches that start at each pixel (running past the end onto the start) are
    denoised, each once, and folded back around the torus. The fold is that of the image
    padded circularly by ``P - 1`` on each side, cropped, with the copies past the seam
    taken from the patches already denoised (the first band's ``P - 1`` copies are denoised
    before the loop and kept): each pixel's sum has the same terms in the same order as on
    any window of the torus that contains its patches, so a tile running past the seam
    reproduces it bit for bit.

    Parameters
    ----------
    x : Tensor, shape (C, H, W)
        Noisy image; H, W >= P on a plain axis (any size on a wrapped one).
    denoise_patches : callable
        (M, C*P*P) noisy patches -> (M, C*P*P) denoised patches (float32).
    patch_size : int
    rho : float
        Fold window std (``math.inf`` for plain averaging).
    memory_budget_mb : float
        Bound on the patches held at once: the image is processed in row bands.
    with_positions : bool
        Call ``denoise_patches(patches, ys, xs)`` with the patches' top-left corners
        (M,) int64, local to ``x`` (a position prior needs them; ``0 .. n - 1`` on a
        wrapped axis).
    wrap : (bool, bool)
        (y, x): axes on which ``x`` is a whole torus.

    Returns
    -------
    Tensor, shape (C, H, W), float32
    """
    c, h, w = x.shape
    p = patch_size
    wy, wx = wrap
    if (h < p and not wy) or (w < p and not wx):
        raise ValueError(f"image {h}x{w} is smaller than the patch size {p}")
    py, px = (p - 1 if wy else 0), (p - 1 if wx else 0)
    if py:  # the canvas: the torus padded circularly by P - 1 on each wrapped side
        x = x.index_select(1, torch.arange(-py, h + py, device=x.device) % h)
    if px:
        x = x.index_select(2, torch.arange(-px, w + px, device=x.device) % w)
    hp, wp = x.shape[1:]
    n_rows, n_cols = hp - p + 1, wp - p + 1  # the canvas's patch positions
    # denoised: canvas rows [py, py + h') and columns [px, px + w') (w' = w wrapped, else
    # w - P + 1: the torus's patches); canvas row r < py is torus row (r - py) mod h, one of
    # the "seam" rows [seam, py + h), denoised first and kept; a canvas column is
    # torus column (col - px) mod w
    n_ucols = w if wx else n_cols
    seam = max(h, py) if py else n_rows
    col_of = (torch.arange(n_cols, device=x.device) - px) % w if px else None
    win = fold_window(p, rho, device=x.device)
    win_cols = win.reshape(1, p * p).repeat(c, 1).reshape(c * p * p, 1)  # (C*P*P, 1)
    num = torch.zeros((c, hp, wp), dtype=torch.float32, device=x.device)
    den = torch.zeros((1, hp, wp), dtype=torch.float32, device=x.device)

    def denoised_rows(a: int, b: int) -> torch.Tensor:
        """The denoised patches of canvas rows a .. b-1 (a >= py): (b - a, w', C*P*P)."""
        if b <= a:
            return x.new_empty((0, n_ucols, c * p * p), dtype=torch.float32)
        band = x[:, a:b + p - 1, px:px + n_ucols + p - 1].unsqueeze(0).to(torch.float32)
        q = F.unfold(band, kernel_size=p)[0].T.contiguous()  # (L, C*P*P)
        if with_positions:
            ys = torch.arange(a - py, b - py, device=x.device).repeat_interleave(n_ucols)
            xs = torch.arange(n_ucols, device=x.device).repeat(b - a)
            out = denoise_patches(q, ys, xs)
        else:
            out = denoise_patches(q)
        return out.reshape(b - a, n_ucols, -1)

    # one patch row costs its patches, their denoised copies and the weighted copies
    per_row = n_cols * c * p * p * 4 * 4
    rows = _chunk_rows(int(memory_budget_mb * 2**20) // 2, per_row, n_rows)
    kept = None
    if py:
        kept = torch.cat([denoised_rows(r, min(r + rows, py + h))
                          for r in range(seam, py + h, rows)])
    ones = None
    for r0 in range(0, n_rows, rows):
        r1 = min(n_rows, r0 + rows)  # patch top rows r0 .. r1-1
        parts = []
        if r0 < py:  # copies of seam rows before the torus's first row
            top = torch.arange(r0, min(r1, py), device=x.device)
            parts.append(kept[(top - py) % h - (seam - py)])
        parts.append(denoised_rows(max(r0, py), min(r1, seam)))
        if r1 > seam:
            parts.append(kept[max(r0, seam) - seam:r1 - seam])
        den_patches = torch.cat(parts) if len(parts) > 1 else parts[0]  # (r1 - r0, w', D)
        if col_of is not None:
            den_patches = den_patches[:, col_of]
        cols = den_patches.reshape((r1 - r0) * n_cols, -1).T * win_cols
        bh = r1 - r0 + p - 1
        num[:, r0:r0 + bh] += F.fold(cols.unsqueeze(0), (bh, wp), kernel_size=p)[0]
        # the window weights of this band's L patches, (1, P*P, L): rebuilt when the band's
        # block count changes (the last band is usually shorter)
        if ones is None or ones.shape[2] != cols.shape[1]:
            ones = win.reshape(p * p, 1).expand(p * p, cols.shape[1]).unsqueeze(0)
        den[:, r0:r0 + bh] += F.fold(ones, (bh, wp), kernel_size=p)[0]
    return (num / den)[:, py:py + h, px:px + w]
