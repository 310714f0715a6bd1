"""The fast backend: candidate search in pixel space, linear in the number of pixels.

The exact denoiser (``denoiser.posterior_mean_exact``) weighs every query patch against
every patch of the level: quadratic. The posterior is broad only in the first, noisiest
steps; after them each query's weight sits on one or two patches (docs/DESIGN.md, last
section). So the fast backend splits the schedule:

* ``a = 0`` (s = 1): the answer is the multiplicity-weighted mean patch (exact).
* broad steps (the first ``broad_steps`` calls): exact posterior mean against a small
  *dictionary*: ``dictionary_size`` representatives spread over the level (a regular
  subsample of the entries), each with the multiplicity of the entries nearest to it in
  the reduced (PCA) space. The dictionary equals the index when the index is small enough.
* late steps: per query patch, ``candidates`` entries found by search in a reduced space
  (PCA of the level's patches, ``pca_dims``) on the query scaled by 1/a, then exact
  Gaussian weights over the candidates in full dimension with multiplicities. The first
  late step searches exhaustively (chunked GEMM in PCA space); every later step reranks
  the union of: the query's own previous candidates, the four grid neighbours'
  candidates shifted by the neighbour's offset (PatchMatch propagation, through the
  index's position map), and ``probes`` random entries keyed by global coordinates.

Queries sit on a grid of global coordinates with step ``query_stride`` (plus the last
row/column of the window so that every pixel is covered); ``query_stride = 1`` is the
exact path's stride-1 unfold. The fold is the same Gaussian-window average.

Locality (tiles): every random choice is keyed by (seed, level, step, global y, x), a
query's candidates depend only on its own patch and, per step, on its four grid
neighbours' previous candidates. That dependency spreads ``query_stride`` pixels per step,
never more than the P - 1 pixels per step the image denoiser already spreads, so a window
with the exact sampler's halo (``generator.level_halo``) reproduces the whole image in its
core: ``fast_extra_halo`` is 0 for ``query_stride <= P - 1``.

With ``candidates >= N``, ``dictionary_size >= N`` and ``query_stride = 1`` the backend is
the exact denoiser (to float tolerance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .denoiser import _DTYPES, fold_window, posterior_mean_exact
from .noise import _mix, _srl, stream_key
from .patch_index import PatchIndex
from .schedules import signal_scale

__all__ = ["FastLevel", "FastParams", "FastDenoiser", "build_fast_level", "fast_extra_halo",
           "query_positions", "grid_unfold", "grid_fold", "choose_backend"]


@dataclass(frozen=True)
class FastParams:
    """Knobs of the fast backend (see ``configs/default.yaml``, section denoiser)."""

    candidates: int = 16
    broad_steps: int = 3
    query_stride: int = 1
    probes: int = 4
    broad_stride: int = 4
    init: str = "dictionary"
    dtype: str = "float32"
    memory_budget_mb: float = 1024


@dataclass(frozen=True, eq=False)
class FastLevel:
    """What the fast backend precomputes once per level; read-only, shared by every window.

    Attributes
    ----------
    index : PatchIndex
        The level's entries (with positions and position map).
    mean : Tensor (D,)
        Mean patch (PCA centre).
    basis : Tensor (D, d)
        Top ``d`` principal directions.
    proj : Tensor (N, d)
        Entries in the reduced space, in the search dtype.
    proj_sq : Tensor (N,)
        Their squared norms (float32).
    dictionary : PatchIndex
        Representatives with multiplicities for the broad steps.
    dict_ids : Tensor (M,)
        Entry id (in ``index``) of each representative: the first late step starts from
        the representatives nearest to each query.
    """

    index: PatchIndex
    mean: torch.Tensor
    basis: torch.Tensor
    proj: torch.Tensor
    proj_sq: torch.Tensor
    dictionary: PatchIndex
    dict_ids: torch.Tensor

    def to(self, device: torch.device | str) -> "FastLevel":
        return FastLevel(self.index.to(device), self.mean.to(device), self.basis.to(device),
                         self.proj.to(device), self.proj_sq.to(device),
                         self.dictionary.to(device), self.dict_ids.to(device))


def fast_extra_halo(patch_size: int, query_stride: int = 1, steps: int = 10) -> int:
    """Extra halo (pixels per side) the fast backend needs beyond ``level_halo``.

    A query's candidates depend on its grid neighbours' candidates of the previous step,
    so information travels ``query_stride`` pixels per step; the image denoiser already
    reads ``P - 1`` pixels per step, which covers it whenever ``query_stride <= P - 1``.

    Returns
    -------
    int
        0 for ``query_stride <= P - 1``; otherwise ``steps * (query_stride - (P - 1))``.
    """
    return max(0, query_stride - (patch_size - 1)) * steps


def choose_backend(n_queries: int, n_entries: int, dim: int, device: torch.device | str,
                   flops_limit: float | None = None) -> str:
    """The ``auto`` choice for one level: exact (or fused on CUDA) while one exact step
    costs less than ``flops_limit`` (default 2 GFLOP on CPU, 2 TFLOP on CUDA), else fast."""
    dev = torch.device(device)
    if flops_limit is None:
        flops_limit = 2e12 if dev.type == "cuda" else 2e9
    if 4.0 * n_queries * n_entries * dim <= flops_limit:
        return "fused" if dev.type == "cuda" else "exact"
    return "fast"


# --------------------------------------------------------------------------- level build

def _pca(patches: torch.Tensor, dims: int, max_rows: int = 4096) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """Mean and top ``dims`` principal directions of (a regular subsample of) the patches.

    Subspace iteration on the covariance (a few GEMMs, deterministic start), then an exact
    eigendecomposition of the small projected matrix: far cheaper than a full ``eigh``.
    """
    n, d = patches.shape
    step = max(1, n // max_rows)
    sub = patches[::step].to(torch.float64)
    mean = sub.mean(0)
    cen = sub - mean
    cov = cen.T @ cen / max(1, cen.shape[0] - 1)
    if dims >= d:
        _, vecs = torch.linalg.eigh(cov)
        return mean.to(torch.float32), vecs.flip(1).to(torch.float32).contiguous()
    r = min(d, dims + 16)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn((d, r), generator=gen, dtype=torch.float64).to(cov.device)
    for _ in range(6):
        q, _ = torch.linalg.qr(cov @ q)
    vals, vecs = torch.linalg.eigh(q.T @ cov @ q)
    basis = (q @ vecs.flip(1))[:, :dims]
    return mean.to(torch.float32), basis.to(torch.float32).contiguous()


def _nearest(q: torch.Tensor, keys: torch.Tensor, keys_sq: torch.Tensor, k: int,
             budget_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest keys (squared L2, ties to the lower id) for each query row, chunked."""
    m = q.shape[0]
    n = keys.shape[0]
    k = min(k, n)
    rows = max(1, min(m, budget_bytes // max(1, 8 * n)))
    ids = torch.empty((m, k), dtype=torch.long, device=q.device)
    dist = torch.empty((m, k), dtype=torch.float32, device=q.device)
    for r0 in range(0, m, rows):
        qb = q[r0:r0 + rows]
        d2 = keys_sq[None, :] - 2.0 * (qb.to(keys.dtype) @ keys.T).to(torch.float32)
        v, i = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        ids[r0:r0 + rows] = i
        dist[r0:r0 + rows] = v
    return ids, dist


def build_fast_level(index: PatchIndex, *, pca_dims: int = 32, dictionary_size: int = 2048,
                     dtype: str = "float32", memory_budget_mb: float = 1024) -> FastLevel:
    """Precompute the reduced space and the broad-step dictionary of one level.

    Parameters
    ----------
    index : PatchIndex
        Needs ``positions`` and ``position_map`` (``PatchIndex.from_image`` sets them).
    pca_dims : int
    dictionary_size : int
        Representatives for the broad steps; the dictionary is the index itself when
        ``dictionary_size >= N`` (exact).
    dtype : str
        Search precision of the reduced space.
    """
    if index.positions is None or index.position_map is None:
        raise ValueError("the fast backend needs an index with positions "
                         "(PatchIndex.from_image)")
    n, d = index.patches.shape
    dims = min(pca_dims, d)
    mean, basis = _pca(index.patches, dims)
    proj = (index.patches - mean) @ basis
    proj_sq = (proj * proj).sum(1)
    if dictionary_size >= n:
        dictionary = index
        dict_ids = torch.arange(n, device=proj.device)
    else:
        # a regular subsample (entries are in positional order: spread over the image),
        # each representative weighted by the entries nearest to it in the reduced space
        reps = torch.linspace(0, n - 1, dictionary_size, device=index.patches.device)
        reps = reps.round().long().unique()
        near, _ = _nearest(proj, proj[reps], proj_sq[reps], 1, int(memory_budget_mb * 2**20))
        mult = torch.zeros(reps.numel(), dtype=torch.float32, device=proj.device)
        mult.index_add_(0, near[:, 0], index.log_counts.exp())
        keep = mult > 0
        dict_ids = reps[keep]
        dictionary = PatchIndex.from_patches(index.patches[dict_ids], index.patch_size,
                                             index.channels, mult[keep])
    return FastLevel(index, mean, basis, proj.to(_DTYPES[dtype]).contiguous(), proj_sq,
                     dictionary, dict_ids)


# --------------------------------------------------------------------------- query grid

def query_positions(lo: int, size: int, patch_size: int, stride: int) -> torch.Tensor:
    """Top-left coordinates (local to a window) of the query patches along one axis.

    Global multiples of ``stride`` inside the window, plus the window's last patch position
    so that every pixel is covered.

    Parameters
    ----------
    lo : int
        Global coordinate of the window's first pixel.
    size : int
        Window length (>= P).
    """
    last = lo + size - patch_size
    first = -(-lo // stride) * stride
    pos = list(range(first, last + 1, stride))
    if not pos or pos[-1] != last:
        pos.append(last)
    return torch.tensor(pos, dtype=torch.long) - lo


def _grid_index(rows: torch.Tensor, cols: torch.Tensor, p: int, width: int) -> torch.Tensor:
    o = torch.arange(p, device=rows.device)
    yy = (rows[:, None] + o[None, :]) * width  # (nr, P)
    xx = cols[:, None] + o[None, :]  # (nc, P)
    return (yy[:, None, :, None] + xx[None, :, None, :]).reshape(-1)  # (nr*nc*P*P)


def grid_unfold(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, p: int) \
        -> torch.Tensor:
    """Patches of ``x`` (C, H, W) at the grid rows x cols: (nr * nc, C * P * P)."""
    c, h, w = x.shape
    q = rows.numel() * cols.numel()
    idx = _grid_index(rows, cols, p, w)
    vals = x.reshape(c, h * w)[:, idx].reshape(c, q, p * p)
    return vals.permute(1, 0, 2).reshape(q, c * p * p).contiguous()


def grid_fold(patches: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, p: int,
              win: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Window-weighted average of patches placed at the grid: the image (C, H, W)."""
    h, w = hw
    q = patches.shape[0]
    c = patches.shape[1] // (p * p)
    idx = _grid_index(rows, cols, p, w)
    wv = win.reshape(1, 1, p * p)
    vals = (patches.reshape(q, c, p * p) * wv).permute(1, 0, 2).reshape(c, q * p * p)
    num = torch.zeros((c, h * w), dtype=torch.float32, device=patches.device)
    num.index_add_(1, idx, vals)
    den = torch.zeros((h * w,), dtype=torch.float32, device=patches.device)
    den.index_add_(0, idx, wv.reshape(p * p).repeat(q))
    return (num / den.clamp_min(1e-30)).reshape(c, h, w)


# --------------------------------------------------------------------------- denoiser

class FastDenoiser:
    """``denoise(x, s)`` of the fast backend for one level and one window.

    Stateful: it keeps each query's candidates between the calls of one sampling run.
    ``bind(origin=, seed=, level=)`` returns a fresh denoiser for a window whose top-left
    pixel has global coordinates ``origin`` (``generator.sample_level`` calls it); a call
    with a noise level not below the previous one also starts a new run.
    """

    def __init__(self, level: FastLevel, *, patch_size: int, rho: float,
                 params: FastParams = FastParams(), origin: tuple[int, int] = (0, 0),
                 seed: int = 0, level_id: int = 0) -> None:
        self.level = level
        self.patch_size = patch_size
        self.rho = rho
        self.params = params
        self.origin = origin
        self.seed = seed
        self.level_id = level_id
        self._reset()

    def bind(self, *, origin: tuple[int, int] = (0, 0), seed: int = 0,
             level: int = 0) -> "FastDenoiser":
        return FastDenoiser(self.level, patch_size=self.patch_size, rho=self.rho,
                            params=self.params, origin=origin, seed=seed, level_id=level)

    def _reset(self) -> None:
        self._step = 0
        self._last_s = math.inf
        self._cand: torch.Tensor | None = None

    # -- one call --------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, s: float) -> torch.Tensor:
        if s >= self._last_s:
            self._reset()
        self._last_s = s
        step = self._step
        self._step += 1
        p = self.patch_size
        c, h, w = x.shape
        a = signal_scale(s)
        broad = step < self.params.broad_steps
        g = self.params.query_stride
        if broad or a == 0.0:
            g = max(g, self.params.broad_stride)
        rows = query_positions(self.origin[0], h, p, g).to(x.device)
        cols = query_positions(self.origin[1], w, p, g).to(x.device)
        win = fold_window(p, self.rho, device=x.device)
        lv = self.level
        if a == 0.0:
            mean = lv.index.mean()
            out = mean.expand(rows.numel() * cols.numel(), -1)
        else:
            xq = grid_unfold(x.to(torch.float32), rows, cols, p)
            if broad or lv.index.size <= self.params.candidates:
                dic = lv.dictionary if broad else lv.index
                out = posterior_mean_exact(xq, dic, a, s,
                                           memory_budget_mb=self.params.memory_budget_mb,
                                           dtype=self.params.dtype)
            else:
                out = self._candidate_step(xq, a, s, step, rows, cols)
        return grid_fold(out, rows, cols, p, win, (h, w))

    # -- candidates ------------------------------------------------------------------
    def _probes(self, step: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        n = self.level.index.size
        gy = (rows + self.origin[0]).to(torch.int64)
        gx = (cols + self.origin[1]).to(torch.int64)
        counter = ((gy[:, None] << 32) + gx[None, :]).reshape(-1)
        outs = []
        for j in range(self.params.probes):
            key = stream_key(self.seed, self.level_id, step, 1_000_003 + j)
            hsh = _mix(counter ^ key)
            outs.append(_srl(hsh, 11) % n)
        return torch.stack(outs, 1) if outs else counter.new_empty((counter.numel(), 0))

    def _propagate(self, prev: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) \
            -> torch.Tensor:
        """The four grid neighbours' candidates shifted onto each query: (Q, 4k)."""
        idx = self.level.index
        nr, nc, k = rows.numel(), cols.numel(), prev.shape[1]
        hp, wp = idx.position_map.shape
        i = torch.arange(nr, device=prev.device)
        j = torch.arange(nc, device=prev.device)
        ii = torch.stack([(i - 1).clamp_min(0), (i + 1).clamp_max(nr - 1), i, i])  # (4, nr)
        jj = torch.stack([j, j, (j - 1).clamp_min(0), (j + 1).clamp_max(nc - 1)])  # (4, nc)
        flat = (ii[:, :, None] * nc + jj[:, None, :]).reshape(4, nr * nc)
        nb = prev[flat]  # (4, Q, k): each neighbour's candidates
        dy = (rows[None, :] - rows[ii])[:, :, None].expand(4, nr, nc).reshape(4, -1, 1)
        dx = (cols[None, :] - cols[jj])[:, None, :].expand(4, nr, nc).reshape(4, -1, 1)
        pos = idx.positions[nb]  # (4, Q, k, 2)
        py = pos[..., 0] + dy
        px = pos[..., 1] + dx
        ok = (py >= 0) & (py < hp) & (px >= 0) & (px < wp)
        shifted = idx.position_map.reshape(-1)[py.clamp(0, hp - 1) * wp + px.clamp(0, wp - 1)]
        out = torch.where(ok, shifted, nb)  # (4, Q, k)
        return out.permute(1, 0, 2).reshape(nr * nc, 4 * k)

    def _candidate_step(self, xq: torch.Tensor, a: float, s: float, step: int,
                        rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        lv = self.level
        idx = lv.index
        k = min(self.params.candidates, idx.size)
        budget = int(self.params.memory_budget_mb * 2**20)
        z = (xq / a - lv.mean) @ lv.basis  # (Q, d): the query as an estimate of y
        if self._cand is None:
            if self.params.init == "exhaustive" or lv.dict_ids.numel() >= idx.size:
                cand, _ = _nearest(z, lv.proj, lv.proj_sq, k, budget)
            else:
                # nearest representatives, then one round of propagation and probes
                d_ids = lv.dict_ids
                near, _ = _nearest(z, lv.proj[d_ids], lv.proj_sq[d_ids], k, budget)
                start = d_ids[near]
                union = torch.cat([start, self._propagate(start, rows, cols),
                                   self._probes(step, rows, cols)], 1)
                cand = self._rerank(z, union, k, budget)
        else:
            union = torch.cat([self._cand, self._propagate(self._cand, rows, cols),
                               self._probes(step, rows, cols)], 1)
            cand = self._rerank(z, union, k, budget)
        out, cand = self._weights(xq, cand, a, s, budget)
        self._cand = cand
        return out

    def _rerank(self, z: torch.Tensor, union: torch.Tensor, k: int, budget: int) \
            -> torch.Tensor:
        """Top-k distinct entries of each row of ``union`` by reduced-space distance."""
        lv = self.level
        q, u = union.shape
        d = lv.proj.shape[1]
        rows = max(1, min(q, budget // max(1, u * (d + 4) * 4 * 2)))
        out = torch.empty((q, k), dtype=torch.long, device=union.device)
        for r0 in range(0, q, rows):
            un, _ = torch.sort(union[r0:r0 + rows], dim=1)
            dup = torch.zeros_like(un, dtype=torch.bool)
            dup[:, 1:] = un[:, 1:] == un[:, :-1]
            pr = lv.proj[un]  # (r, u, d)
            zb = z[r0:r0 + rows].to(pr.dtype)
            dist = lv.proj_sq[un] - 2.0 * torch.bmm(pr, zb[:, :, None])[..., 0].float()
            dist = dist.masked_fill(dup, math.inf)
            # ties broken by the (sorted) entry id: deterministic whatever the union order
            _, pick = torch.topk(dist, min(k, u), dim=1, largest=False, sorted=True)
            out[r0:r0 + rows] = torch.gather(un, 1, pick)
        return out

    def _weights(self, xq: torch.Tensor, cand: torch.Tensor, a: float, s: float,
                 budget: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact Gaussian weights over each row's candidates, full dimension, float32."""
        idx = self.level.index
        q, k = cand.shape
        dim = idx.dim
        rows = max(1, min(q, budget // max(1, k * dim * 4 * 2)))
        out = torch.empty((q, dim), dtype=torch.float32, device=xq.device)
        inv2s2 = 1.0 / (2.0 * s * s)
        for r0 in range(0, q, rows):
            cb = cand[r0:r0 + rows]
            # duplicates (few unique entries) count once
            sc, _ = torch.sort(cb, dim=1)
            dup = torch.zeros_like(sc, dtype=torch.bool)
            dup[:, 1:] = sc[:, 1:] == sc[:, :-1]
            y = idx.patches[sc]  # (r, k, D)
            xb = xq[r0:r0 + rows]
            dots = torch.bmm(y, xb[:, :, None])[..., 0]
            logits = (2.0 * a * dots - a * a * idx.sq_norms[sc]) * inv2s2 + idx.log_counts[sc]
            logits = logits.masked_fill(dup, -math.inf)
            wts = torch.softmax(logits, 1)
            out[r0:r0 + rows] = torch.bmm(wts[:, None, :], y)[:, 0]
            cand[r0:r0 + rows] = sc
        return out, cand


def make_fast_denoise(index: PatchIndex, *, patch_size: int, rho: float,
                      params: FastParams = FastParams(), pca_dims: int = 32,
                      dictionary_size: int = 2048, level: FastLevel | None = None) \
        -> FastDenoiser:
    """A fast-backend ``denoise(x, s)`` for one level (unbound: origin (0, 0), seed 0)."""
    if level is None:
        level = build_fast_level(index, pca_dims=pca_dims, dictionary_size=dictionary_size,
                                 dtype=params.dtype, memory_budget_mb=params.memory_budget_mb)
    return FastDenoiser(level, patch_size=patch_size, rho=rho, params=params)


__all__ += ["make_fast_denoise"]
