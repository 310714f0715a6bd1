"""Tileable textures: the seam across the wrap edge, and the cost of sampling on a torus.

    python benchmarks/bench_textures.py                        # 5 textures, 512x512, CPU
    python benchmarks/bench_textures.py --size 256x256 --set sampler.steps=5

For each texture (resized so its short side is --ref-side), plain and tileable
(``sampler.tileable=xy``) samples with the same seed, in turn in the same process
(``--repeat N``: N pairs in the order plain, tileable, tileable, plain, ... so a drift of
the machine's speed cancels), so the cost ratio is side by side. Per row: the seam score
across the wrap-around edge (``gigapatch.metrics.wrap_seam_score``: boundary / interior
mean |gradient|, image and worst Laplacian band; ~1.0 = no seam), for the plain and the
tileable output, and the wall and CPU (process) seconds of each run (summed over the
repeats). The summary gives the total tileable / plain ratios (issue 11's floor: <= 1.1x)
and the predicted per-step patch-position ratio at the finest level: the torus's
W H / ((W - P + 1)(H - P + 1)) (each torus patch once), beside the ((W + P - 1) /
(W - P + 1))^2 of a circular pad of P - 1 per side. JSON to stdout (and --out). The
tiled 8192^2 tileable run is a CLI command (BENCHMARKS.md "Tileable textures").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit_result, find_reference, load_scaled, make_config  # noqa: E402
from gigapatch import api  # noqa: E402
from gigapatch.metrics import wrap_seam_score  # noqa: E402
from gigapatch.pipeline.plan import plan_levels  # noqa: E402

#: five stochastic textures of ../shared/data (SOURCES.md)
TEXTURES = ["singan/starry_night.png", "singan/wild_bush.jpg", "sigd16/16.jpg",
            "sigd16/1.jpg", "singan/cows.png"]


def _run(ref: np.ndarray, size: tuple[int, int], cfg, seed: int) \
        -> tuple[np.ndarray, float, float]:
    """The output, its wall seconds and its CPU seconds (this process, all threads)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = api.generate(ref, size=size, seed=seed, config=cfg, device="cpu")
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refs", nargs="*", default=TEXTURES)
    ap.add_argument("--size", default="512x512", help="WxH of every output")
    ap.add_argument("--ref-side", type=int, default=256,
                    help="resize each reference so its short side is this (0: as is)")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1,
                    help="plain/tileable pairs per texture (ABBA order)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    plain_cfg = make_config(args.sets, args.preset)
    tile_cfg = make_config(args.sets + ["sampler.tileable=xy"], args.preset)
    rows = []
    for name in args.refs:
        path = find_reference(name)
        ref = load_scaled(path, 1.0)
        if args.ref_side:
            ref = load_scaled(path, args.ref_side / min(ref.shape[:2]))
        secs = {"plain": [0.0, 0.0], "tileable": [0.0, 0.0]}
        for i in range(args.repeat):
            order = [("plain", plain_cfg), ("tileable", tile_cfg)]
            for kind, cfg in order if i % 2 == 0 else order[::-1]:
                out, wall, cpu = _run(ref, (w, h), cfg, args.seed)
                secs[kind][0] += wall
                secs[kind][1] += cpu
                if kind == "plain":
                    plain = out
                else:
                    tiled = out
        t_plain, t_tile = secs["plain"][0], secs["tileable"][0]
        sp, st = wrap_seam_score(plain), wrap_seam_score(tiled)
        plan = plan_levels(ref.shape[:2], tiled.shape[:2], ref.shape[2], tile_cfg)
        rows.append({
            "reference": name, "ref_hw": list(ref.shape[:2]), "out_hw": list(tiled.shape[:2]),
            "levels": len(plan),
            "backends": [lv.backend for lv in plan],
            "wrap_seam_plain": {"image": sp.image, "worst": sp.worst},
            "wrap_seam_tileable": {"image": st.image, "worst": st.worst},
            "repeat": args.repeat,
            "seconds_plain": t_plain, "seconds_tileable": t_tile,
            "cpu_seconds_plain": secs["plain"][1], "cpu_seconds_tileable": secs["tileable"][1],
            "ratio": t_tile / t_plain, "cpu_ratio": secs["tileable"][1] / secs["plain"][1]})
        print(f"{name}: seam plain {sp.image:.2f} tileable {st.image:.2f}; "
              f"wall {t_plain:.1f} s / {t_tile:.1f} s, "
              f"cpu {secs['plain'][1]:.1f} s / {secs['tileable'][1]:.1f} s", file=sys.stderr)
    p = plain_cfg.sampler.patch_size
    result = {
        "benchmark": "textures", "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "load": os.getloadavg(), "torch_threads": torch.get_num_threads(),
        "preset": args.preset or "default", "overrides": args.sets, "size": [h, w],
        "rows": rows,
        "total_ratio": sum(r["seconds_tileable"] for r in rows)
        / max(1e-9, sum(r["seconds_plain"] for r in rows)),
        "total_cpu_ratio": sum(r["cpu_seconds_tileable"] for r in rows)
        / max(1e-9, sum(r["cpu_seconds_plain"] for r in rows)),
        "predicted_finest_step_ratio": (w / (w - p + 1)) * (h / (h - p + 1)),
        "predicted_finest_step_ratio_circular_pad":
            ((w + p - 1) / (w - p + 1)) * ((h + p - 1) / (h - p + 1)),
    }
    emit_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
