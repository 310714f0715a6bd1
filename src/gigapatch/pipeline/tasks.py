"""The functions Dask runs: one level tile, one output pyramid chunk.

Each task reads what it needs from the run store, writes only the chunks it owns, then sets
its done marker. Tasks are idempotent: one whose marker is set returns at once (resume,
retries after a lost worker). Everything a task needs travels in a small picklable
:class:`TaskSpec`; the patch index of a level is built once per process from the reference
stored in the run store and kept on the device (:func:`level_denoiser`'s cache, keyed by run
dir, level and device).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..storage.runstore import RunStore
from ..tiling import Box, TileGrid

__all__ = ["TaskSpec", "run_level_tile", "run_output_chunk", "level_denoiser", "quantise",
           "clear_caches"]


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
    memory_budget_mb: float
    dtype: str
    denoiser: tuple[tuple[str, Any], ...]  # the denoiser config section as items
    bit_depth: int
    level_hw: tuple[tuple[int, int], ...]
    level_kind: tuple[str, ...]
    grids: tuple[TileGrid, ...]


_lock = threading.Lock()
_key_locks: dict[Any, threading.Lock] = {}
_denoisers: dict[Any, Any] = {}
_pyramids: dict[Any, Any] = {}


def clear_caches() -> None:
    """Drop the per-process patch indexes (tests; a worker keeps them for its lifetime)."""
    with _lock:
        _denoisers.clear()
        _pyramids.clear()
        _key_locks.clear()


def _key_lock(key: Any) -> threading.Lock:
    with _lock:
        return _key_locks.setdefault(key, threading.Lock())


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
    if spec.backends[level] == "fast":
        # the fast denoiser keeps per-window state (bind): one per worker thread
        key += (threading.get_ident(),)
    with _key_lock(key):
        dn = _denoisers.get(key)
        if dn is None:
            dn = _build_denoiser(spec, level, _ref_pyramid(spec, device)[level])
            _denoisers[key] = dn
    return dn


def _build_denoiser(spec: TaskSpec, level: int, ref_level):
    """Mirror of ``api.sample_levels``' per-level denoiser construction."""
    from ..diffusion.generator import make_denoise
    from ..diffusion.patch_index import PatchIndex

    backend = spec.backends[level]
    p = spec.patch_size
    if backend != "fast":
        index = PatchIndex.from_image(ref_level, p)
        return make_denoise(index, patch_size=p, rho=spec.rho, backend=backend,
                            memory_budget_mb=spec.memory_budget_mb, dtype=spec.dtype)
    from ..diffusion.fast import FastParams

    dn = dict(spec.denoiser)
    c = ref_level.shape[0]
    max_entries = max(1, dn["index_budget_mb"] * 2**20 // (c * p * p * 4 + 32))
    index = PatchIndex.from_image(ref_level, p, max_entries=max_entries,
                                  prune_tolerance=dn["prune_tolerance"])
    fast = FastParams(candidates=dn["candidates"], broad_steps=dn["broad_below_steps"],
                      query_stride=dn["query_stride"], probes=dn["probes"], dtype=dn["dtype"],
                      memory_budget_mb=dn["memory_budget_mb"])
    return make_denoise(index, patch_size=p, rho=spec.rho, backend=backend,
                        memory_budget_mb=dn["memory_budget_mb"], dtype=dn["dtype"], fast=fast,
                        pca_dims=dn["pca_dims"], dictionary_size=dn["dictionary_size"])


def quantise(model: np.ndarray, bit_depth: int) -> np.ndarray:
    """Model space [-1, 1] -> uint8/uint16, exactly as ``api.generate`` + ``write_image``."""
    top = 255 if bit_depth == 8 else 65535
    unit = (np.clip(model, -1.0, 1.0) + 1.0) / 2.0
    q = np.rint(np.clip(unit.astype(np.float32), 0.0, 1.0) * np.float32(top))
    return q.astype(np.uint8 if bit_depth == 8 else np.uint16)


def _test_delay() -> None:
    # test hook: slows every tile so a test can kill a run part-way (tests/test_pipeline.py)
    delay = os.environ.get("GIGAPATCH_TEST_TILE_DELAY")
    if delay:
        time.sleep(float(delay))


def run_level_tile(spec: TaskSpec, level: int, iy: int, ix: int, *deps: Any) \
        -> tuple[str, int, int, int, float]:
    """Sample tile (iy, ix) of ``level`` (the whole level for a global one) into the store.

    Returns ``(kind, level, iy, ix, seconds)``; seconds is 0 for a tile already done.
    """
    import torch

    from ..diffusion.generator import coarse_box_for, sample_level, upsample_to_box
    from ..diffusion.schedules import flow_linear

    store = RunStore.open(spec.run_dir)
    done_name = f"done/{level}"
    if store.is_done(done_name, iy, ix):
        return ("level", level, iy, ix, 0.0)
    t0 = time.perf_counter()
    dev = torch.device(spec.device)
    tile = spec.grids[level].tile_at(iy, ix)
    win = tile.window
    kind = spec.level_kind[level]
    with torch.inference_mode():
        if kind == "resize":
            from ..api import _resize

            x = _resize(_ref_pyramid(spec, dev)[0], spec.level_hw[0])
        else:
            coarse_up = None
            if level > 0:
                cb = Box(*coarse_box_for(win.as_tuple(), spec.level_hw[level - 1]))
                coarse = torch.from_numpy(store.read(f"levels/{level - 1}", cb)).to(dev)
                coarse_up = upsample_to_box(coarse, (cb.y0, cb.x0), win.as_tuple())
            x = sample_level(level_denoiser(spec, level, dev), box=win.as_tuple(),
                             channels=spec.channels, seed=spec.seed, level=level,
                             sigmas=flow_linear(spec.steps, spec.s_min), eta=spec.eta,
                             coarse_up=coarse_up, device=dev)
        c = tile.core_in_window
        core = x[:, c.y0:c.y1, c.x0:c.x1].float().cpu().numpy()
    store.write(f"levels/{level}", tile.core, core)
    if level == len(spec.level_hw) - 1:
        store.write("output/0", tile.core, quantise(core, spec.bit_depth))
    _test_delay()
    store.mark_done(done_name, iy, ix)
    return ("level", level, iy, ix, time.perf_counter() - t0)


def run_output_chunk(spec: TaskSpec, r: int, iy: int, ix: int, *deps: Any) \
        -> tuple[str, int, int, int, float]:
    """Chunk (iy, ix) of output pyramid level ``r`` >= 1 by 2x reduction of level r - 1."""
    store = RunStore.open(spec.run_dir)
    name = f"output_done/{r}"
    if store.is_done(name, iy, ix):
        return ("output", r, iy, ix, 0.0)
    t0 = time.perf_counter()
    store.reduce_output_chunk(r, iy, ix)
    store.mark_done(name, iy, ix)
    return ("output", r, iy, ix, time.perf_counter() - t0)
