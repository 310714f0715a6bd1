"""The image denoiser of one level: which backend (``auto`` -> exact or fast) and its build.

The one place that turns :class:`~gigapatch.diffusion.settings.DenoiserSettings` into a
``denoise(x, s)`` callable. ``gigapatch.generate`` (every level of the whole image) and the
tiled pipeline's tasks (one level, shared by every tile of a worker) both build their levels
here, so a tile runs exactly the denoiser the whole image would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

import torch
import torch.nn.functional as F

from .denoiser import image_denoise, posterior_mean
from .fast import FastLevel, build_fast_level, choose_backend, make_fast_denoise
from .levels import patch_count
from .patch_index import PatchIndex
from .priors import PairBias, PositionPrior, usage_counts, usage_log_weights
from .sampling import Denoise
from .schedules import signal_scale
from .settings import DenoiserSettings

__all__ = ["level_backend", "level_settings", "make_denoise", "level_denoiser",
           "index_entries", "LevelCache", "level_key", "reweighted"]

log = logging.getLogger(__name__)


def level_backend(settings: DenoiserSettings, device: torch.device | str, *, patch_size: int,
                  ref_hw: tuple[int, int], out_hw: tuple[int, int], channels: int) -> str:
    """The denoiser backend of one level: the configured one, or for ``auto`` the cheapest
    that is exact enough (exact while one exact step of the WHOLE level is cheap, else fast;
    see ``diffusion.fast.choose_backend``).

    Asked once per level by the run's plan (``gigapatch.pipeline.plan``), so ``generate``,
    the tiled pipeline and ``gigapatch info`` agree, and a tile uses the backend the whole
    image would.
    """
    if settings.backend != "auto":
        return settings.backend
    p = patch_size
    return choose_backend(patch_count(out_hw, p), patch_count(ref_hw, p), channels * p * p,
                          device)


def level_settings(settings: DenoiserSettings, out_hw: tuple[int, int]) -> DenoiserSettings:
    """The denoiser settings of one level whose output is ``out_hw`` (height, width).

    A level of at most ``settings.full_stride_pixels`` output pixels queries every patch
    (``query_stride`` and ``broad_stride`` 1): the coarse levels set the layout every finer
    level follows, so their query grid decides how close the whole sample stays to the
    exact sampler's (measured on 5 references: the largest single gain, BENCHMARKS.md,
    "Closer to the exact sampler"), and they cost little. Global per level (never
    from a tile), so a tile and the whole image use the same settings.
    """
    if out_hw[0] * out_hw[1] <= settings.full_stride_pixels:
        return dataclasses.replace(settings, query_stride=1, broad_stride=1)
    return settings


def index_entries(backend: str, settings: DenoiserSettings, *, channels: int,
                  patch_size: int) -> int | None:
    """Entries a level's patch index keeps: the fast backend subsamples to
    ``settings.index_budget_mb``; exact and fused need every patch (``None``)."""
    if backend != "fast":
        return None
    p = patch_size
    return max(1, settings.index_budget_mb * 2**20 // (channels * p * p * 4 + 32))


def make_denoise(index: PatchIndex, *, patch_size: int, rho: float, backend: str,
                 settings: DenoiserSettings, fast_level: FastLevel | None = None,
                 prior: PositionPrior | None = None) -> Denoise:
    """The image denoiser ``denoise(x, s)`` of one level over a built patch index.

    Parameters
    ----------
    index : PatchIndex
        The level's clean patches, on the device the images will live on.
    patch_size : int
    rho : float
        Fold window std.
    backend : {"exact", "fused", "fast"}
        The level's backend (already chosen: never ``auto``).
    settings : DenoiserSettings
        Precision and memory budget; the fast backend's knobs.
    fast_level : FastLevel, optional
        The fast backend's per-level precomputation of ``index`` (built from ``index``
        and ``settings`` when not given; ``LevelCache`` keeps it between outputs).
    prior : PositionPrior, optional
        The level's position prior (``diffusion.priors``); needs ``index.positions``.
        The denoiser then has ``bind(origin=, ...)``: query positions are global.

    Returns
    -------
    callable
        ``denoise(x (C, H, W), s) -> x_hat (C, H, W)``. The fast backend's denoiser is
        stateful and has ``bind(origin=, seed=, level=)``, which
        ``generator.sample_level`` calls.
    """
    if backend == "fast":
        return make_fast_denoise(index, patch_size=patch_size, rho=rho, params=settings,
                                 level=fast_level, prior=prior)
    budget, dtype = settings.memory_budget_mb, settings.dtype
    if prior is not None:
        return _PositionDenoise(index, prior, patch_size=patch_size, rho=rho, backend=backend,
                                memory_budget_mb=budget, dtype=dtype)

    return _ImageDenoise(index, patch_size=patch_size, rho=rho, backend=backend,
                         memory_budget_mb=budget, dtype=dtype)


class _ImageDenoise:
    """exact/fused ``denoise(x, s)``: every patch of x denoised and folded back
    (``image_denoise``); ``on_torus(wrap)``: the same on a torus along the wrapped axes."""

    def __init__(self, index: PatchIndex, *, patch_size: int, rho: float, backend: str,
                 memory_budget_mb: float, dtype: str,
                 wrap: tuple[bool, bool] = (False, False)) -> None:
        self.index, self.wrap = index, wrap
        self.kw = dict(patch_size=patch_size, rho=rho, backend=backend,
                       memory_budget_mb=memory_budget_mb, dtype=dtype)

    def on_torus(self, wrap: tuple[bool, bool]) -> "_ImageDenoise":
        return _ImageDenoise(self.index, wrap=(bool(wrap[0]), bool(wrap[1])), **self.kw)

    def __call__(self, x: torch.Tensor, s: float) -> torch.Tensor:
        a = signal_scale(s)
        kw = self.kw

        def patches(q: torch.Tensor) -> torch.Tensor:
            return posterior_mean(q, self.index, a, s, backend=kw["backend"],
                                  memory_budget_mb=kw["memory_budget_mb"], dtype=kw["dtype"])

        return image_denoise(x, patches, kw["patch_size"], kw["rho"],
                             memory_budget_mb=kw["memory_budget_mb"], wrap=self.wrap)


class _PositionDenoise:
    """exact/fused ``denoise(x, s)`` with a position prior, for a window at ``origin``."""

    def __init__(self, index: PatchIndex, prior: PositionPrior, *, patch_size: int,
                 rho: float, backend: str, memory_budget_mb: float, dtype: str,
                 origin: tuple[int, int] = (0, 0),
                 wrap: tuple[bool, bool] = (False, False)) -> None:
        if index.positions is None:
            raise ValueError("a position prior needs an index with positions")
        self.index, self.prior, self.origin, self.wrap = index, prior, origin, wrap
        self.kw = dict(patch_size=patch_size, rho=rho, backend=backend,
                       memory_budget_mb=memory_budget_mb, dtype=dtype)
        self._entries = prior.entry_coords(index.positions)

    def bind(self, *, origin: tuple[int, int] = (0, 0), seed: int = 0, level: int = 0,
             period: tuple[int, int] = (0, 0)) -> "_PositionDenoise":
        return _PositionDenoise(self.index, self.prior, origin=origin, wrap=self.wrap,
                                **self.kw)

    def on_torus(self, wrap: tuple[bool, bool]) -> "_PositionDenoise":
        """The same on a torus along the wrapped axes (``image_denoise(wrap=)``)."""
        return _PositionDenoise(self.index, self.prior, origin=self.origin,
                                wrap=(bool(wrap[0]), bool(wrap[1])), **self.kw)

    def __call__(self, x: torch.Tensor, s: float) -> torch.Tensor:
        a = signal_scale(s)
        kw = self.kw
        oy, ox = self.origin

        def patches(q: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
            pb = PairBias(self.prior.query_coords(ys + oy, xs + ox), self._entries,
                          self.prior.weights)
            return posterior_mean(q, self.index, a, s, backend=kw["backend"],
                                  memory_budget_mb=kw["memory_budget_mb"], dtype=kw["dtype"],
                                  pair_bias=pb)

        return image_denoise(x, patches, kw["patch_size"], kw["rho"],
                             memory_budget_mb=kw["memory_budget_mb"], with_positions=True,
                             wrap=self.wrap)


def level_key(ref_level: torch.Tensor, backend: str, *, patch_size: int,
              settings: DenoiserSettings, merged: bool = True) -> tuple:
    """Everything that shapes a level's built index (and fast precomputation).

    The level's pixels themselves (a hash of its bytes, shape, dtype and device: not a
    reference name and level number, because the same level number is a different image
    when two outputs of one reference have different level counts), the backend, the patch
    size, the index's entry budget and prune tolerance, and for the fast backend the PCA
    dimensions, dictionary size, search dtype and memory budget of its precomputation.
    What a denoiser does with a built index (``rho``, the fast backend's per-call knobs,
    the run's seed) is not in the key: the denoiser is made fresh around the cached parts.
    """
    t = ref_level.detach().contiguous()
    digest = hashlib.blake2b(t.cpu().reshape(-1).view(torch.uint8).numpy().tobytes(), digest_size=20).hexdigest()
    c = int(t.shape[0])
    fast = (settings.pca_dims, settings.dictionary_size, settings.dtype,
            settings.memory_budget_mb) if backend == "fast" else None
    return (digest, tuple(t.shape), str(t.dtype), str(t.device), backend, patch_size,
            index_entries(backend, settings, channels=c, patch_size=patch_size),
            settings.prune_tolerance, fast, merged)


class LevelCache:
    """Built level indexes (and the fast backend's precomputation) of one process, so
    outputs that share a reference level and the settings that shape its index build it
    once (a batch's items of one reference with different seeds, sizes or presets).

    Least recently used entries are dropped beyond ``max_bytes`` (an entry larger than
    ``max_bytes`` is built and used but not kept). Every read and write of the map holds
    ``self.lock``; a value is built under its key's own lock, so two threads never build
    the same level twice and different levels build in parallel. Values are read-only:
    ``level_denoiser`` wraps a fresh denoiser around them for each output.

    Parameters
    ----------
    max_bytes : int
        Bound on the kept tensors' bytes (``PatchIndex.nbytes`` plus the fast level's).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.lock = threading.Lock()
        self._values: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._building: dict[Hashable, threading.Lock] = {}
        self._bytes = 0
        self.builds = 0
        self.hits = 0

    @property
    def nbytes(self) -> int:
        with self.lock:
            return self._bytes

    def __len__(self) -> int:
        with self.lock:
            return len(self._values)

    def get(self, key: Hashable, build: Callable[[], Any], size: Callable[[Any], int]) -> Any:
        """The value of ``key``; ``build()`` makes it on a miss, ``size(value)`` its bytes."""
        with self.lock:
            if key in self._values:
                self._values.move_to_end(key)
                self.hits += 1
                return self._values[key][0]
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:
            with self.lock:
                if key in self._values:
                    self._values.move_to_end(key)
                    self.hits += 1
                    return self._values[key][0]
            value = build()
            nbytes = int(size(value))
            with self.lock:
                self.builds += 1
                self._building.pop(key, None)
                if nbytes <= self.max_bytes:
                    self._values[key] = (value, nbytes)
                    self._bytes += nbytes
                    while self._bytes > self.max_bytes:
                        _, (_, n) = self._values.popitem(last=False)
                        self._bytes -= n
        return value

    def clear(self) -> None:
        """Drop every kept value and zero the counters (tests)."""
        with self.lock:
            self._values.clear()
            self._bytes = 0
            self.builds = self.hits = 0


def _fast_level_bytes(fl: FastLevel | None) -> int:
    if fl is None:
        return 0
    extra = sum(t.element_size() * t.numel()
                for t in (fl.mean, fl.basis, fl.proj, fl.proj_sq, fl.dict_ids))
    return extra + (0 if fl.dictionary is fl.index else fl.dictionary.nbytes)


def reweighted(index: PatchIndex, fast: FastLevel | None, log_counts: torch.Tensor) \
        -> tuple[PatchIndex, FastLevel | None]:
    """The same entries with other log multiplicities (the usage prior, ``priors``).

    The fast level keeps its reduced space and candidate groups; its dictionary's
    representatives weigh the new multiplicities of their groups (as ``build_fast_level``
    sums the old ones), and its ESS cache starts empty.

    Parameters
    ----------
    index : PatchIndex
    fast : FastLevel or None
        ``index``'s fast precomputation.
    log_counts : Tensor, shape (N,)

    Returns
    -------
    (PatchIndex, FastLevel or None)
    """
    idx = dataclasses.replace(index, log_counts=log_counts.to(index.log_counts.device))
    if fast is None:
        return idx, None
    if fast.dictionary is fast.index:
        dic = idx
    else:
        groups = torch.repeat_interleave(
            torch.arange(fast.member_count.numel(), device=fast.members.device),
            fast.member_count)
        mult = torch.zeros(fast.member_count.numel(), dtype=torch.float64,
                           device=fast.members.device)
        mult.index_add_(0, groups, idx.log_counts.double().exp()[fast.members])
        dic = dataclasses.replace(fast.dictionary, log_counts=mult.log().to(torch.float32))
    return idx, dataclasses.replace(fast, index=idx, dictionary=dic, ess_cache={})


def level_denoiser(ref_level: torch.Tensor, backend: str, *, patch_size: int, rho: float,
                   settings: DenoiserSettings, cache: LevelCache | None = None,
                   prior: PositionPrior | None = None, usage_strength: float = 0.0,
                   pilot: Callable[[Denoise], torch.Tensor] | None = None) -> Denoise:
    """The image denoiser of one level, from the reference pyramid's level.

    Parameters
    ----------
    ref_level : Tensor, shape (C, h, w)
        The reference pyramid's level in model space, on the sampling device.
    backend : {"exact", "fused", "fast"}
        The level's backend (``level_backend``; never ``auto``).
    patch_size, rho
        The sampler's P and fold window std.
    settings : DenoiserSettings
    cache : LevelCache, optional
        Where built indexes (and fast precomputations) are kept and looked up by
        ``level_key``; the denoiser is always made fresh around them, so the result is
        the same with or without a cache.
    prior : PositionPrior, optional
        The level's position prior (``PriorSettings.position_prior``). Its level keeps
        every patch as its own entry (no merging: each copy has its own position).
    usage_strength : float
        lambda_u of the usage prior (``priors``); > 0 needs ``pilot``.
    pilot : callable, optional
        ``pilot(denoise) -> (C, h, w)``: the WHOLE level sampled with the usage-free
        denoiser (same seed, start and coarser level as the real pass); its patches give
        the usage counts, and the returned denoiser weighs the entries by them.
    """
    def build() -> tuple[PatchIndex, FastLevel | None]:
        c = ref_level.shape[0]
        index = PatchIndex.from_image(
            ref_level, patch_size,
            max_entries=index_entries(backend, settings, channels=c, patch_size=patch_size),
            merge_duplicates=prior is None,
            prune_tolerance=settings.prune_tolerance if prior is None else 0.0)
        log.debug("level index: %d entries of %s reference patches (%s backend)",
                  index.size,
                  f"{patch_count(tuple(ref_level.shape[1:]), patch_size):,}", backend)
        fast = None
        if backend == "fast":
            fast = build_fast_level(index, pca_dims=settings.pca_dims,
                                    dictionary_size=settings.dictionary_size,
                                    dtype=settings.dtype,
                                    memory_budget_mb=settings.memory_budget_mb)
        return index, fast

    if cache is None:
        index, fast = build()
    else:
        index, fast = cache.get(
            level_key(ref_level, backend, patch_size=patch_size, settings=settings,
                      merged=prior is None), build,
            lambda v: v[0].nbytes + _fast_level_bytes(v[1]))
    denoise = make_denoise(index, patch_size=patch_size, rho=rho, backend=backend,
                           settings=settings, fast_level=fast, prior=prior)
    if usage_strength <= 0:
        return denoise
    if pilot is None:
        raise ValueError("a usage prior needs a pilot sample of the level")
    x = pilot(denoise)
    queries = F.unfold(x[None].to(torch.float32), kernel_size=patch_size)[0].T
    counts = usage_counts(queries, index.patches, index.log_counts,
                          memory_budget_mb=settings.memory_budget_mb)
    index, fast = reweighted(index, fast,
                             usage_log_weights(counts, index.log_counts, usage_strength))
    return make_denoise(index, patch_size=patch_size, rho=rho, backend=backend,
                        settings=settings, fast_level=fast, prior=prior)
