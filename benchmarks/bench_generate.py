"""Seconds per sample: exact vs fast side by side, same seeds, several output sizes.

    python benchmarks/bench_generate.py                       # CPU: 186x248, exact + fast
    python benchmarks/bench_generate.py --quick               # fast only, one repeat
    python benchmarks/bench_generate.py --device cuda --sizes 1024x1024 4096x4096 \\
        --backends fast fused

Each row: backend, output size (WxH), seconds per sample (median over --repeats, the
per-level index build included), peak GPU memory on CUDA, the per-level backends that ran.
Exact/fused rows are skipped (``"skipped"``) when one exact step of the finest level would
exceed --max-exact-tflop. JSON to stdout (and ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit_result, find_reference, load_scaled, make_config  # noqa: E402
from gigapatch.api import sample_levels  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default="singan/balloons.png")
    ap.add_argument("--sizes", nargs="*", default=None, help="WxH (default: the reference's)")
    ap.add_argument("--backends", nargs="*", default=["exact", "fast"],
                    help="exact | fused | fast | auto (auto: the default preset's choice)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--preset", default=None)
    ap.add_argument("--max-exact-tflop", type=float, default=None,
                    help="skip exact/fused when one finest step costs more (default: 5 on "
                         "CPU, 500 on CUDA)")
    ap.add_argument("--quick", action="store_true", help="fast only, one repeat")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.backends = [b for b in args.backends if b in ("fast", "auto")] or ["fast"]
        args.repeats = 1
    dev = torch.device(args.device)
    limit = args.max_exact_tflop
    if limit is None:
        limit = 500.0 if dev.type == "cuda" else 5.0
    ref = load_scaled(find_reference(args.ref), 1.0)
    sizes = [parse_size(s) for s in args.sizes] if args.sizes else [ref.shape[:2]]
    cfg = make_config(args.sets, args.preset)
    p = cfg.sampler.patch_size
    rows = []
    for hw in sizes:
        for backend in args.backends:
            n_ref = (ref.shape[0] - p + 1) * (ref.shape[1] - p + 1)
            n_out = (hw[0] - p + 1) * (hw[1] - p + 1)
            step_tflop = 4 * n_ref * n_out * 3 * p * p / 1e12
            row = {"backend": backend, "size": f"{hw[1]}x{hw[0]}",
                   "pixels": hw[0] * hw[1], "exact_step_tflop": round(step_tflop, 3)}
            if backend in ("exact", "fused") and step_tflop > limit:
                row["skipped"] = f"one exact step is {step_tflop:.1f} TFLOP > {limit}"
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                continue
            backends = None if backend == "auto" else [backend] * 64
            times = []
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            for _ in range(args.repeats):
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t = time.perf_counter()
                out = sample_levels(ref, hw, cfg, seed=args.seed, device=dev, backends=backends)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                times.append(time.perf_counter() - t)
                del out
            row["seconds"] = round(statistics.median(times), 3)
            row["seconds_all"] = [round(t, 3) for t in times]
            row["seconds_per_mpixel"] = round(row["seconds"] / (hw[0] * hw[1] / 1e6), 3)
            if dev.type == "cuda":
                row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    result = {"benchmark": "generate", "date": time.strftime("%Y-%m-%d %H:%M"),
              "device": str(dev),
              "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
              else platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
              "torch": torch.__version__, "reference": args.ref, "seed": args.seed,
              "overrides": args.sets, "preset": args.preset, "results": rows}
    emit_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
