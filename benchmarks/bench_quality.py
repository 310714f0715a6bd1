#!/usr/bin/env python
"""Quality benchmark: generate samples of reference images and score them (docs/EVALUATION.md).

For every reference of the chosen sets (default: singan, places50 and sigd16 in
../shared/data relative to the repository), generate N samples with each compared config
(default: the ``default`` and ``paper`` presets, same seeds) through the public API
``gigapatch.generate`` and score them with ``gigapatch.metrics.evaluate`` (multi-scale patch
SWD and FD, NN coherence / completeness, copy rate at 32 and 64 px, pixel diversity and
pairwise SWD over the N samples) and ``gigapatch.metrics.region_novelty`` (the worst 16 px
block's distance to any reference block in mean colour and high-frequency energy: the
"grey mush" search of issue 13). The published GPNN and SinGAN samples in
../shared/data/peer_outputs (one per input: Places50_*/n.png is the sample of places50/n.jpg,
SIGD16_*/n.png of sigd16/n.jpg) are scored with the same metrics, so the table places
gigapatch among them.

Writes OUT_DIR/NAME.md (a table per set and method: mean +- std over images, where each
image's value is the mean over its samples) and OUT_DIR/NAME.json (everything, per image),
and prints the summary as JSON on stdout. Progress goes to stderr.

Examples::

    python benchmarks/bench_quality.py --peers-only
    python benchmarks/bench_quality.py --limit 2 -n 2 --set sampler.steps=10
    python benchmarks/bench_quality.py --refs my_textures/ --config configs/quality.yaml
    python benchmarks/bench_quality.py --configs paper pos=default,prior.position_strength=100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_SETS = ("singan", "places50", "sigd16")
PEERS = {
    "places50": {"GPNN": "Places50_GPNN_high_var", "SinGAN": "Places50_SINGAN_high_var"},
    "sigd16": {"GPNN": "SIGD16_GPNN", "SinGAN": "SIGD16_SINGAN"},
}
COLUMNS = ("swd", "fd", "coherence", "completeness", "copy32", "copy64", "novelty")


def _log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Generate samples of reference images with gigapatch and score them, "
        "next to the published GPNN and SinGAN samples.",
    )
    p.add_argument("--refs", nargs="+", metavar="PATH",
                   help="reference files or folders (a folder is one set named after it); "
                        f"default: {', '.join(DEFAULT_SETS)} under --data-root")
    p.add_argument("--data-root", type=Path, default=DATA,
                   help=f"where the default sets and peer_outputs live (default {DATA})")
    p.add_argument("--limit", type=int, default=None, metavar="K",
                   help="only the first K references of each set (natural order)")
    p.add_argument("-n", "--num-samples", type=int, default=4, metavar="N",
                   help="samples per reference, seeds SEED..SEED+N-1 (default 4)")
    p.add_argument("--config", default=None, metavar="YAML|PRESET",
                   help="one config file or preset for generation (instead of --configs)")
    p.add_argument("--configs", nargs="+", default=["default", "paper"],
                   metavar="[LABEL=]PRESET[,KEY=VALUE...]",
                   help="configs compared side by side with the same seeds, each a preset "
                        "or YAML with optional overrides, e.g. pos=default,prior.t0=0.7 "
                        "(default: default paper)")
    p.add_argument("--metrics", nargs="+", default=None, metavar="NAME",
                   help="subset of swd fd coherence completeness copy32 copy64 (default all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set sampler.steps=10 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="first generation seed (default 0)")
    p.add_argument("--device", default="auto", help="generation device (default auto)")
    p.add_argument("--metrics-device", default="cpu", help="metrics device (default cpu)")
    p.add_argument("--metric-seed", type=int, default=0,
                   help="seed of the metrics' projections and subsamples (default 0)")
    p.add_argument("--max-side", type=int, default=512, metavar="PX",
                   help="downscale references (and their peer samples) whose longer side "
                        "exceeds this before generating and scoring; 0 = never (default 512)")
    p.add_argument("--peers-only", action="store_true",
                   help="only score the published peer samples (no generation)")
    p.add_argument("--no-peers", action="store_true", help="do not score the peer samples")
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results",
                   help="where NAME.md and NAME.json go (default benchmarks/results)")
    p.add_argument("--name", default="quality", help="output file stem (default quality)")
    p.add_argument("--save-samples", action="store_true",
                   help="also write every sample to OUT_DIR/NAME_samples/SET/LABEL/ (PNG) for "
                        "a contact sheet: gigapatch eval REF SAMPLES... --sheet")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    if args.peers_only and args.no_peers:
        p.error("--peers-only and --no-peers exclude each other")
    if args.num_samples < 1:
        p.error("-n must be >= 1")
    if args.config is not None:
        args.configs = [args.config]
    return args


def parse_configs(items: list[str], overrides: list[str]) -> list[tuple[str, Any, list[str]]]:
    """(label, Config, overrides) of each ``[LABEL=]PRESET[,KEY=VALUE...]``; --set applies to
    all."""
    from gigapatch.config import load_config

    out = []
    for item in items:
        label, spec = "", item
        if "=" in item.split(",")[0]:
            label, spec = item.split("=", 1)
        preset, *keys = spec.split(",")
        label = label or Path(preset).stem
        ovr = list(overrides) + keys
        out.append((label, load_config(preset, ovr), [preset] + ovr))
    return out


def collect_sets(args: argparse.Namespace) -> list[tuple[str, list[Path]]]:
    """(set name, reference paths) in order; each set cut to --limit."""
    from gigapatch.metrics import list_images

    sets: list[tuple[str, list[Path]]] = []
    if args.refs:
        loose: list[Path] = []
        for r in map(Path, args.refs):
            if r.is_dir():
                sets.append((r.name, list_images([r])))
            else:
                loose.extend(list_images([r]))
        if loose:
            sets.append(("files", loose))
    else:
        for name in DEFAULT_SETS:
            d = args.data_root / name
            if d.is_dir():
                sets.append((name, list_images([d])))
        if not sets:
            raise SystemExit(
                f"bench_quality: no reference sets under {args.data_root}; pass --refs or "
                "--data-root"
            )
    if args.limit is not None:
        sets = [(n, paths[: args.limit]) for n, paths in sets]
    return sets


def peer_files(args: argparse.Namespace, set_name: str, ref: Path) -> dict[str, Path]:
    """The published peer samples of one reference: {method: path} (existing files only)."""
    out = {}
    for method, folder in PEERS.get(set_name.lower(), {}).items():
        f = args.data_root / "peer_outputs" / folder / f"{ref.stem}.png"
        if f.is_file():
            out[method] = f
    return out


def to_rgb_float(arr: np.ndarray) -> np.ndarray:
    from gigapatch.metrics import as_image

    return as_image(arr).permute(1, 2, 0).numpy()


def limit_side(img: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (antialiased) so the longer side is at most max_side; 0 = unchanged."""
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img
    s = max_side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    t = torch.nn.functional.interpolate(t, size=size, mode="bilinear", antialias=True,
                                        align_corners=False)
    return t[0].permute(1, 2, 0).clamp(0, 1).numpy()


def score_record(report: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-image values (mean over that method's samples) from evaluate() rows."""
    from gigapatch.metrics.report import mean_std

    metrics = {}
    spread = {}
    for m in COLUMNS:
        ms = mean_std(r.get(m) for r in rows)
        metrics[m] = ms["mean"]
        spread[m] = ms["std"]
    return {"metrics": metrics, "metrics_std_over_samples": spread, "samples": rows}


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean +- std over images per (set, method)."""
    from gigapatch.metrics.report import mean_std

    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if "error" not in r:
            groups[(r["set"], r["method"])].append(r)
    out = []
    for (set_name, method), recs in groups.items():
        row: dict[str, Any] = {"set": set_name, "method": method, "images": len(recs),
                               "samples_per_image": recs[0]["n_samples"]}
        for m in COLUMNS:
            row[m] = mean_std(r["metrics"].get(m) for r in recs)
        row["pixel_diversity"] = mean_std(r["diversity"].get("pixel") for r in recs)
        row["pairwise_swd"] = mean_std(r["diversity"].get("pairwise_swd") for r in recs)
        row["gen_seconds_per_sample"] = mean_std(
            s for r in recs for s in r.get("gen_seconds", [])
        )
        out.append(row)
    order = {"gigapatch": 0, "gigapatch:default": 0, "gigapatch:paper": 1, "GPNN": 2,
             "SinGAN": 3}
    set_order = {n: i for i, n in enumerate(dict.fromkeys(r["set"] for r in records))}
    out.sort(key=lambda r: (set_order.get(r["set"], 99), order.get(r["method"], 9), r["method"]))
    return out


def _cell(ms: dict[str, Any], digits: int = 4) -> str:
    if ms is None or ms.get("mean") is None:
        return "-"
    return f"{ms['mean']:.{digits}g} +- {ms['std']:.2g}"


def markdown(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Quality benchmark (gigapatch vs published peer samples)",
        "",
        f"Config: `{meta['config']}` overrides {meta['overrides'] or 'none'}; "
        f"{meta['num_samples']} samples per reference (seeds {meta['seed']}..); "
        f"metric seed {meta['metric_seed']}; references downscaled to a longer side of at most "
        f"{meta['max_side'] or 'unlimited'} px; generation device {meta['device']}; "
        f"{meta['date']}; {meta['host']}.",
        "",
        "Each cell is the mean +- std over the images of a set; an image's value is the mean "
        "over its samples. Peers have one published sample per image (no diversity). "
        "Lower is better for SWD, FD, coherence and completeness; copy rates measure "
        "verbatim copying of 32/64 px windows (lower = more novel); pixel diversity is "
        "SinGAN's (0 = all samples identical); novelty is the worst 16 px block's distance "
        "to any reference block in colour layout and high-frequency energy (region_novelty; "
        "high = a region the reference has nothing like: grey mush).",
        "",
        "| set | method | images | N | SWD | patch FD | coherence | completeness | copy32 | "
        "copy64 | novelty | pixel div. | pairwise SWD | s/sample |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['set']} | {r['method']} | {r['images']} | {r['samples_per_image']} | "
            + " | ".join(_cell(r[m]) for m in COLUMNS)
            + f" | {_cell(r['pixel_diversity'])} | {_cell(r['pairwise_swd'])} | "
            f"{_cell(r['gen_seconds_per_sample'], 3)} |"
        )
    return "\n".join(lines) + "\n"


def _save(args: argparse.Namespace, set_name: str, ref: Path, label: str, seed: int,
          img: np.ndarray) -> None:
    from gigapatch.storage import write_image

    d = args.out_dir / f"{args.name}_samples" / set_name / label
    d.mkdir(parents=True, exist_ok=True)
    write_image(d / f"{ref.parent.name}_{ref.stem}_s{seed}.png", img)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None if math.isnan(obj) else str(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gigapatch.metrics import evaluate
    from gigapatch.storage import read_image

    from gigapatch.metrics import DEFAULT_METRICS
    from gigapatch.metrics.regions import region_novelty

    sets = collect_sets(args)
    configs: list[tuple[str, Any, list[str]]] = []
    generate = None
    metrics = tuple(args.metrics or DEFAULT_METRICS)
    if not args.peers_only:
        import gigapatch

        generate = gigapatch.generate
        configs = parse_configs(args.configs, args.overrides)

    records: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for set_name, refs in sets:
        for i, ref_path in enumerate(refs):
            ref = limit_side(to_rgb_float(read_image(ref_path, what="reference")[0]), args.max_side)
            base = {"set": set_name, "image": ref_path.name, "reference": str(ref_path),
                    "size": [ref.shape[1], ref.shape[0]]}
            for label, cfg, _ in configs:
                _log(f"[{set_name} {i + 1}/{len(refs)}] {ref_path.name}: generating "
                     f"{args.num_samples} sample(s) of {ref.shape[1]}x{ref.shape[0]} ({label})",
                     args.quiet)
                method = "gigapatch" if len(configs) == 1 else f"gigapatch:{label}"
                rec: dict[str, Any] = {**base, "method": method, "n_samples": args.num_samples}
                try:
                    samples, secs = [], []
                    for k in range(args.num_samples):
                        t0 = time.perf_counter()
                        out = generate(ref, seed=args.seed + k, config=cfg, device=args.device)
                        secs.append(time.perf_counter() - t0)
                        samples.append(np.asarray(out, dtype=np.float32))
                        if args.save_samples:
                            _save(args, set_name, ref_path, label, args.seed + k, out)
                    rep = evaluate(ref, samples, names=[f"seed {args.seed + k}" for k in range(len(samples))],
                                   metrics=metrics, seed=args.metric_seed,
                                   device=args.metrics_device)
                    for row, smp in zip(rep["samples"], samples):
                        row["novelty"] = region_novelty(ref, smp).max
                    rec.update(score_record(rep, rep["samples"]))
                    rec["diversity"] = rep["diversity"]
                    rec["gen_seconds"] = secs
                except Exception as exc:  # noqa: BLE001 - record and go on with the next image
                    rec["error"] = f"{type(exc).__name__}: {exc}"
                    _log(f"  failed: {rec['error']}", args.quiet)
                records.append(rec)
            if args.no_peers:
                continue
            peers = peer_files(args, set_name, ref_path)
            if not peers:
                continue
            _log(f"[{set_name} {i + 1}/{len(refs)}] {ref_path.name}: scoring peers "
                 f"{', '.join(peers)}", args.quiet)
            methods = list(peers)
            imgs = [limit_side(to_rgb_float(read_image(peers[m], what=f"{m} sample")[0]), args.max_side)
                    for m in methods]
            rep = evaluate(ref, imgs, names=methods, diversity=False, metrics=metrics,
                           seed=args.metric_seed, device=args.metrics_device)
            for m, row, img in zip(methods, rep["samples"], imgs):
                row["novelty"] = region_novelty(ref, img).max
                rec = {**base, "method": m, "n_samples": 1, "peer_file": str(peers[m])}
                rec.update(score_record(rep, [row]))
                rec["diversity"] = {"pixel": None, "pairwise_swd": None}
                records.append(rec)

    summary = aggregate(records)
    meta = {
        "config": ", ".join(f"{lab}: {' '.join(o)}" for lab, _, o in configs) or "none",
        "overrides": list(args.overrides),
        "metrics": list(metrics),
        "num_samples": 0 if args.peers_only else args.num_samples,
        "seed": args.seed,
        "metric_seed": args.metric_seed,
        "max_side": args.max_side,
        "device": "none (peers only)" if args.peers_only else args.device,
        "metrics_device": args.metrics_device,
        "sets": {n: len(p) for n, p in sets},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md_path = args.out_dir / f"{args.name}.md"
    json_path = args.out_dir / f"{args.name}.json"
    md_path.write_text(markdown(summary, meta))
    json_path.write_text(json.dumps(_jsonable({"meta": meta, "summary": summary,
                                               "records": records}), indent=1) + "\n")
    errors = [f"{r['set']}/{r['image']}: {r['error']}" for r in records if "error" in r]
    print(json.dumps(_jsonable({"meta": meta, "summary": summary, "errors": errors,
                                "markdown": str(md_path), "json": str(json_path)}), indent=1))
    _log(f"wrote {md_path} and {json_path}", args.quiet)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
