"""Shared helpers of the benchmarks: references, configs, cached exact runs."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gigapatch.api import load_reference, sample_levels
from gigapatch.config import Config, load_config
from gigapatch.diffusion.priors import PriorSettings
from gigapatch.storage.atomic import atomic_path

DATA = Path(os.environ.get("GIGAPATCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
#: ten references of about 186 x 248 (SinGAN inputs and SIGD16), the quality set
REFERENCES = [
    "singan/balloons.png", "singan/colusseum.png", "singan/cows.png", "singan/lightning1.png",
    "singan/mountains3.png", "singan/starry_night.png", "singan/volacano.png",
    "singan/tree.png", "sigd16/1.jpg", "sigd16/5.jpg",
]
CACHE = Path(os.environ.get("GIGAPATCH_BENCH_CACHE", Path.home() / ".cache" / "gigapatch-bench"))


def find_reference(name: str) -> Path:
    p = Path(name)
    if p.exists():
        return p
    for base in (DATA, Path(__file__).resolve().parents[1] / "tests" / "data"):
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(name)


def load_scaled(path: Path, scale: float) -> np.ndarray:
    """A reference in [0, 1], (H, W, 3), resized by ``scale`` (antialiased bicubic)."""
    ref = load_reference(path)
    if ref.shape[2] == 1:
        ref = np.repeat(ref, 3, 2)
    if scale != 1.0:
        t = torch.from_numpy(ref.transpose(2, 0, 1).copy())[None]
        hw = (max(16, round(ref.shape[0] * scale)), max(16, round(ref.shape[1] * scale)))
        t = F.interpolate(t, size=hw, mode="bicubic", antialias=True, align_corners=False)
        ref = t[0].clamp(0, 1).numpy().transpose(1, 2, 0).copy()
    return np.ascontiguousarray(ref, dtype=np.float32)


def make_config(overrides: list[str] | None = None, preset: str | None = None) -> Config:
    return load_config(preset, list(overrides or []))


def run_levels(ref: np.ndarray, cfg: Config, seed: int, device: torch.device,
               backends: list[str] | None = None, out_hw=None) -> tuple[list[np.ndarray], float]:
    """Sample one output; returns every level as (H, W, C) in [0, 1] and the seconds."""
    out_hw = out_hw or ref.shape[:2]
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    levels = sample_levels(ref, out_hw, cfg, seed=seed, device=device, backends=backends)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return [((lv.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy() for lv in levels], dt


def _exact_key(name: str, cfg: Config, seed: int, scale: float) -> str:
    key = {"ref": name, "scale": scale, "seed": seed, "sampler": cfg.to_dict()["sampler"]}
    # the priors change the exact sampler too; the key names them only when one is on, so
    # the exact runs cached before the priors existed (all off) keep their keys
    prior = cfg.to_dict()["prior"]
    if PriorSettings(**prior).active:
        key["prior"] = prior
    return json.dumps(key, sort_keys=True)


def exact_cache_path(name: str, cfg: Config, seed: int, scale: float) -> Path:
    """Where the exact run of (reference, sampler settings, seed, scale) is cached."""
    h = hashlib.sha256(_exact_key(name, cfg, seed, scale).encode()).hexdigest()[:20]
    return CACHE / f"exact-{h}.npz"


def exact_cached(name: str, ref: np.ndarray, cfg: Config, seed: int, device: torch.device,
                 scale: float) -> tuple[list[np.ndarray], float | None]:
    """The exact sampler's levels for (reference, scale, sampler config, seed), cached on disk."""
    path = exact_cache_path(name, cfg, seed, scale)
    key = _exact_key(name, cfg, seed, scale)
    if path.exists():
        z = np.load(path)
        n = int(z["n"])
        return [z[f"l{i}"] for i in range(n)], float(z["seconds"])
    n_levels = None
    levels, dt = run_levels(ref, cfg, seed, device, backends=["exact"] * 64)
    n_levels = len(levels)
    CACHE.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, n=n_levels, seconds=dt, key=key, **{f"l{i}": lv for i, lv in enumerate(levels)})
    return levels, dt


def emit_result(result: dict, out: str | None) -> None:
    """Print a benchmark's result as JSON to stdout and, with ``out``, write it there too.

    Parameters
    ----------
    result : dict
        The benchmark's result (JSON-serialisable).
    out : str or None
        A file to write the same JSON text to; nothing is written when None or empty.
    """
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        Path(out).write_text(text)
