"""The functions Dask runs: one level tile, one output pyramid chunk.

Each task reads what it needs from the run store, writes only the chunks it owns, then sets
its done marker. Tasks are idempotent: one whose marker is set returns at once (resume,
retries after a lost worker). Everything a task needs travels in a small picklable
:class:`TaskSpec`; the patch index of a level is built once per process from the reference
stored in the run store and kept on the device (:data:`CACHE`, a bounded
:class:`ProcessCache` keyed by the reference's content digest, the level and every setting
the denoiser is built from, so the tiled items of a batch that share a reference and level
build its index once per process).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from ..diffusion.backends import level_denoiser, level_settings
from ..diffusion.generator import (coarse_box_for, level_start, resize_level, sample_level,
                                   upsample_to_box)
from ..diffusion.levels import Level
from ..diffusion.model_space import samples_to_model
from ..diffusion.pyramid import gaussian_pyramid
from ..diffusion.schedules import flow_linear
from ..diffusion.priors import PriorSettings, level_sigmas
from ..diffusion.settings import DenoiserSettings
from ..diffusion.torus import PeriodicDenoiser, Wrap, periodic_up2
from ..storage.quantise import quantise_model
from ..storage.runstore import RunStore
from ..tiling import Box, TileGrid, wrap_pieces

__all__ = ["TaskSpec", "run_level_tile", "run_output_chunk", "shared_level_denoiser",
           "usage_level_denoiser",
           "ProcessCache", "CACHE", "device_turn", "denoiser_key", "release_level",
           "DenoiserKey", "UsageKey"]


@dataclass(frozen=True)
class TaskSpec:
    """Plain values every task needs (no Config object travels to workers)."""

    run_dir: str
    seed: int
    device: str
    channels: int
    patch_size: int
    rho: float
    steps: int
    eta: float
    s_min: float
    levels: tuple[Level, ...]        # the plan's levels (size, backend, mode, halo)
    grids: tuple[TileGrid, ...]      # one per level
    denoiser: DenoiserSettings
    bit_depth: int
    # tile tasks take turns on the device (a GPU): the device part of a tile runs under a
    # per-process lock, so more worker threads overlap reads, quantising, writes and the
    # output pyramid's chunks with the device work instead of waiting behind it
    serial_device: bool = False
    prior: PriorSettings | None = None  # the composition priors (None: the paper's sampler)
    # digest of the reference (model space) stored in the run store: the cache key of its
    # pyramid and level denoisers, shared by every run of that reference in the process
    ref_key: str = ""


_MISSING = object()


#: entries (reference pyramids and level denoisers) a process keeps; least recently used
#: dropped beyond it (a batch worker runs many items over its lifetime)
CACHE_ENTRIES = 32


class ProcessCache:
    """What a worker process keeps between tasks: reference pyramids and level denoisers
    (built once per key, shared by every thread), and one lock per device.

    At most ``max_entries`` values are kept, least recently used dropped first (a dropped
    value still in use by a task stays alive until that task ends; a later task rebuilds
    it). Every read and write of the maps holds ``self.lock``; a value is built under its
    own key's lock, so two threads never build the same key twice and builds of different
    keys do not wait for each other. ``builds`` and ``hits`` count (tests).
    """

    def __init__(self, max_entries: int = CACHE_ENTRIES) -> None:
        self.max_entries = int(max_entries)
        self.lock = threading.Lock()
        self._values: OrderedDict[Any, Any] = OrderedDict()
        self._building: dict[Any, threading.Lock] = {}
        self._devices: dict[str, threading.Lock] = {}
        self.builds = 0
        self.hits = 0

    def __len__(self) -> int:
        with self.lock:
            return len(self._values)

    def __contains__(self, key: Any) -> bool:
        with self.lock:
            return key in self._values

    def _lookup(self, key: Any) -> Any:
        value = self._values.get(key, _MISSING)
        if value is not _MISSING:
            self._values.move_to_end(key)
            self.hits += 1
        return value

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        """The value of ``key``, built by ``build()`` on the first call (or after it was
        dropped)."""
        with self.lock:
            value = self._lookup(key)
            if value is not _MISSING:
                return value
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:
            with self.lock:
                value = self._lookup(key)
            if value is _MISSING:
                value = build()
                with self.lock:
                    self.builds += 1
                    self._building.pop(key, None)
                    self._values[key] = value
                    while len(self._values) > self.max_entries:
                        self._values.popitem(last=False)
        return value

    def drop(self, match: Callable[[Any], bool]) -> int:
        """Forget every kept value whose key ``match``es (a task still using one keeps it
        alive until it ends); the number dropped."""
        with self.lock:
            keys = [k for k in self._values if match(k)]
            for k in keys:
                del self._values[k]
        return len(keys)

    def device_lock(self, device: str) -> threading.Lock:
        with self.lock:
            return self._devices.setdefault(device, threading.Lock())

    def clear(self) -> None:
        """Drop every cached value and zero the counters (tests)."""
        with self.lock:
            self._values.clear()
            self._building.clear()
            self.builds = self.hits = 0


#: this process's cache (a dask worker's threads share it)
CACHE = ProcessCache()


def device_turn(spec: TaskSpec):
    """The context a tile's device work runs in: the device's lock when ``serial_device``
    (one tile at a time on a GPU, whatever the thread count), else nothing."""
    if not spec.serial_device:
        return contextlib.nullcontext()
    return CACHE.device_lock(spec.device)


def _ref_pyramid(spec: TaskSpec, device: torch.device) -> list[torch.Tensor]:
    def build() -> list[torch.Tensor]:
        ref = samples_to_model(RunStore.open(spec.run_dir).reference(), device)
        return gaussian_pyramid(ref, len(spec.levels))

    return CACHE.get(("pyramid", spec.ref_key or spec.run_dir, len(spec.levels), str(device)),
                     build)


def shared_level_denoiser(spec: TaskSpec, level: int, device: torch.device):
    """The level's denoiser, built exactly as ``generate`` builds it
    (``diffusion.backends.level_denoiser``) once per process for every run whose reference,
    level count, level and denoiser inputs are the same (:func:`denoiser_key`); shared by
    every thread: ``sample_level`` binds a fresh per-window state (the fast backend's
    ``FastDenoiser.bind``) on the shared, read-only level data."""
    def build():
        ref = _ref_pyramid(spec, device)[level]
        lv = spec.levels[level]
        pos = None if spec.prior is None else spec.prior.position_prior(
            level, out_hw=lv.out_hw, ref_hw=tuple(ref.shape[1:]), patch_size=spec.patch_size)
        return level_denoiser(ref, lv.backend, patch_size=spec.patch_size, rho=spec.rho,
                              settings=level_settings(spec.denoiser, lv.out_hw), prior=pos)

    return CACHE.get(denoiser_key(spec, level, device), build)


def release_level(spec: TaskSpec, level: int) -> int:
    """Drop this process's denoisers of ``level`` of ``spec``'s run (its reference and
    level count, every device) once every task of the level is done: no later task reads
    them, and a big reference's fine-level indexes are GBs each (a 13 MP reference at
    4096^2 kept levels 5-7's, ~2 GB apiece, through the finest level: 15.2 GB peak).
    Another run of the same reference in this process rebuilds them. The number dropped."""
    ref, n = spec.ref_key or spec.run_dir, len(spec.levels)
    return CACHE.drop(lambda k: (
        (isinstance(k, DenoiserKey) and (k.ref, k.n_levels, k.level) == (ref, n, level))
        or (isinstance(k, UsageKey) and (k.run_dir, k.level) == (spec.run_dir, level))))


class DenoiserKey(NamedTuple):
    """The process cache's key of a shared level denoiser (:func:`denoiser_key`); fields
    by name, so :func:`release_level` does not depend on their order."""

    kind: str            # "denoiser"
    ref: str             # the reference's digest (or the run dir when unknown)
    n_levels: int
    level: int
    backend: str
    patch_size: int
    rho: float
    settings: str        # repr of the level's DenoiserSettings
    prior: str           # repr of the PriorSettings (or "None")
    out_hw: tuple[int, int] | None  # the level's size when a prior shapes it
    device: str


class UsageKey(NamedTuple):
    """The process cache's key of a run's usage-weighted level denoiser."""

    kind: str            # "usage"
    run_dir: str
    level: int
    device: str
    window: tuple[int, int, int, int]


def denoiser_key(spec: TaskSpec, level: int, device: torch.device) -> DenoiserKey:
    """What a level's denoiser is built from: the reference (its digest, or the run dir
    when unknown) and its pyramid's level count, the level, its backend, P, rho, the
    denoiser settings, the priors (and the level's size, which shapes a position prior),
    the device."""
    lv = spec.levels[level]
    return DenoiserKey("denoiser", spec.ref_key or spec.run_dir, len(spec.levels), level,
                       lv.backend, spec.patch_size, spec.rho,
                       repr(level_settings(spec.denoiser, lv.out_hw)), repr(spec.prior),
                       lv.out_hw if spec.prior is not None else None, str(device))




def _pilot_window(window: tuple[int, int, int, int], hw: tuple[int, int]) \
        -> tuple[int, int, int, int]:
    """The window a usage level's pilot samples: the WHOLE level, whatever the tile (the
    counts are global, so every tile weighs the entries alike)."""
    return (0, 0, *hw)


def usage_level_denoiser(spec: TaskSpec, level: int, device: torch.device, store: RunStore,
                         window: tuple[int, int, int, int]):
    """A usage level's denoiser (``diffusion.priors``): the entries weighed by their usage
    in a pilot sample of ``window`` (``_pilot_window``: the whole level), computed once
    per (run dir, level, device) exactly as ``generate`` computes it: same seed, start,
    and the whole coarser level read from the store."""
    def build():
        ref = _ref_pyramid(spec, device)[level]
        lv = spec.levels[level]
        pos = None if spec.prior is None else spec.prior.position_prior(
            level, out_hw=lv.out_hw, ref_hw=tuple(ref.shape[1:]), patch_size=spec.patch_size)
        coarse_up = None
        if level > 0:
            chw = spec.levels[level - 1].out_hw
            cb = Box(*coarse_box_for(window, chw))
            coarse = torch.from_numpy(store.read(f"levels/{level - 1}", cb)).to(device)
            coarse_up = upsample_to_box(coarse, (cb.y0, cb.x0), window)

        def pilot(d):
            return sample_level(d, box=window, channels=spec.channels, seed=spec.seed,
                                level=level,
                                sigmas=level_sigmas(flow_linear(spec.steps, spec.s_min),
                                                    level, spec.prior),
                                eta=spec.eta, coarse_up=coarse_up, device=device,
                                start=level_start(_ref_pyramid(spec, device)[0], lv.out_hw,
                                                  level, spec.prior, window))

        return level_denoiser(ref, lv.backend, patch_size=spec.patch_size, rho=spec.rho,
                              settings=level_settings(spec.denoiser, lv.out_hw), prior=pos,
                              usage_strength=spec.prior.usage_strength, pilot=pilot)

    return CACHE.get(UsageKey("usage", spec.run_dir, level, str(device), window), build)


def _once(spec: TaskSpec, done_name: str, kind: str, index: int, iy: int, ix: int,
          work: Callable[[RunStore], None]) -> tuple[str, int, int, int, float]:
    """Run ``work(store)`` unless chunk (iy, ix)'s marker in ``done_name`` is set, then set it.

    Returns ``(kind, index, iy, ix, seconds)``; seconds is 0 for a task already done.
    """
    store = RunStore.open(spec.run_dir)
    if store.is_done(done_name, iy, ix):
        return (kind, index, iy, ix, 0.0)
    t0 = time.perf_counter()
    work(store)
    store.mark_done(done_name, iy, ix)
    return (kind, index, iy, ix, time.perf_counter() - t0)


def run_level_tile(spec: TaskSpec, level: int, iy: int, ix: int, *deps: Any,
                   on_step: Callable[[float], None] | None = None) \
        -> tuple[str, int, int, int, float]:
    """Sample tile (iy, ix) of ``level`` (the whole level for a global one) into the store.

    ``on_step(fraction)``, when given, is called after each sampler step with the part of
    the tile done (``(i + 1) / steps``): the local runner binds it to the progress bar (it
    never travels in the graph to another process).

    Returns ``(kind, level, iy, ix, seconds)``; seconds is 0 for a tile already done.
    """
    return _once(spec, f"done/{level}", "level", level, iy, ix,
                 lambda store: _sample_tile(spec, level, iy, ix, store, on_step))


def _sample_tile(spec: TaskSpec, level: int, iy: int, ix: int, store: RunStore,
                 on_step: Callable[[float], None] | None = None) -> None:
    dev = torch.device(spec.device)
    lv = spec.levels[level]
    tile = spec.grids[level].tile_at(iy, ix)
    win = tile.window
    grid = spec.grids[level]
    hw = lv.out_hw
    wrap = Wrap(grid.wrap_y, grid.wrap_x)
    # a tileable level sampled in one piece is a torus; a tile of one is a plain window
    # whose coordinates may run past the level (noise and reads taken modulo its size)
    torus = wrap if win.as_tuple() == (0, 0, *hw) else Wrap()
    period = (hw[0] if wrap.y else 0, hw[1] if wrap.x else 0)
    coarse = cb = coarse_up = None
    if lv.mode != "resize" and level > 0:  # read before taking the device
        chw = spec.levels[level - 1].out_hw
        cb = Box(0, 0, *chw) if torus else \
            Box(*coarse_box_for(win.as_tuple(), chw, (wrap.y, wrap.x)))
        coarse = _read_window(spec, store, f"levels/{level - 1}", cb, chw, wrap)
    with device_turn(spec), torch.inference_mode():
        if lv.mode == "resize":
            x = resize_level(_ref_pyramid(spec, dev)[level], lv.out_hw)
        else:
            if coarse is not None and torus:
                coarse_up = periodic_up2(torch.from_numpy(coarse).to(dev), torus)[
                    :, :hw[0], :hw[1]]
            elif coarse is not None:
                coarse_up = upsample_to_box(torch.from_numpy(coarse).to(dev), (cb.y0, cb.x0),
                                            win.as_tuple())
            if spec.prior is not None and spec.prior.usage_on(level):
                denoise = usage_level_denoiser(spec, level, dev, store,
                                               _pilot_window(win.as_tuple(), hw))
            else:
                denoise = shared_level_denoiser(spec, level, dev)
            if torus:
                denoise = PeriodicDenoiser(denoise, spec.patch_size, torus)
            sigmas = level_sigmas(flow_linear(spec.steps, spec.s_min), level, spec.prior)
            n = sigmas.shape[0]
            x = sample_level(denoise, box=win.as_tuple(),
                             channels=spec.channels, seed=spec.seed, level=level,
                             sigmas=sigmas, eta=spec.eta, coarse_up=coarse_up, device=dev,
                             wrap=torus, period=period,
                             callback=None if on_step is None else
                             (lambda i: on_step((i + 1) / n)),
                             start=level_start(_ref_pyramid(spec, dev)[0], lv.out_hw, level,
                                               spec.prior, win.as_tuple()))
        c = tile.core_in_window
        core = x[:, c.y0:c.y1, c.x0:c.x1].float().cpu().numpy()
        del x, coarse_up  # free the device memory before the writes
    if level == len(spec.levels) - 1:  # the finest level is kept only quantised
        store.write("output/0", tile.core, quantise_model(core, spec.bit_depth))
    else:
        store.write(f"levels/{level}", tile.core, core)


def _read_window(spec: TaskSpec, store: RunStore, name: str, box: Box,
                 hw: tuple[int, int], wrap: Wrap) -> np.ndarray:
    """``store.read(name, box)``, where a wrapped axis of the box may run past the level:
    those pixels are read from the opposite side (coordinates modulo the level's size)."""
    if not wrap:
        return store.read(name, box)
    out = np.empty((spec.channels, box.height, box.width), dtype=np.float32)
    for piece, (dy, dx) in wrap_pieces(box, hw, (wrap.y, wrap.x)):
        out[:, dy:dy + piece.height, dx:dx + piece.width] = store.read(name, piece)
    return out


def run_output_chunk(spec: TaskSpec, r: int, iy: int, ix: int, *deps: Any) \
        -> tuple[str, int, int, int, float]:
    """Chunk (iy, ix) of output pyramid level ``r`` >= 1 by 2x reduction of level r - 1."""
    return _once(spec, f"output_done/{r}", "output", r, iy, ix,
                 lambda store: store.reduce_output_chunk(r, iy, ix))
