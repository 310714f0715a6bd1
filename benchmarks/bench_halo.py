"""Halo overhead of the tiled pipeline per level, from the plan alone (no sampling).

Exact arithmetic: computed pixels = the sum of every tile window's area (core + halo,
clipped to the level), as ``TileGrid.computed_pixels`` counts it. JSON on stdout.

    python benchmarks/bench_halo.py --config default --sizes 4096 8192 32768 --tiles auto 1024

The reference only sets the level sizes of the coarse levels (default: a 4320x3086
reference, the size of /work/shared/data/large/fox2.jpg); tiled levels are those above
``tiling.global_max_pixels``.
"""

from __future__ import annotations

import argparse
import json

from gigapatch.config import load_config
from gigapatch.pipeline.plan import make_plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 32768])
    ap.add_argument("--tiles", nargs="+", default=["auto", "1024"])
    ap.add_argument("--ref", type=int, nargs=2, default=[3086, 4320], metavar=("H", "W"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    rows = []
    for tile in args.tiles:
        cfg = load_config(args.config, [f"tiling.tile={tile}"])
        for side in args.sizes:
            plan = make_plan(tuple(args.ref), (side, side), 3, cfg, seed=0, ref_digest="x",
                             device=args.device)
            tiled = [lv for lv in plan.levels if lv.mode == "tiled"]
            comp = sum(lv.grid.computed_pixels() for lv in tiled)
            pix = sum(lv.out_hw[0] * lv.out_hw[1] for lv in tiled)
            rows.append({
                "config": args.config, "tile_setting": tile, "tile": plan.tile,
                "output": f"{side}x{side}",
                "levels": [{"level": lv.level, "size": f"{lv.out_hw[1]}x{lv.out_hw[0]}",
                            "mode": lv.mode, "backend": lv.backend, "tiles": lv.tiles,
                            "halo": lv.halo, "overhead": round(lv.overhead, 4)}
                           for lv in plan.levels],
                "tiled_overhead": round(comp / pix, 4) if pix else 1.0,
            })
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
