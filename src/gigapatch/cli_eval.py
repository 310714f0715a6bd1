"""The ``gigapatch eval`` subcommand: score samples of a reference with the quality metrics.

``gigapatch eval REF SAMPLE... [--json PATH] [--sheet PATH]`` prints a table (one row per
sample, then mean +- std and diversity) and optionally writes the full report as JSON and a
labelled contact sheet PNG. SAMPLE may be image files or folders of images. The main CLI
(:mod:`gigapatch.cli`) registers it with :func:`add_eval_parser`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from gigapatch.errors import GigapatchError
from gigapatch.storage.atomic import atomic_write_text

__all__ = ["add_eval_parser", "run_eval"]


def _tile_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"tile size {text!r}: give N or WxH, e.g. 512 or 512x256")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 2:
        raise argparse.ArgumentTypeError(f"tile size {text!r}: give N or WxH with sides >= 2")
    w, h = parts
    return h, w


def _origin(text: str) -> tuple[int, int]:
    try:
        x, y = (int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"tile origin {text!r}: give X,Y, e.g. 0,0")
    return y, x


def _metric_list(text: str) -> list[str]:
    from gigapatch.metrics.report import DEFAULT_METRICS

    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in DEFAULT_METRICS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown metric(s) {bad or text!r}; choose from {','.join(DEFAULT_METRICS)}"
        )
    return names


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``eval`` subcommand on an argparse subparsers object.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser; its ``func`` default is :func:`run_eval`.
    """
    p = subparsers.add_parser(
        "eval",
        help="score samples against their reference (patch SWD, FD, NN, copy rate, diversity)",
        description="Score SAMPLEs (files or folders) of the reference REF with the metrics "
        "of docs/evaluation.md and print a table: multi-scale patch SWD and Frechet "
        "distance, NN coherence / completeness, copy rate on 32 and 64 px windows, and "
        "over all samples pixel diversity and pairwise SWD.",
        epilog="Example: gigapatch eval ref.png out_*.png --json scores.json --sheet sheet.png",
    )
    p.add_argument("reference", metavar="REF", help="the reference image")
    p.add_argument("samples", metavar="SAMPLE", nargs="+",
                   help="sample images, or folders of them (natural order)")
    p.add_argument("--json", metavar="PATH", dest="json_path",
                   help="write the full report (per sample, per level, summary) as JSON")
    p.add_argument("--sheet", metavar="PATH",
                   help="write a contact sheet PNG: the reference beside the samples, labelled")
    p.add_argument("--exact", metavar="PATH",
                   help="the exact sampler's output for the same seed: adds PSNR and max abs "
                        "diff of every sample against it")
    p.add_argument("--tile-size", type=_tile_size, metavar="N|WxH",
                   help="tile size of a tiled run: adds the seam score (~1.0 = no seams)")
    p.add_argument("--tile-origin", type=_origin, default=(0, 0), metavar="X,Y",
                   help="top-left corner of the tile grid (default 0,0)")
    p.add_argument("--metrics", type=_metric_list, metavar="LIST",
                   help="comma-separated subset of swd,fd,coherence,completeness,copy32,copy64 "
                        "(default all)")
    p.add_argument("--no-diversity", action="store_true",
                   help="skip pixel diversity and pairwise SWD")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the projections and subsamples (default 0)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="where to compute the metrics (default cpu)")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress notes on stderr")
    p.set_defaults(func=run_eval)
    return p


def run_eval(args: argparse.Namespace) -> int:
    """Run ``gigapatch eval`` with parsed arguments; returns the exit status (0).

    Raises
    ------
    GigapatchError
        Unreadable inputs, samples a metric cannot use, unwritable outputs.
    """
    from gigapatch.metrics.report import DEFAULT_METRICS, evaluate, format_table, jsonable
    from gigapatch.metrics.report import list_images
    from gigapatch.storage import read_image

    ref_path = Path(args.reference)
    ref, _ = read_image(ref_path, what="reference")
    paths = [p for p in list_images(args.samples) if _not_same(p, ref_path)]
    if not paths:
        raise GigapatchError(
            "eval: no sample images besides the reference; pass sample files or a folder"
        )
    for out in (args.json_path, args.sheet):
        if out is not None:
            _check_writable(Path(out))
    samples = [read_image(p, what="sample")[0] for p in paths]
    names = _labels(paths)
    exact = read_image(args.exact, what="exact run")[0] if args.exact else None
    if not args.quiet:
        print(f"gigapatch eval: scoring {len(samples)} sample(s) of {ref_path} ...",
              file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    report = evaluate(
        ref, samples, names=names,
        metrics=args.metrics or DEFAULT_METRICS,
        diversity=not args.no_diversity,
        exact=exact, tile_size=args.tile_size, tile_origin=args.tile_origin,
        seed=args.seed, device=args.device,
    )
    report["reference"]["path"] = str(ref_path)
    for row, p in zip(report["samples"], paths):
        row["path"] = str(p)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    print(format_table(report, markdown=args.markdown))
    if args.json_path:
        atomic_write_text(Path(args.json_path), json.dumps(jsonable(report), indent=2) + "\n")
        print(f"wrote {args.json_path}")
    if args.sheet:
        from gigapatch.metrics.sheet import contact_sheet

        contact_sheet(ref, samples, labels=[f"reference {ref_path.name}"] + names,
                      path=args.sheet)
        print(f"wrote {args.sheet}")
    return 0


def _not_same(p: Path, ref: Path) -> bool:
    try:
        return not p.resolve().samefile(ref.resolve())
    except OSError:
        return True


def _labels(paths: list[Path]) -> list[str]:
    for depth in (1, 2, 3):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def _check_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise GigapatchError(f"eval: output {path} is a folder; give a file name")
    if not parent.exists():
        raise GigapatchError(f"eval: the folder of {path} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise GigapatchError(f"eval: cannot write into {parent}; choose another output path")
