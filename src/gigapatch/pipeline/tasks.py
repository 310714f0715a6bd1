"""The functions Dask runs: one level tile, one output pyramid chunk.

Each task reads what it needs from the run store, writes only the chunks it owns, then sets
its done marker. Tasks are idempotent: one whose marker is set returns at once (resume,
retries after a lost worker). Everything a task needs travels in a small picklable
:class:`TaskSpec`; the patch index of a level is built once per process from the reference
stored in the run store and kept on the device (:func:`level_denoiser`'s cache, keyed by run
dir, level and device).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..storage.quantise import quantise_model
from ..storage.runstore import RunStore
from ..tiling import Box, TileGrid

__all__ = ["TaskSpec", "run_level_tile", "run_output_chunk", "level_denoiser",
           "clear_caches", "device_turn"]


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
    mode: str                 # sampler.mode
    backends: tuple[str, ...]  # per level
    denoiser: tuple[tuple[str, Any], ...]  # api.denoiser_settings(config) as items
    bit_depth: int
    level_hw: tuple[tuple[int, int], ...]
    level_kind: tuple[str, ...]
    grids: tuple[TileGrid, ...]
    # tile tasks take turns on the device (a GPU): the device part of a tile runs under a
    # per-process lock, so more worker threads overlap reads, quantising, writes and the
    # output pyramid's chunks with the device work instead of waiting behind it
    serial_device: bool = False


_lock = threading.Lock()
_key_locks: dict[Any, threading.Lock] = {}
_denoisers: dict[Any, Any] = {}
_pyramids: dict[Any, Any] = {}
_device_locks: dict[str, threading.Lock] = {}


def clear_caches() -> None:
    """Drop the per-process patch indexes (tests; a worker keeps them for its lifetime)."""
    with _lock:
        _denoisers.clear()
        _pyramids.clear()
        _key_locks.clear()


def _key_lock(key: Any) -> threading.Lock:
    with _lock:
        return _key_locks.setdefault(key, threading.Lock())


def device_turn(spec: TaskSpec):
    """The context a tile's device work runs in: the device's lock when ``serial_device``
    (one tile at a time on a GPU, whatever the thread count), else nothing."""
    if not spec.serial_device:
        return contextlib.nullcontext()
    with _lock:
        return _device_locks.setdefault(spec.device, threading.Lock())


def _ref_pyramid(spec: TaskSpec, device):
    from ..diffusion.pyramid import gaussian_pyramid
    import torch

    key = (spec.run_dir, str(device))
    with _key_lock(("pyr",) + key):
        pyr = _pyramids.get(key)
        if pyr is None:
            ref = torch.from_numpy(RunStore.open(spec.run_dir).reference()).to(device)
            pyr = gaussian_pyramid(ref, len(spec.level_hw))
            _pyramids[key] = pyr
    return pyr


def level_denoiser(spec: TaskSpec, level: int, device):
    """The level's denoiser; its PatchIndex is built once per (run dir, level, device)."""
    key = (spec.run_dir, level, str(device))
    # one per process, shared by every thread: sample_level binds a fresh per-window state
    # (the fast backend's FastDenoiser.bind) on the shared, read-only level data
    with _key_lock(key):
        dn = _denoisers.get(key)
        if dn is None:
            # built exactly as generate builds it (api.sample_levels)
            from ..api import build_level_denoiser

            dn = build_level_denoiser(_ref_pyramid(spec, device)[level], spec.backends[level],
                                      patch_size=spec.patch_size, rho=spec.rho,
                                      denoiser=dict(spec.denoiser))
            _denoisers[key] = dn
    return dn


def _test_delay() -> None:
    # test hook: slows every tile so a test can kill a run part-way (tests/test_pipeline.py)
    delay = os.environ.get("GIGAPATCH_TEST_TILE_DELAY")
    if delay:
        time.sleep(float(delay))


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


def run_level_tile(spec: TaskSpec, level: int, iy: int, ix: int, *deps: Any) \
        -> tuple[str, int, int, int, float]:
    """Sample tile (iy, ix) of ``level`` (the whole level for a global one) into the store.

    Returns ``(kind, level, iy, ix, seconds)``; seconds is 0 for a tile already done.
    """
    return _once(spec, f"done/{level}", "level", level, iy, ix,
                 lambda store: _sample_tile(spec, level, iy, ix, store))


def _sample_tile(spec: TaskSpec, level: int, iy: int, ix: int, store: RunStore) -> None:
    import torch

    from ..diffusion.generator import coarse_box_for, sample_level, upsample_to_box
    from ..diffusion.schedules import flow_linear

    dev = torch.device(spec.device)
    tile = spec.grids[level].tile_at(iy, ix)
    win = tile.window
    kind = spec.level_kind[level]
    coarse = cb = coarse_up = None
    if kind != "resize" and level > 0:  # read before taking the device
        cb = Box(*coarse_box_for(win.as_tuple(), spec.level_hw[level - 1]))
        coarse = store.read(f"levels/{level - 1}", cb)
    with device_turn(spec), torch.inference_mode():
        if kind == "resize":
            from ..api import _resize

            x = _resize(_ref_pyramid(spec, dev)[0], spec.level_hw[0])
        else:
            if coarse is not None:
                coarse_up = upsample_to_box(torch.from_numpy(coarse).to(dev), (cb.y0, cb.x0),
                                            win.as_tuple())
            x = sample_level(level_denoiser(spec, level, dev), box=win.as_tuple(),
                             channels=spec.channels, seed=spec.seed, level=level,
                             sigmas=flow_linear(spec.steps, spec.s_min), eta=spec.eta,
                             coarse_up=coarse_up, device=dev)
        c = tile.core_in_window
        core = x[:, c.y0:c.y1, c.x0:c.x1].float().cpu().numpy()
        del x, coarse_up  # free the device memory before the writes
    if level == len(spec.level_hw) - 1:  # the finest level is kept only quantised
        store.write("output/0", tile.core, quantise_model(core, spec.bit_depth))
    else:
        store.write(f"levels/{level}", tile.core, core)
    _test_delay()


def run_output_chunk(spec: TaskSpec, r: int, iy: int, ix: int, *deps: Any) \
        -> tuple[str, int, int, int, float]:
    """Chunk (iy, ix) of output pyramid level ``r`` >= 1 by 2x reduction of level r - 1."""
    return _once(spec, f"output_done/{r}", "output", r, iy, ix,
                 lambda store: store.reduce_output_chunk(r, iy, ix))
