"""Planning cost of a huge tiled request: time and peak RSS to plan, open the run store and
build the task graph, without running a tile (issue 12 item 3: "planning a 100-gigapixel
run takes <= 10 s and memory independent of the tile count").

    python benchmarks/bench_planning.py --size 316228x316228 [--preset default]
        [--tile N] [--set section.key=value ...] [--run-dir DIR] [--whole-graph]

One request per process (peak RSS is the process's ``ru_maxrss``). The free-disk check is
switched off here (a 100 GP request needs terabytes: the check would refuse it before the
graph), so the run store is created in ``--run-dir`` (default: a temporary folder,
removed after). The graph is built the way ``run_tiled`` builds it (in waves of at most
``run.WAVE_TASKS`` tasks, each dropped before the next is built: ``TiledJob.waves``), or
with ``--whole-graph`` all at once (``TiledJob.graph``, what a run did before the waves).
No tile is computed. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", required=True, metavar="WxH")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--tile", type=int, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--whole-graph", action="store_true",
                    help="build the whole graph at once (TiledJob.graph) instead of waves")
    args = ap.parse_args(argv)

    from gigapatch.config import load_config
    from gigapatch.pipeline import run
    from gigapatch.storage import read_image

    w, h = (int(v) for v in args.size.lower().split("x"))
    ref = read_image(ROOT / "tests" / "data" / "balloons.png")[0]
    cfg = load_config(args.preset, tuple(args.sets))
    run.check_free_space = lambda needs: None  # benchmark only: reach the graph
    tmp = None
    run_dir = Path(args.run_dir) if args.run_dir else \
        Path(tempfile.mkdtemp(prefix="gp-bench-plan-")) / "run"
    if args.run_dir is None:
        tmp = run_dir.parent
    rss0 = _rss_mib()
    t0 = time.perf_counter()
    job = run.TiledJob.prepare(ref, (h, w), None, seed=0, config=cfg, device="cpu",
                               options=run.TiledOptions(run_dir=run_dir, tiled=True,
                                                        tile=args.tile))
    t_prepare = time.perf_counter() - t0
    rss_prepare = _rss_mib()
    t1 = time.perf_counter()
    tasks = waves = biggest = 0
    try:
        if args.whole_graph:
            g = job.graph()
            tasks = biggest = len(g.keys)
            waves = 1
            t_first = time.perf_counter() - t1
            del g
        else:
            t_first = None
            for g, _last in job.waves():  # not computed: only built and dropped
                if t_first is None:
                    t_first = time.perf_counter() - t1
                waves += 1
                tasks += len(g.keys)
                biggest = max(biggest, len(g.keys))
    finally:
        job.release()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    t_graph = time.perf_counter() - t1
    out = {
        "size": f"{w}x{h}", "gigapixels": round(w * h / 1e9, 2), "preset": args.preset,
        "sets": args.sets, "tile": job.plan.tile,
        "levels": [f"{lv.out_hw[1]}x{lv.out_hw[0]} {lv.mode} tiles={len(gr)}"
                   for lv, gr in zip(job.plan.levels, job.plan.grids)],
        "mode": "whole-graph" if args.whole_graph else "waves",
        "tasks": tasks, "waves": waves, "largest_wave_tasks": biggest,
        "seconds_prepare": round(t_prepare, 2),
        "seconds_first_graph": round(t_first or 0.0, 2),
        "seconds_all_graphs": round(t_graph, 2),
        "seconds_total": round(t_prepare + t_graph, 2),
        "peak_rss_mib_start": round(rss0, 1), "peak_rss_mib_after_prepare": round(rss_prepare, 1),
        "peak_rss_mib": round(_rss_mib(), 1),
        "python": sys.version.split()[0],
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
