"""The fast backend: candidate search in pixel space, linear in the number of pixels.

The exact denoiser (``denoiser.posterior_mean_exact``) weighs every query patch against
every patch of the level: quadratic. The posterior is broad in the noisy steps (measured at
full reference size, 186x248, finest level: an effective 700-23000 patches for s >= 0.67,
35-180 at s = 0.56-0.44, under 10 below s = 0.35; benchmarks/bench_posterior.py) and
narrow after them (docs/method.md#fast-backend). So the fast backend splits the schedule:

* ``a = 0`` (s = 1): the answer is the multiplicity-weighted mean patch (exact).
* broad steps (at most the first ``broad_steps`` calls, and only while the level's own
  reference patches noised at s keep a median dictionary ESS >= ``broad_min_ess``:
  ``dictionary_ess``, global per level): exact posterior mean against a small
  *dictionary*: ``dictionary_size`` representatives spread over the level (a regular
  subsample of the entries), each with the multiplicity of the entries nearest to it in
  the reduced (PCA) space. The dictionary equals the index when the index is small enough.
  Where the level's posterior is already narrow for the dictionary
  (``dictionary_ess(level, s) < expand_below_ess``, global per level like the switch),
  each query's ``expand_groups`` heaviest representatives are replaced by the entries of
  their groups (``EXPAND_SEEDS`` at most per group, standing for the whole group's
  multiplicity) and the mean is the exact posterior over that union: measured on 10
  places50 references, the dictionary alone misses the exact mean by 10-38% at a dictionary
  ESS under 32 (benchmarks/bench_posterior.py; BENCHMARKS.md, "Expanding the heaviest
  groups").
* late steps: per query patch, ``candidates`` entries found by search in a reduced space
  (PCA of the level's patches, ``pca_dims``) on the query scaled by 1/a, then exact
  Gaussian weights over the candidates in full dimension with multiplicities. The first
  late step seeds each query from the *groups* of its ``GROUP_REPS`` nearest
  representatives (the entries nearest to each representative, ``GROUP_SEEDS`` per
  group; ``init="groups"``; ``"dictionary"`` takes the representatives themselves,
  ``"exhaustive"`` a chunked GEMM over every entry in PCA space), keeps the best by
  reduced-space distance and adds one round of propagation and probes; every later step
  reranks the union of: the query's own previous candidates, the four grid neighbours'
  candidates shifted by the neighbour's offset (PatchMatch propagation, through the
  index's position map), ``probes`` random entries keyed by global coordinates, and the
  groups of the query's ``reseed_groups`` nearest representatives (an inverted-file probe
  of the level, as at the first late step: the posterior's best patch moves as the noise
  falls, and propagation and probes alone lost it for 20-25% of the finest level's
  queries at s <= 0.22, which cost 3-29% of coherence against the exact sampler at
  186x248; BENCHMARKS.md, "Reseeding every late step").

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
from dataclasses import dataclass, field

import torch

from .denoiser import GEMM_DTYPES, fold_window, posterior_mean_exact
from .noise import mix64, srl, stream_key
from .numerics import blas_invariant, for_row_blocks
from .patch_index import CHUNK_BYTES, PatchIndex
from .priors import PairBias, PositionPrior
from .schedules import signal_scale
from .settings import DenoiserSettings

__all__ = ["FastLevel", "FastDenoiser", "build_fast_level", "fast_extra_halo",
           "query_positions", "grid_unfold", "grid_fold", "choose_backend", "dictionary_ess"]


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
    members : Tensor (N,)
        Entry ids grouped by their nearest representative (each group in entry order).
    member_start, member_count : Tensor (M,)
        Where representative m's group starts in ``members`` and how many entries it has:
        the first late step seeds a query from the groups of its nearest representatives.
    """

    index: PatchIndex
    mean: torch.Tensor
    basis: torch.Tensor
    proj: torch.Tensor
    proj_sq: torch.Tensor
    dictionary: PatchIndex
    dict_ids: torch.Tensor
    members: torch.Tensor
    member_start: torch.Tensor
    member_count: torch.Tensor
    #: ``dictionary_ess`` per noise level s, filled on first use (a pure function of the
    #: level and s: every window and thread computes the same value)
    ess_cache: dict = field(default_factory=dict, repr=False)

    def to(self, device: torch.device | str) -> "FastLevel":
        return FastLevel(self.index.to(device), self.mean.to(device), self.basis.to(device),
                         self.proj.to(device), self.proj_sq.to(device),
                         self.dictionary.to(device), self.dict_ids.to(device),
                         self.members.to(device), self.member_start.to(device),
                         self.member_count.to(device))


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
    """The ``auto`` choice for one level: exact while one exact step costs less than
    ``flops_limit`` (default 2 GFLOP on CPU, 2 TFLOP on CUDA), else fast.

    Not ``fused`` on CUDA: its fp32 attention kernel drifted from the exact float32 result
    at low noise on an H200 (tests/diffusion/test_posterior.py), and for levels this small the
    chunked GEMM costs no more."""
    dev = torch.device(device)
    if flops_limit is None:
        flops_limit = 2e12 if dev.type == "cuda" else 2e9
    if 4.0 * n_queries * n_entries * dim <= flops_limit:
        return "exact"
    return "fast"


#: reference patches (a regular subsample of the entries) that ``dictionary_ess`` noises
ESS_PROBES = 128

#: broad steps (``expand_groups`` > 0): at most this many entries of each expanded group
EXPAND_SEEDS = 32
#: query rows per block of an expanded broad step
EXPAND_ROWS = 64

#: first late step with ``init="groups"``: the groups of the query's GROUP_REPS nearest
#: representatives seed it, GROUP_SEEDS entries from each
GROUP_REPS = 4
GROUP_SEEDS = 16

# --------------------------------------------------------------------------- level build

#: bytes of one block of a per-row computation (``_nearest``'s distances, ``_rerank``'s and
#: ``_weights``' gathered candidates): small enough to
#: be reused from the heap (below glibc's largest mmap threshold, 32 MiB). A block sized by
#: the whole working budget (hundreds of MB) was a fresh mapping every call, zero-filled
#: page by page: with 16 candidates the gather took 3.0 s of a 8.5 s sample, 1.4 s with
#: these blocks (profile of one places50/1 sample, 1 thread; BENCHMARKS.md)
BLOCK_BYTES = 8 << 20


def _block_rows(q: int, row_bytes: int, budget: int) -> int:
    """Rows per block of a per-query computation taking ``row_bytes`` per row (twice that
    within ``budget``), at most ``BLOCK_BYTES`` per block."""
    return max(1, min(q, budget // max(1, 2 * row_bytes), BLOCK_BYTES // max(1, row_bytes)))


def _whole_blocks(chunk: int, q: int, n_keys: int, budget: int) -> int:
    """``chunk`` rounded down to whole row blocks of ``_nearest`` over ``n_keys`` keys for
    ``q`` queries (at least one block): ``_nearest`` called chunk by chunk then computes
    the blocks of one call over every query, bit for bit."""
    nb = _block_rows(q, 4 * n_keys, budget)
    return max(nb, chunk // nb * nb)


@blas_invariant
def _pca(patches: torch.Tensor, dims: int, max_rows: int = 2048) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """Mean and top ``dims`` principal directions of (a regular subsample of) the patches.

    Subspace iteration on the centred data (a few thin GEMMs, deterministic start), then
    an exact eigendecomposition of the small projected covariance: far cheaper than
    forming the D x D covariance and a full ``eigh``.
    """
    n, d = patches.shape
    step = max(1, n // max_rows)
    sub = patches[::step].to(torch.float32)
    mean = sub.mean(0)
    cen = sub - mean
    r = min(d, dims + 8, cen.shape[0])
    gen = torch.Generator().manual_seed(0)
    q = torch.randn((d, r), generator=gen).to(cen.device)
    for _ in range(4):
        q, _ = torch.linalg.qr(cen.T @ (cen @ q))
    small = (cen @ q).to(torch.float64)
    _, vecs = torch.linalg.eigh(small.T @ small)
    basis = (q.to(torch.float64) @ vecs.flip(1))[:, :min(dims, r)]
    return mean, basis.to(torch.float32).contiguous()


@blas_invariant
def _nearest(q: torch.Tensor, keys: torch.Tensor, keys_sq: torch.Tensor, k: int,
             budget_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest keys (squared L2, ties to the lower id) for each query row, chunked."""
    m = q.shape[0]
    n = keys.shape[0]
    k = min(k, n)
    rows = _block_rows(m, 4 * n, budget_bytes)  # (rows, n) float32 distances per block
    ids = torch.empty((m, k), dtype=torch.long, device=q.device)
    dist = torch.empty((m, k), dtype=torch.float32, device=q.device)
    for r0 in range(0, m, rows):
        qb = q[r0:r0 + rows]
        # in place: one block-sized temporary instead of three; (-2g) + |k|^2 is bit for
        # bit |k|^2 - 2g (scaling by 2 is exact, a - b is a + (-b))
        d2 = (qb.to(keys.dtype) @ keys.T).to(torch.float32).mul_(-2.0).add_(keys_sq[None, :])
        if k == 1:  # min: half the time of topk(1) (the level build's assignment)
            v, i = d2.min(dim=1, keepdim=True)
        else:
            v, i = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        ids[r0:r0 + rows] = i
        dist[r0:r0 + rows] = v
    return ids, dist


@blas_invariant
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
    # in row blocks: the centred (N, D) copy never exists at once (one block per GEMM; a
    # level under CHUNK_BYTES of patches is one block, as before)
    proj = torch.empty((n, basis.shape[1]), dtype=torch.float32, device=index.patches.device)
    rows = max(1, CHUNK_BYTES // (d * 4))
    for r0 in range(0, n, rows):
        proj[r0:r0 + rows] = (index.patches[r0:r0 + rows] - mean) @ basis
    proj_sq = (proj * proj).sum(1)
    if dictionary_size >= n:
        dictionary = index
        dict_ids = torch.arange(n, device=proj.device)
        members = dict_ids
        member_start = dict_ids
        member_count = torch.ones(n, dtype=torch.long, device=proj.device)
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
        # each representative's group of entries (every kept one has at least one)
        members = torch.sort(near[:, 0], stable=True).indices
        count = torch.bincount(near[:, 0], minlength=reps.numel())
        start = torch.cumsum(count, 0) - count
        member_start, member_count = start[keep], count[keep]
    return FastLevel(index, mean, basis, proj.to(GEMM_DTYPES[dtype]).contiguous(), proj_sq,
                     dictionary, dict_ids, members, member_start, member_count)


@blas_invariant
def dictionary_ess(level: FastLevel, s: float) -> float:
    """Median effective size of the dictionary posterior for the level's own patches at s.

    ``ESS_PROBES`` entries (a regular subsample, in positional order) are noised at s,
    ``x = a y + s e`` with ``e`` from a fixed generator (seed 0, the same on every device),
    weighted over the dictionary's representatives (with multiplicities, float64 softmax)
    and each gives ``1 / sum_m w_m^2``; the median is returned (cached per s on the level).

    It depends on the level and s only, never on a window's content, so the switch from
    the dictionary to candidate search that it decides is the same for every tile.

    Parameters
    ----------
    level : FastLevel
    s : float
        Noise level (0 < s < 1).

    Returns
    -------
    float
        1 (one representative holds all the mass) to M (uniform over the dictionary).
    """
    key = float(s)
    hit = level.ess_cache.get(key)
    if hit is not None:
        return hit
    idx, dic = level.index, level.dictionary
    n, d = idx.patches.shape
    sel = torch.linspace(0, n - 1, min(ESS_PROBES, n)).round().long().unique()
    gen = torch.Generator().manual_seed(0)
    e = torch.randn((sel.numel(), d), generator=gen, dtype=torch.float64)
    a = signal_scale(s)
    y = idx.patches[sel.to(idx.patches.device)].double().cpu()
    x = a * y + s * e
    keys = dic.patches.double().cpu()
    logits = (2.0 * a * (x @ keys.T) - a * a * (keys * keys).sum(1)[None, :]) / (2.0 * s * s)
    w = torch.softmax(logits + dic.log_counts.double().cpu()[None, :], 1)
    ess = float((1.0 / (w * w).sum(1)).median())
    level.ess_cache[key] = ess
    return ess


# --------------------------------------------------------------------------- query grid

def query_positions(lo: int, size: int, patch_size: int, stride: int, *,
                    wrap: bool = False) -> torch.Tensor:
    """Top-left coordinates (local to a window) of the query patches along one axis.

    Global multiples of ``stride`` inside the window, plus the window's last patch position
    so that every pixel is covered. On a wrapped axis (the window is a whole torus) every
    pixel may start a patch: the multiples of ``stride`` among all ``size`` pixels.

    Parameters
    ----------
    lo : int
        Global coordinate of the window's first pixel.
    size : int
        Window length (>= P on a plain axis).
    wrap : bool
        The axis is a torus of length ``size`` (patches run past its end onto its start).
    """
    first = -(-lo // stride) * stride
    if wrap:
        return torch.arange(first, lo + size, stride, dtype=torch.long) - lo
    last = lo + size - patch_size
    pos = list(range(first, last + 1, stride))
    if not pos or pos[-1] != last:
        pos.append(last)
    return torch.tensor(pos, dtype=torch.long) - lo


def _grid_index(rows: torch.Tensor, cols: torch.Tensor, p: int, width: int,
                torus: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Flat pixel indices of the grid's patches (nr*nc*P*P); ``torus``: the (height, width)
    of a wrapped axis (0: plain), on which a patch's pixels are taken modulo it."""
    o = torch.arange(p, device=rows.device)
    yy = rows[:, None] + o[None, :]  # (nr, P)
    if torus[0]:
        yy = yy % torus[0]
    yy = yy * width
    xx = cols[:, None] + o[None, :]  # (nc, P)
    if torus[1]:
        xx = xx % torus[1]
    return (yy[:, None, :, None] + xx[None, :, None, :]).reshape(-1)  # (nr*nc*P*P)


def grid_unfold(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, p: int, *,
                wrap: tuple[bool, bool] = (False, False)) -> torch.Tensor:
    """Patches of ``x`` (C, H, W) at the grid rows x cols: (nr * nc, C * P * P); on a
    wrapped axis (y, x) a patch running past the end continues at the start (a torus)."""
    c, h, w = x.shape
    q = rows.numel() * cols.numel()
    idx = _grid_index(rows, cols, p, w, (h if wrap[0] else 0, w if wrap[1] else 0))
    vals = x.reshape(c, h * w)[:, idx].reshape(c, q, p * p)
    return vals.permute(1, 0, 2).reshape(q, c * p * p).contiguous()


def _fold_into(num: torch.Tensor, den: torch.Tensor, patches: torch.Tensor,
               rows: torch.Tensor, cols: torch.Tensor, p: int, win: torch.Tensor,
               width: int, torus: tuple[int, int] = (0, 0)) -> None:
    q = patches.shape[0]
    c = patches.shape[1] // (p * p)
    idx = _grid_index(rows, cols, p, width, torus)
    wv = win.reshape(1, 1, p * p)
    vals = (patches.reshape(q, c, p * p) * wv).permute(1, 0, 2).reshape(c, q * p * p)
    num.index_add_(1, idx, vals)
    den.index_add_(0, idx, wv.reshape(p * p).repeat(q))


def grid_fold(patches: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, p: int,
              win: torch.Tensor, hw: tuple[int, int], *,
              wrap: tuple[bool, bool] = (False, False)) -> torch.Tensor:
    """Window-weighted average of patches placed at the grid: the image (C, H, W); on a
    wrapped axis (y, x) what runs past the end is added at the start (a torus)."""
    h, w = hw
    c = patches.shape[1] // (p * p)
    num = torch.zeros((c, h * w), dtype=torch.float32, device=patches.device)
    den = torch.zeros((h * w,), dtype=torch.float32, device=patches.device)
    _fold_into(num, den, patches, rows, cols, p, win, w,
               (h if wrap[0] else 0, w if wrap[1] else 0))
    return (num / den.clamp_min(1e-30)).reshape(c, h, w)


# --------------------------------------------------------------------------- denoiser

def _rows(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` for a 2-d table and any shape of ids: (*ids.shape, table.shape[1]).

    ``index_select`` on the flat ids: the same values as advanced indexing, several times
    faster on the CPU for the (queries x candidates) gathers of every step."""
    return table.index_select(0, ids.reshape(-1)).reshape(*ids.shape, table.shape[1])


class FastDenoiser:
    """``denoise(x, s)`` of the fast backend for one level and one window.

    Stateful: it keeps each query's candidates between the calls of one sampling run.
    ``bind(origin=, seed=, level=)`` returns a fresh denoiser for a window whose top-left
    pixel has global coordinates ``origin`` (``generator.sample_level`` calls it); a call
    with a noise level not below the previous one also starts a new run.
    """

    def __init__(self, level: FastLevel, *, patch_size: int, rho: float,
                 params: DenoiserSettings, origin: tuple[int, int] = (0, 0),
                 seed: int = 0, level_id: int = 0, period: tuple[int, int] = (0, 0),
                 prior: PositionPrior | None = None,
                 wrap: tuple[bool, bool] = (False, False)) -> None:
        self.level = level
        self.patch_size = patch_size
        self.rho = rho
        self.params = params
        self.origin = origin
        self.seed = seed
        self.level_id = level_id
        self.period = period
        #: (y, x): the window is a whole torus along these axes (``on_torus``)
        self.wrap = wrap
        # the position prior (diffusion.priors) reweighs the same supports (mean, dictionary,
        # index, candidates) by position; the candidate search itself stays by appearance
        self.prior = prior
        if prior is not None:
            self._e_index = prior.entry_coords(level.index.positions)
            self._e_dict = self._e_index[level.dict_ids]
        self._reset()

    def bind(self, *, origin: tuple[int, int] = (0, 0), seed: int = 0, level: int = 0,
             period: tuple[int, int] = (0, 0)) -> "FastDenoiser":
        """``period``: a tileable level's size on its wrapped axes (0: no wrap); the probes
        are keyed by coordinates modulo it."""
        return FastDenoiser(self.level, patch_size=self.patch_size, rho=self.rho,
                            params=self.params, origin=origin, seed=seed, level_id=level,
                            period=period, prior=self.prior, wrap=self.wrap)

    def on_torus(self, wrap: tuple[bool, bool]) -> "FastDenoiser":
        """The same denoiser on a window that is a whole torus along the wrapped axes
        (y, x): the query grid covers every pixel of a wrapped axis, patches and the fold
        wrap past its end, and grid neighbours are neighbours across the seam."""
        return FastDenoiser(self.level, patch_size=self.patch_size, rho=self.rho,
                            params=self.params, origin=self.origin, seed=self.seed,
                            level_id=self.level_id, period=self.period, prior=self.prior,
                            wrap=(bool(wrap[0]), bool(wrap[1])))

    def _query_coords(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor | None:
        """Normalised centres of the grid rows x cols (row-major), or None without prior."""
        if self.prior is None:
            return None
        ys = (rows.to(torch.int64) + self.origin[0]).repeat_interleave(cols.numel())
        xs = (cols.to(torch.int64) + self.origin[1]).repeat(rows.numel())
        return self.prior.query_coords(ys, xs)

    def _reset(self) -> None:
        self._step = 0
        self._broad = True
        self._last_s = math.inf
        self._cand: torch.Tensor | None = None
        self._grid: tuple | None = None
        self._expand = False

    # -- one call --------------------------------------------------------------------
    @blas_invariant
    def __call__(self, x: torch.Tensor, s: float) -> torch.Tensor:
        if s >= self._last_s:
            self._reset()
        self._last_s = s
        step = self._step
        self._step += 1
        p = self.patch_size
        c, h, w = x.shape
        a = signal_scale(s)
        lv = self.level
        prm = self.params
        # the dictionary while the step count allows and the level's posterior is still
        # broad (``dictionary_ess``: global per level and s); once left, never again
        a_pos = 0.0 < a
        # (a dictionary that is the whole index is exact at any ESS)
        self._broad = broad = self._broad and step < prm.broad_steps and (
            not a_pos or prm.broad_min_ess <= 0 or lv.dictionary is lv.index
            or dictionary_ess(lv, s) >= prm.broad_min_ess)
        g = prm.query_stride
        if broad or a == 0.0:
            g = max(g, prm.broad_stride)
        rows = query_positions(self.origin[0], h, p, g, wrap=self.wrap[0]).to(x.device)
        cols = query_positions(self.origin[1], w, p, g, wrap=self.wrap[1]).to(x.device)
        torus = (h if self.wrap[0] else 0, w if self.wrap[1] else 0)
        nr, nc = rows.numel(), cols.numel()
        win = fold_window(p, self.rho, device=x.device)
        x = x.to(torch.float32)
        dim = lv.index.dim
        budget = int(prm.memory_budget_mb * 2**20)
        # query rows per band: unfolded queries, outputs and the fold's indices
        band = max(1, min(nr, budget // max(1, nc * (dim * 4 * 3 + p * p * 16))))
        num = torch.zeros((c, h * w), dtype=torch.float32, device=x.device)
        den = torch.zeros((h * w,), dtype=torch.float32, device=x.device)
        # the heaviest groups expanded where the dictionary's posterior is narrow enough
        # for them to matter (``dictionary_ess``: global per level and s, like the switch)
        self._expand = broad and a_pos and prm.expand_groups > 0 \
            and lv.dictionary is not lv.index \
            and dictionary_ess(lv, s) < prm.expand_below_ess
        if a == 0.0:
            mode = "mean"
        elif broad:
            mode = "dictionary"
        elif lv.index.size <= prm.candidates:
            mode = "index"
        else:
            mode = "candidates"
        # one band: the search's unfolded queries are the weights' too (unfolded once)
        xq_all = grid_unfold(x, rows, cols, p, wrap=self.wrap) \
            if mode == "candidates" and nr <= band else None
        cand = self._search(x, a, step, rows, cols, band, budget, xq_all) \
            if mode == "candidates" else None
        for r0 in range(0, nr, band):
            rb = rows[r0:r0 + band]
            sel = None if cand is None else cand[r0 * nc:(r0 + rb.numel()) * nc]
            xq = xq_all if xq_all is not None else \
                None if mode == "mean" and self.prior is None else \
                grid_unfold(x, rb, cols, p, wrap=self.wrap)
            out = self._patch_means(xq, rb.numel() * nc, a, s, mode, sel, budget,
                                    self._query_coords(rb, cols))
            _fold_into(num, den, out, rb, cols, p, win, w, torus)
        if cand is not None:
            self._cand = cand
        self._grid = (rows, cols, mode, a, s)
        return (num / den.clamp_min(1e-30)).reshape(c, h, w)

    def _patch_means(self, xq: torch.Tensor | None, q: int, a: float, s: float, mode: str,
                     cand: torch.Tensor | None, budget: int,
                     qc: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior means (q, D) of the queries ``xq`` for one call's ``mode``; ``qc``
        (q, 2): the queries' normalised centres when a position prior is set."""
        lv = self.level
        prm = self.params
        if mode == "mean" and qc is None:
            return lv.index.mean().expand(q, -1)
        if mode == "dictionary" and self._expand:
            return self._expanded(xq, a, s, budget, qc)
        if mode in ("dictionary", "index", "mean"):
            dic = lv.dictionary if mode == "dictionary" else lv.index
            pb = None
            if qc is not None:
                pb = PairBias(qc, self._e_dict if mode == "dictionary" else self._e_index,
                              self.prior.weights)
            return posterior_mean_exact(xq, dic, a, s, memory_budget_mb=prm.memory_budget_mb,
                                        dtype=prm.dtype, pair_bias=pb)
        return self._weights(xq, cand, a, s, budget, qc)

    def _expanded(self, xq: torch.Tensor, a: float, s: float, budget: int,
                  qc: torch.Tensor | None = None) -> torch.Tensor:
        """Dictionary posterior means (q, D) with each query's heaviest groups expanded.

        The exact posterior over the dictionary's representatives (with multiplicities)
        gives each query its ``expand_groups`` heaviest representatives; each of those is
        replaced by the entries of its group (``EXPAND_SEEDS`` at most, at a regular
        spacing, each standing for ``count / EXPAND_SEEDS`` of the group when it is larger:
        the group's mass is kept), and the query's mean is the exact posterior over that
        union: the other representatives (their multiplicities) plus the expanded entries
        (their own multiplicities). Per query patch only: the same for every window.
        """
        lv = self.level
        dic, idx = lv.dictionary, lv.index
        prm = self.params
        q, dim = xq.shape
        m = min(prm.expand_groups, dic.size)
        nl = EXPAND_SEEDS
        inv2s2 = 1.0 / (2.0 * s * s)
        scale = 2.0 * a * inv2s2
        bias_d = dic.log_counts - (a * a * inv2s2) * dic.sq_norms
        bias_e = idx.log_counts - (a * a * inv2s2) * idx.sq_norms
        gemm_dtype = GEMM_DTYPES[prm.dtype]
        keys = dic.patches if gemm_dtype == torch.float32 else dic.patches.to(gemm_dtype)
        pb_d = None if qc is None else PairBias(qc, self._e_dict, self.prior.weights)
        off = torch.arange(nl, device=xq.device)
        per_row = dic.size * 4 * 3 + m * nl * (dim * 4 * 2 + 32)
        # small blocks: the gathered entries stay in cache between their two products
        rows = max(1, min(q, EXPAND_ROWS, budget // per_row))
        out = torch.empty((q, dim), dtype=torch.float32, device=xq.device)
        for r0 in range(0, q, rows):
            xb = xq[r0:r0 + rows].to(torch.float32)
            r = xb.shape[0]
            ld = (xb.to(gemm_dtype) @ keys.T).to(torch.float32).mul_(scale).add_(bias_d)
            if pb_d is not None:
                ld.add_(pb_d.block(r0, r0 + r, 0, dic.size))
            top = torch.topk(ld, m, dim=1).indices  # (r, m): the heaviest groups
            st = lv.member_start[top][..., None]  # (r, m, 1)
            cnt = lv.member_count[top][..., None]
            valid = (off < cnt).expand(r, m, nl)
            pos = st + torch.where(cnt > nl, (off * cnt) // nl, off.clamp_max(cnt - 1))
            mem = lv.members[pos].reshape(r, m * nl)
            # a subsampled group's entries stand for count / EXPAND_SEEDS of it each
            part = torch.log((cnt.to(torch.float32) / nl).clamp_min(1.0)).expand(r, m, nl)
            y = _rows(idx.patches, mem)  # (r, m * nl, D)
            le = torch.bmm(y, xb[:, :, None])[..., 0].mul_(scale)
            le = le + bias_e[mem] + part.reshape(r, m * nl)
            if qc is not None:
                le = le + pb_d.gathered(qc[r0:r0 + r], self._e_index[mem])
            le = le.masked_fill(~valid.reshape(r, m * nl), -math.inf)
            ld.scatter_(1, top, -math.inf)  # the expanded groups replace their representative
            w = torch.softmax(torch.cat([ld, le], 1), dim=1)
            out[r0:r0 + r] = (w[:, :dic.size] @ dic.patches
                              + torch.bmm(w[:, None, dic.size:], y)[:, 0])
        return out

    def query_posterior(self, x: torch.Tensor, qid: torch.Tensor) \
            -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, str]:
        """What the last call computed for some of its query patches (for measurements).

        Call right after ``denoise(x, s)`` with the same ``x``; changes no state.

        Parameters
        ----------
        x : Tensor, shape (C, H, W)
            The last call's input.
        qid : Tensor, shape (q,), long
            Query numbers on the last call's grid (row-major over its rows x cols).

        Returns
        -------
        xq : Tensor, shape (q, D)
            The noisy query patches.
        means : Tensor, shape (q, D)
            Their posterior means as the last call computed them.
        support : Tensor, shape (q, k), or None
            Entry ids each mean was weighed over (``None``: every entry, or the
            dictionary's representatives, or the mean patch).
        mode : {"mean", "dictionary", "index", "candidates"}
        """
        rows, cols, mode, a, s = self._grid
        nc = cols.numel()
        p = self.patch_size
        x = x.to(torch.float32)
        xq = torch.cat([grid_unfold(x, rows[i:i + 1], cols[j:j + 1], p, wrap=self.wrap)
                        for i, j in zip((qid // nc).tolist(), (qid % nc).tolist())], 0)
        cand = self._cand[qid] if mode == "candidates" else None
        budget = int(self.params.memory_budget_mb * 2**20)
        qc = self._query_coords(rows, cols)
        qc = None if qc is None else qc[qid]
        return (xq, self._patch_means(xq, qid.numel(), a, s, mode, cand, budget, qc), cand,
                mode)

    # -- candidates ------------------------------------------------------------------
    def _probes(self, step: int, qid: torch.Tensor, rows: torch.Tensor,
                cols: torch.Tensor) -> torch.Tensor:
        """``probes`` random entries per query, keyed by (seed, level, step, global y, x)."""
        n = self.level.index.size
        nc = cols.numel()
        gy = rows[qid // nc].to(torch.int64) + self.origin[0]
        gx = cols[qid % nc].to(torch.int64) + self.origin[1]
        if self.period[0]:
            gy = gy % self.period[0]
        if self.period[1]:
            gx = gx % self.period[1]
        counter = (gy << 32) + gx
        outs = []
        for j in range(self.params.probes):
            key = stream_key(self.seed, self.level_id, step, 1_000_003 + j)
            outs.append(srl(mix64(counter ^ key), 11) % n)
        return torch.stack(outs, 1) if outs else counter.new_empty((counter.numel(), 0))

    def _propagate(self, prev: torch.Tensor, qid: torch.Tensor, rows: torch.Tensor,
                   cols: torch.Tensor, hw: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """The four grid neighbours' candidates shifted onto queries ``qid``: (q, 4k);
        ``hw``: the window's size (the torus's, on wrapped axes)."""
        idx = self.level.index
        nr, nc, k = rows.numel(), cols.numel(), prev.shape[1]
        hp, wp = idx.position_shape
        i, j = qid // nc, qid % nc
        wy, wx = self.wrap  # on a torus the first and last grid rows/columns are neighbours
        up, down = ((i - 1) % nr, (i + 1) % nr) if wy else \
            ((i - 1).clamp_min(0), (i + 1).clamp_max(nr - 1))
        left, right = ((j - 1) % nc, (j + 1) % nc) if wx else \
            ((j - 1).clamp_min(0), (j + 1).clamp_max(nc - 1))
        ii = torch.stack([up, down, i, i])  # (4, q)
        jj = torch.stack([j, j, left, right])
        nb = prev[ii * nc + jj]  # (4, q, k): each neighbour's candidates
        dy = (rows[i][None, :] - rows[ii])[..., None]
        dx = (cols[j][None, :] - cols[jj])[..., None]
        if wy:  # the offset across the seam: the shortest way round the torus
            dy = (dy + hw[0] // 2) % hw[0] - hw[0] // 2
        if wx:
            dx = (dx + hw[1] // 2) % hw[1] - hw[1] // 2
        pos = idx.positions[nb]  # (4, q, k, 2)
        py = pos[..., 0] + dy
        px = pos[..., 1] + dx
        ok = (py >= 0) & (py < hp) & (px >= 0) & (px < wp)
        shifted = idx.entry_at(py.clamp(0, hp - 1), px.clamp(0, wp - 1))
        out = torch.where(ok, shifted, nb)  # (4, q, k)
        return out.permute(1, 0, 2).reshape(qid.numel(), 4 * k)

    def _search(self, x: torch.Tensor, a: float, step: int, rows: torch.Tensor,
                cols: torch.Tensor, band: int, budget: int,
                xq_all: torch.Tensor | None = None) -> torch.Tensor:
        """Each query's candidates (Q, k) for this step (reduced-space search); ``xq_all``
        (Q, D): the queries already unfolded (else unfolded here band by band)."""
        lv = self.level
        idx = lv.index
        p = self.patch_size
        k = min(self.params.candidates, idx.size)
        nr, nc = rows.numel(), cols.numel()
        zs = []
        for r0 in range(0, nr, band):  # the queries as estimates of y, in the reduced space
            xq = xq_all if xq_all is not None else \
                grid_unfold(x, rows[r0:r0 + band], cols, p, wrap=self.wrap)
            zs.append((xq / a - lv.mean) @ lv.basis)
        z = torch.cat(zs, 0)
        del zs
        prev = self._cand
        q = nr * nc
        exhaustive = self.params.init == "exhaustive" or lv.dict_ids.numel() >= idx.size
        if prev is None:
            if exhaustive:
                cand, _ = _nearest(z, lv.proj, lv.proj_sq, k, budget)
                return cand
            prev = self._seed(z, k, budget)
            reseed = 0  # the seeds are this step's groups already
        else:
            reseed = 0 if exhaustive else min(self.params.reseed_groups,
                                               lv.dict_ids.numel())
        u = 5 * prev.shape[1] + self.params.probes + reseed * GROUP_SEEDS
        chunk = max(1, min(q, budget // max(1, u * (lv.proj.shape[1] + 8) * 4 * 2)))
        if reseed:
            chunk = _whole_blocks(chunk, q, lv.dict_ids.numel(), budget)
            d_ids = lv.dict_ids
            keys, keys_sq = lv.proj[d_ids], lv.proj_sq[d_ids]
        cand = torch.empty((q, k), dtype=torch.long, device=x.device)
        for q0 in range(0, q, chunk):
            qid = torch.arange(q0, min(q, q0 + chunk), device=x.device)
            parts = [prev[qid], self._propagate(prev, qid, rows, cols, tuple(x.shape[1:])),
                     self._probes(step, qid, rows, cols)]
            if reseed:  # the groups of the query's nearest representatives, every step
                near, _ = _nearest(z[qid], keys, keys_sq, reseed, budget)
                parts.append(self._group_seeds(near))
            cand[q0:q0 + qid.numel()] = self._rerank(z[qid], torch.cat(parts, 1), k, budget)
        return cand

    def _seed(self, z: torch.Tensor, k: int, budget: int) -> torch.Tensor:
        """The first late step's starting candidates (Q, k'): each query's nearest
        dictionary representatives, or with ``init="groups"`` the best k of their groups'
        seed entries (then one round of propagation and probes follows, in ``_search``).

        In chunks of queries whose GROUP_REPS x GROUP_SEEDS seed ids fit the budget (at
        once they were several (Q, 4, 16) int64 temporaries: ~6 GB for the 4.2 M queries of
        a 4096^2 window); each chunk a multiple of ``_nearest``'s block rows, so its GEMM
        blocks are those of one call over every query.
        """
        lv = self.level
        q = z.shape[0]
        d_ids = lv.dict_ids
        keys, keys_sq = lv.proj[d_ids], lv.proj_sq[d_ids]
        groups = self.params.init == "groups"
        per = GROUP_REPS * GROUP_SEEDS * (lv.proj.shape[1] + 8) * 4 * 2
        chunk = _whole_blocks(budget // per, q, keys.shape[0], budget)
        prev = torch.empty((q, k if groups else min(k, keys.shape[0])), dtype=torch.long,
                           device=z.device)
        for q0 in range(0, q, chunk):
            zc = z[q0:q0 + chunk]
            near, _ = _nearest(zc, keys, keys_sq, k, budget)
            prev[q0:q0 + zc.shape[0]] = self._rerank(
                zc, self._group_seeds(near[:, :GROUP_REPS]), k, budget) if groups \
                else d_ids[near]
        return prev

    def _group_seeds(self, near: torch.Tensor) -> torch.Tensor:
        """Up to ``GROUP_SEEDS`` entries of each listed representative's group: (Q, m * L).

        A group larger than L contributes L entries at a regular spacing (groups are in
        entry order, so spread over the reference); a smaller one repeats its last entry
        (duplicates count once in the rerank).
        """
        lv = self.level
        q, m = near.shape
        st = lv.member_start[near][..., None]  # (Q, m, 1)
        cnt = lv.member_count[near][..., None]
        off = torch.arange(GROUP_SEEDS, device=near.device)
        pos = st + torch.where(cnt >= GROUP_SEEDS, (off * cnt) // GROUP_SEEDS,
                               torch.minimum(off, cnt - 1))
        return lv.members[pos].reshape(q, m * GROUP_SEEDS)

    def _rerank(self, z: torch.Tensor, union: torch.Tensor, k: int, budget: int) \
            -> torch.Tensor:
        """Top-k distinct entries of each row of ``union`` by reduced-space distance."""
        lv = self.level
        q, u = union.shape
        d = lv.proj.shape[1]
        rows = _block_rows(q, u * (d + 4) * 4, budget)
        out = torch.empty((q, k), dtype=torch.long, device=union.device)

        def block(r0: int, r1: int) -> None:
            un, _ = torch.sort(union[r0:r1], dim=1)
            dup = torch.zeros_like(un, dtype=torch.bool)
            dup[:, 1:] = un[:, 1:] == un[:, :-1]
            pr = _rows(lv.proj, un)  # (r, u, d)
            zb = z[r0:r1].to(pr.dtype)
            dist = lv.proj_sq[un] - 2.0 * torch.bmm(pr, zb[:, :, None])[..., 0].float()
            dist = dist.masked_fill(dup, math.inf)
            # ties broken by the (sorted) entry id: deterministic whatever the union order
            _, pick = torch.topk(dist, min(k, u), dim=1, largest=False, sorted=True)
            out[r0:r1] = torch.gather(un, 1, pick)

        for_row_blocks(block, q, rows, device=union.device)
        return out

    def _weights(self, xq: torch.Tensor, cand: torch.Tensor, a: float, s: float,
                 budget: int, qc: torch.Tensor | None = None) -> torch.Tensor:
        """Exact Gaussian weights over each row's candidates, full dimension, float32."""
        idx = self.level.index
        q, k = cand.shape
        dim = idx.dim
        rows = _block_rows(q, k * dim * 4, budget)
        out = torch.empty((q, dim), dtype=torch.float32, device=xq.device)
        inv2s2 = 1.0 / (2.0 * s * s)

        def block(r0: int, r1: int) -> None:
            # duplicates (few unique entries) count once
            sc, _ = torch.sort(cand[r0:r1], dim=1)
            dup = torch.zeros_like(sc, dtype=torch.bool)
            dup[:, 1:] = sc[:, 1:] == sc[:, :-1]
            y = _rows(idx.patches, sc)  # (r, k, D)
            dots = torch.bmm(y, xq[r0:r1, :, None])[..., 0]
            logits = (2.0 * a * dots - a * a * idx.sq_norms[sc]) * inv2s2 + idx.log_counts[sc]
            if qc is not None:
                pb = PairBias(qc, self._e_index, self.prior.weights)
                logits = logits + pb.gathered(qc[r0:r1], self._e_index[sc])
            logits = logits.masked_fill(dup, -math.inf)
            wts = torch.softmax(logits, 1)
            out[r0:r1] = torch.bmm(wts[:, None, :], y)[:, 0]

        for_row_blocks(block, q, rows, device=xq.device)
        return out


def make_fast_denoise(index: PatchIndex, *, patch_size: int, rho: float,
                      params: DenoiserSettings, level: FastLevel | None = None,
                      prior: PositionPrior | None = None) -> FastDenoiser:
    """A fast-backend ``denoise(x, s)`` for one level (unbound: origin (0, 0), seed 0);
    ``params.pca_dims`` and ``params.dictionary_size`` shape its per-level precomputation;
    ``prior``: the level's position prior (``diffusion.priors``)."""
    if level is None:
        level = build_fast_level(index, pca_dims=params.pca_dims,
                                 dictionary_size=params.dictionary_size,
                                 dtype=params.dtype, memory_budget_mb=params.memory_budget_mb)
    return FastDenoiser(level, patch_size=patch_size, rho=rho, params=params, prior=prior)


__all__ += ["make_fast_denoise"]
