"""Run-store scratch per output pixel of one tiled CLI run (issue 12 item 2).

Runs ``python -m gigapatch generate REF --size WxH --tiled --tile N -o OUT --run-dir RD``
(plus ``--keep-run`` where the CLI has it, so the store survives to be measured; older
trees always keep it) with the ``gigapatch`` package of ``--src`` (default: this tree), then
measures the run store: bytes on disk (allocated blocks, ``du``) and apparent bytes per
output pixel, per array group. The store only grows during a run (nothing is deleted before
the end), so its final size is its peak. Prints one JSON object.

    python benchmarks/bench_scratch.py --size 512x512 --tile 256 --config gigapixel
    python benchmarks/bench_scratch.py --src /path/to/old/tree/src ...   # before/after
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _sizes(path: Path) -> tuple[int, int]:
    alloc = apparent = 0
    for f in path.rglob("*"):
        if f.is_file():
            st = f.stat()
            alloc += st.st_blocks * 512
            apparent += st.st_size
    return alloc, apparent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reference", default=str(HERE.parent / "tests/data/balloons.png"))
    ap.add_argument("--size", default="512x512")
    ap.add_argument("--tile", default="256")
    ap.add_argument("--config", default="gigapixel")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--src", default=str(HERE.parent / "src"))
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=args.src)
    helptext = subprocess.run([sys.executable, "-m", "gigapatch", "generate", "--help"],
                              env=env, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        out, rd = Path(tmp) / "out.tif", Path(tmp) / "run"
        cmd = [sys.executable, "-m", "gigapatch", "generate", args.reference, "--size",
               args.size, "--tiled", "--tile", args.tile, "--config", args.config,
               "--seed", args.seed, "-q", "-o", str(out), "--run-dir", str(rd)]
        if "--keep-run" in helptext:
            cmd.append("--keep-run")
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True)
        seconds = time.perf_counter() - t0
        w, h = (int(v) for v in args.size.split("x"))
        px = w * h
        alloc, apparent = _sizes(rd)
        groups = {}
        for g in ("reference", "levels", "done", "output", "output_done"):
            if (rd / g).exists():
                a, b = _sizes(rd / g)
                groups[g] = {"bytes_on_disk_per_px": round(a / px, 3),
                             "apparent_bytes_per_px": round(b / px, 3)}
        print(json.dumps({
            "command": " ".join(cmd[1:]).replace(tmp, "TMP"), "src": args.src,
            "output_pixels": px, "seconds": round(seconds, 1),
            "scratch_bytes_on_disk_per_px": round(alloc / px, 3),
            "scratch_apparent_bytes_per_px": round(apparent / px, 3),
            "output_file_bytes_per_px": round(out.stat().st_size / px, 3),
            "groups": groups, "load": os.getloadavg()[0],
        }, indent=1))


if __name__ == "__main__":
    main()
