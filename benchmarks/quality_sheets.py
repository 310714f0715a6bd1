#!/usr/bin/env python
"""Contact sheets of bench_quality.py's saved samples: one row per reference.

A row is the reference, then each config's samples (seeds 0 and 1, configs in the order
given), then the published peer samples of the image where they exist (GPNN, SinGAN),
laid out with ``gigapatch.metrics.contact_sheet`` (what ``gigapatch eval --sheet`` draws)
at 128 px high, ``--rows`` references per sheet.

    python benchmarks/bench_quality.py -n 2 --save-samples --name q --configs default paper
    python benchmarks/quality_sheets.py benchmarks/results/q_samples --out sheets/

Writes OUT/sheet_SET_FIRST-LAST.png and prints their paths as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench_quality import DATA, peer_files


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, 2)
    return a[..., :3]


def main(argv: list[str] | None = None) -> int:
    from gigapatch.metrics import contact_sheet, list_images
    from gigapatch.storage import read_image

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("samples", type=Path, help="bench_quality's NAME_samples folder")
    ap.add_argument("--data-root", type=Path, default=DATA,
                    help=f"the reference sets and peer_outputs (default {DATA})")
    ap.add_argument("--configs", nargs="+", default=["default", "paper"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rows", type=int, default=10, help="references per sheet")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for set_dir in sorted(p for p in args.samples.iterdir() if p.is_dir()):
        name = set_dir.name
        # the set's references in bench_quality's order, those it saved samples of
        # (SET_STEM_sSEED.png: bench_quality._save)
        refs = [r for r in list_images([args.data_root / name])
                if (set_dir / args.configs[0] / f"{name}_{r.stem}_s{args.seeds[0]}.png").exists()]
        for c0 in range(0, len(refs), args.rows):
            chunk = refs[c0:c0 + args.rows]
            imgs, labels, cols = [], [], 0
            for ref in chunk:
                row, lab = [_rgb(read_image(ref)[0])], [f"{name}/{ref.name}"]
                for cfg in args.configs:
                    for seed in args.seeds:
                        row.append(_rgb(read_image(set_dir / cfg / f"{name}_{ref.stem}_s{seed}.png")[0]))
                        lab.append(f"{cfg} s{seed}")
                for method, f in peer_files(args, name, ref).items():
                    row.append(_rgb(read_image(f)[0]))
                    lab.append(method)
                cols = max(cols, len(row))
                imgs += row
                labels += lab
            path = args.out / f"sheet_{name}_{c0 + 1}-{c0 + len(chunk)}.png"
            contact_sheet(imgs[0], imgs[1:], labels=labels, height=128, columns=cols, path=path)
            written.append(str(path))
    print(json.dumps({"sheets": written}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
