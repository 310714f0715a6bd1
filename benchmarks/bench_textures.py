"""Tileable textures: the seam across the wrap edge, and the cost of sampling on a torus.

    python benchmarks/bench_textures.py                        # 5 textures, 512x512, CPU
    python benchmarks/bench_textures.py --size 256x256 --set sampler.steps=5
    python benchmarks/bench_textures.py --tiled 8192x8192      # + one tiled run (tileable)

For each texture (resized so its short side is --ref-side), one plain and one tileable
(``sampler.tileable=xy``) sample with the same seed, in turn, in the same process, so the
cost ratio is side by side. Per row: the seam score across the wrap-around edge
(``gigapatch.metrics.wrap_seam_score``: boundary / interior mean |gradient|, image and
worst Laplacian band; ~1.0 = no seam), for the plain and the tileable output, and the
seconds of each run. The summary gives the total tileable / plain time ratio (issue 11's
floor: <= 1.1x) and the predicted per-step cost of the circular pad,
((W + P - 1) / (W - P + 1))^2 at the finest level. JSON to stdout (and --out).
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

#: five stochastic textures of ../shared/data (SOURCES.md)
TEXTURES = ["singan/starry_night.png", "singan/wild_bush.jpg", "sigd16/16.jpg",
            "sigd16/1.jpg", "singan/cows.png"]


def _run(ref: np.ndarray, size: tuple[int, int], cfg, seed: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = api.generate(ref, size=size, seed=seed, config=cfg, device="cpu")
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refs", nargs="*", default=TEXTURES)
    ap.add_argument("--size", default="512x512", help="WxH of every output")
    ap.add_argument("--ref-side", type=int, default=256,
                    help="resize each reference so its short side is this (0: as is)")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiled", default=None, metavar="WxH",
                    help="also one tileable tiled run of this size (first reference), "
                         "written to a temporary run dir")
    ap.add_argument("--threads", type=int, default=None)
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
        plain, t_plain = _run(ref, (w, h), plain_cfg, args.seed)
        tiled, t_tile = _run(ref, (w, h), tile_cfg, args.seed)
        sp, st = wrap_seam_score(plain), wrap_seam_score(tiled)
        plan = api.plan_levels(ref.shape[:2], tiled.shape[:2], tile_cfg)
        rows.append({
            "reference": name, "ref_hw": list(ref.shape[:2]), "out_hw": list(tiled.shape[:2]),
            "levels": len(plan),
            "backends": [api.level_backend(tile_cfg, torch.device("cpu"), ref_hw=lp.ref_hw,
                                           out_hw=lp.out_hw, channels=ref.shape[2])
                         for lp in plan],
            "wrap_seam_plain": {"image": sp.image, "worst": sp.worst},
            "wrap_seam_tileable": {"image": st.image, "worst": st.worst},
            "seconds_plain": t_plain, "seconds_tileable": t_tile,
            "ratio": t_tile / t_plain})
        print(f"{name}: seam plain {sp.image:.2f} tileable {st.image:.2f}; "
              f"{t_plain:.1f} s / {t_tile:.1f} s", file=sys.stderr)
    p = plain_cfg.sampler.patch_size
    result = {
        "benchmark": "textures", "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "load": os.getloadavg(), "torch_threads": torch.get_num_threads(),
        "preset": args.preset or "default", "overrides": args.sets, "size": [h, w],
        "rows": rows,
        "total_ratio": sum(r["seconds_tileable"] for r in rows)
        / max(1e-9, sum(r["seconds_plain"] for r in rows)),
        "predicted_finest_step_ratio": ((w + p - 1) / (w - p + 1)) * ((h + p - 1) / (h - p + 1)),
    }
    if args.tiled:
        import tempfile

        from gigapatch.pipeline import run_tiled

        tw, th = (int(v) for v in args.tiled.lower().split("x"))
        ref = load_scaled(find_reference(args.refs[0]), 1.0)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            res = run_tiled(ref, Path(d) / "t.tif", size=(tw, th), seed=args.seed,
                            config=tile_cfg, device="cpu", run_dir=Path(d) / "run")
            result["tiled"] = {"size": [th, tw], "seconds": time.perf_counter() - t0,
                               "plan": res.plan.table()}
    emit_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
