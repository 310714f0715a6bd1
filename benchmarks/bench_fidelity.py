"""Fast vs exact: PSNR per level on the same seed, and quality over >= 10 references.

For every reference (``_common.REFERENCES``, resized by ``--scale``) and seed, the exact
sampler (cached on disk: ``$GIGAPATCH_BENCH_CACHE``) and the candidate backends run on the
same noise. Reported per backend: PSNR to exact per level (finest last), patch SWD to the
reference (``gigapatch.metrics.patch_swd``, mean over the multi-scale levels), pixel
diversity over the seeds (``gigapatch.metrics.pixel_diversity``), seconds per sample, and
the ratios fast / exact of the mean SWD and mean diversity (target: within 10%).

    python benchmarks/bench_fidelity.py --scale 0.4 --seeds 0 1 --out fid.json
    python benchmarks/bench_fidelity.py --device cuda --scale 1.0      # paper size, on a GPU

JSON to stdout (and ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (REFERENCES, emit_result, exact_cached, find_reference,  # noqa: E402
                     load_scaled, make_config, run_levels)
from gigapatch.metrics import patch_swd, pixel_diversity, psnr  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refs", nargs="*", default=REFERENCES)
    ap.add_argument("--scale", type=float, default=0.4)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default=None, help="config preset for the fast runs")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="override for the fast runs, section.key=value (repeatable)")
    ap.add_argument("--backend", default="auto",
                    help="backend of the compared runs (auto: the preset's per-level choice)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    base = make_config()
    cfg = make_config(args.sets, args.preset)
    per_ref = []
    for name in args.refs:
        ref = load_scaled(find_reference(name), args.scale)
        ex_s, fa_s, ps, tf, te = [], [], [], [], []
        for seed in args.seeds:
            ex, t_ex = exact_cached(name, ref, base, seed, dev, args.scale)
            fa, t_fa = run_levels(ref, cfg, seed, dev,
                                  backends=None if args.backend == "auto" else [args.backend] * 64)
            ex_s.append(ex[-1])
            fa_s.append(fa[-1])
            ps.append([psnr(a, b) for a, b in zip(fa, ex)])
            tf.append(t_fa)
            te.append(t_ex)
        swd_ex = float(np.mean([float(patch_swd(s, ref)) for s in ex_s]))
        swd_fa = float(np.mean([float(patch_swd(s, ref)) for s in fa_s]))
        div_ex = pixel_diversity(ex_s, ref) if len(ex_s) > 1 else None
        div_fa = pixel_diversity(fa_s, ref) if len(fa_s) > 1 else None
        row = {"ref": name, "hw": list(ref.shape[:2]),
               "psnr_per_level": np.mean(np.array(ps), 0).round(2).tolist(),
               "swd_exact": swd_ex, "swd_fast": swd_fa,
               "diversity_exact": div_ex, "diversity_fast": div_fa,
               "seconds_exact": float(np.mean([t for t in te if t is not None])),
               "seconds_fast": float(np.mean(tf))}
        per_ref.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    mean = lambda k: float(np.mean([r[k] for r in per_ref if r[k] is not None]))  # noqa: E731
    summary = {
        "swd_exact": mean("swd_exact"), "swd_fast": mean("swd_fast"),
        "swd_ratio": mean("swd_fast") / mean("swd_exact"),
        "psnr_finest_mean": float(np.mean([r["psnr_per_level"][-1] for r in per_ref])),
        "seconds_fast": mean("seconds_fast"), "seconds_exact": mean("seconds_exact"),
    }
    if len(args.seeds) > 1:
        summary["diversity_exact"] = mean("diversity_exact")
        summary["diversity_fast"] = mean("diversity_fast")
        summary["diversity_ratio"] = summary["diversity_fast"] / summary["diversity_exact"]
    result = {"benchmark": "fidelity", "date": time.strftime("%Y-%m-%d %H:%M"),
              "device": str(dev), "torch": torch.__version__, "scale": args.scale,
              "seeds": args.seeds, "backend": args.backend, "overrides": args.sets,
              "preset": args.preset, "summary": summary, "per_reference": per_ref}
    emit_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
