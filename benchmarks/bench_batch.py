"""Batch throughput: ``gigapatch batch`` with 1 vs 2 local worker processes against a loop of
single ``gigapatch generate`` commands, over places50 references (default preset, seed 0,
each output at its reference's size). Prints JSON.

Every figure is the wall time of a whole process (start-up, validation, cluster start and
shutdown included), because that is what a user waits for:

    python benchmarks/bench_batch.py --items 40 --out benchmarks/results/batch_40.json

- ``batch_w1`` / ``batch_w2``: ``gigapatch batch m.yaml --workers W -q`` (W=1: one worker
  process with every core for torch; W=2: two processes with cores/2 torch threads each);
- ``loop``: ``gigapatch generate REF -o OUT -q`` once per item (torch on every core).
- ``overhead_per_item_s``: (loop - batch) / items for each W: what the batch saves (> 0)
  or costs (< 0) per item against single commands; the floor is batch <= loop.
- ``identical_w1_w2``: whether the two batch runs wrote byte-identical pixels (they run
  torch with different thread counts; see issue 14 item 1).

Needs the places50 folder (``--data``, default ../shared/data/places50 or
$GIGAPATCH_DATA/places50).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path(os.environ.get("GIGAPATCH_DATA", HERE.parents[1] / "shared" / "data")) \
    / "places50"


def _manifest(folder: Path, refs: list[Path], preset: str) -> Path:
    lines = [f"defaults: {{preset: {preset}, seed: 0}}", "items:"]
    for r in refs:
        lines.append(f"  - {{reference: '{r}', output: 'out/{r.stem}.png'}}")
    p = folder / "m.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    from gigapatch.storage import read_image

    return {p.name: read_image(p)[0] for p in sorted(folder.glob("*.png"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--no-loop", action="store_true", help="skip the loop of single commands")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    refs = sorted(args.data.glob("*.jpg"), key=lambda p: int(p.stem))[:args.items]
    if len(refs) < args.items:
        ap.error(f"{args.data} has {len(refs)} references, fewer than --items {args.items}")
    gp = [sys.executable, "-m", "gigapatch"]
    result: dict = {"benchmark": "batch", "items": len(refs), "preset": args.preset,
                    "seeds": [0], "references": f"places50 1..{len(refs)} ({args.data})",
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_before": os.getloadavg()},
                    "device": "cpu", "seconds": {}}
    pixels = {}
    with tempfile.TemporaryDirectory(prefix="gp-bench-batch-") as tmp:
        work = Path(tmp)
        for w in (1, 2):
            run = work / f"w{w}"
            (run / "out").mkdir(parents=True)
            m = _manifest(run, refs, args.preset)
            s = _timed(gp + ["batch", str(m), "--workers", str(w), "--device", "cpu", "-q"],
                       run)
            summary = json.loads((run / "m.yaml.gp-batch" / "summary.json").read_text())
            assert summary["counts"]["done"] == len(refs), summary["counts"]
            result["seconds"][f"batch_w{w}"] = round(s, 2)
            result[f"task_seconds_w{w}"] = round(sum(r["seconds"] for r in summary["items"]), 2)
            pixels[w] = _pixels(run / "out")
            print(f"batch, {w} worker(s): {s:.1f} s", file=sys.stderr)
        result["identical_w1_w2"] = all(np.array_equal(pixels[1][k], pixels[2][k])
                                        for k in pixels[1])
        if not args.no_loop:
            loop = work / "loop"
            (loop / "out").mkdir(parents=True)
            t0 = time.perf_counter()
            for r in refs:
                subprocess.run(gp + ["generate", str(r), "-o", str(loop / "out" / f"{r.stem}.png"),
                                     "--config", args.preset, "--seed", "0", "--device", "cpu",
                                     "-q"], check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
            s = time.perf_counter() - t0
            result["seconds"]["loop"] = round(s, 2)
            print(f"loop of single commands: {s:.1f} s", file=sys.stderr)
            n = len(refs)
            result["overhead_per_item_s"] = {
                f"batch_w{w}": round((s - result["seconds"][f"batch_w{w}"]) / n, 2)
                for w in (1, 2)}
            result["batch_not_slower_than_loop"] = min(
                result["seconds"]["batch_w1"], result["seconds"]["batch_w2"]) <= s
        sec = result["seconds"]
        result["items_per_minute"] = {k: round(60 * len(refs) / v, 2) for k, v in sec.items()}
        result["ratio_w2_over_w1"] = round(sec["batch_w2"] / sec["batch_w1"], 3)
        result["machine"]["load_after"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
