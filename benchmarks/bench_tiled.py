"""Benchmark of the tiled gigapixel pipeline: wall time per phase, tiles/s, peak RSS,
halo overhead per level, and both pyramidal TIFF writers. JSON on stdout (and --json).

    python benchmarks/bench_tiled.py --size 8192x8192                # CPU
    python benchmarks/bench_tiled.py --device cuda --size 32768x32768  # GPU

Run one size per process: peak RSS (ru_maxrss) is the process's. The run store and the
outputs go to --work (default a temporary folder, removed unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def git_head() -> str | None:
    """The checkout's commit (with ``+dirty`` for local changes), or None outside git."""
    import subprocess
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "src"], capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="8192x8192", help="output WxH")
    ap.add_argument("--ref", default=str(ROOT / "tests" / "data" / "balloons.png"),
                    help="reference image, or a .npy float array (H, W, C) in [0, 1]")
    ap.add_argument("--ref-crop", type=int, default=32,
                    help="use the top-left NxN of the reference (0 = whole); the exact "
                         "denoiser's cost per pixel grows with the reference's patch count")
    ap.add_argument("--config", default="gigapixel")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tile", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--writers", default="tifffile,vips",
                    help="comma list of TIFF writers to time (tifffile, vips), or none")
    ap.add_argument("--work", default=None, help="folder for the run store and outputs")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args(argv)

    t_import = time.perf_counter()
    load0 = list(os.getloadavg())
    import torch

    from gigapatch.api import generate_tiled, load_reference
    from gigapatch.config import load_config
    from gigapatch.pipeline import TiledOptions
    from gigapatch.pipeline.outmeta import resolve_output_metadata
    from gigapatch.pipeline.run import _write_output
    from gigapatch.storage.diskspace import used_bytes
    from gigapatch.storage.runstore import RunStore

    w, h = (int(v) for v in a.size.lower().split("x"))
    ref = load_reference(np.load(a.ref) if a.ref.endswith(".npy") else a.ref)
    if a.ref_crop:
        ref = np.ascontiguousarray(ref[:a.ref_crop, :a.ref_crop])
    cfg = load_config(a.config, a.overrides)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="gp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / f"run-{w}x{h}"
    phases = {"import": time.perf_counter() - t_import}
    print(f"[bench] {w}x{h} on {a.device}, ref {ref.shape[1]}x{ref.shape[0]}, "
          f"work {work}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    res = generate_tiled(ref, None, size=(w, h), seed=0, config=cfg, device=a.device,
                         options=TiledOptions(run_dir=run_dir, tile=a.tile, tiled=None,
                                              workers=a.workers),
                         progress=a.progress)
    phases["sample+pyramid"] = time.perf_counter() - t0
    print(f"[bench] sampled in {phases['sample+pyramid']:.1f} s, rss {rss_mb():.0f} MB",
          file=sys.stderr, flush=True)
    rss_after_sampling = rss_mb()
    # the run store only grows during a run (chunks are written once, never deleted before
    # the end), so its size now is its peak: every level's scratch plus the output levels
    scratch = used_bytes(run_dir)

    writers = {}
    store = RunStore.open(run_dir)
    for name in [x for x in a.writers.split(",") if x and x != "none"]:
        out = work / f"out-{name}.tif"
        t0 = time.perf_counter()
        try:
            _write_output(store, res.plan, out, "tiff", cfg, name,
                          resolve_output_metadata(None, cfg, (h, w), ref.shape[2]))
            writers[name] = {"seconds": time.perf_counter() - t0,
                             "bytes": out.stat().st_size}
        except Exception as exc:  # report, keep going
            writers[name] = {"error": str(exc)}
        print(f"[bench] writer {name}: {writers[name]}", file=sys.stderr, flush=True)
        if out.exists() and not a.keep:
            out.unlink()

    levels = []
    for lv, grid in zip(res.plan.levels, res.plan.grids):
        label = f"level {lv.level + 1}/{len(res.plan.levels)}"
        secs = res.level_seconds.get(label, 0.0)
        levels.append({
            "level": lv.level, "width": lv.out_hw[1], "height": lv.out_hw[0],
            "mode": lv.mode, "backend": lv.backend, "tiles": len(grid), "halo": lv.halo,
            "computed_over_output": round(grid.overhead(), 4),
            "task_seconds": round(secs, 2),
            "tiles_per_task_second": round(len(grid) / secs, 4) if secs else None,
        })
    tiles = sum(len(grid) for grid in res.plan.grids)
    out_px = w * h
    computed = sum(grid.computed_pixels() for grid in res.plan.grids)
    level_px = sum(lv.out_hw[0] * lv.out_hw[1] for lv in res.plan.levels)
    result = {
        "bench": "tiled", "size": [w, h], "megapixels": out_px / 1e6,
        "device": a.device, "machine": f"{platform.node()} {platform.machine()} "
                                       f"{os.cpu_count()} cpus",
        "gpu": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else None,
        "date": time.strftime("%Y-%m-%d"), "config": a.config, "overrides": a.overrides,
        "reference": [ref.shape[1], ref.shape[0]], "tile": res.plan.tile,
        "workers": a.workers, "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "writers": writers, "tasks": res.tasks_total, "tiles": tiles,
        "tiles_per_s": round(tiles / phases["sample+pyramid"], 4),
        "output_mp_per_s": round(out_px / 1e6 / phases["sample+pyramid"], 4),
        "halo_overhead_all_levels": round(computed / level_px, 4),
        "levels": levels,
        "peak_rss_mb": round(rss_mb(), 1), "rss_after_sampling_mb": round(rss_after_sampling, 1),
        "scratch_bytes": scratch, "scratch_bytes_per_output_px": round(scratch / out_px, 3),
        "torch_threads": torch.get_num_threads(), "git": git_head(),
        "loadavg_start": load0, "loadavg_end": list(os.getloadavg()),
        "wall_s": round(time.perf_counter() - t_import, 2),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    if not a.keep and not a.work:
        shutil.rmtree(work, ignore_errors=True)
    elif not a.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
