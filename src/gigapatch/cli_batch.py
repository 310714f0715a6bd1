"""The ``gigapatch batch`` subcommand: many references x seeds x sizes x presets in one run.

``gigapatch batch MANIFEST.yaml|.csv [--cluster local|slurm|pbs|lsf|sge | --address ADDR |
--scheduler-file F] [--workers N] [--sheet]`` validates the whole manifest first (every
problem listed, exit 2), then runs every item on one Dask cluster, skips items finished by
an earlier run, reports failures at the end (exit 1 if any) and writes
``MANIFEST.gp-batch/summary.json`` and ``summary.csv``. Registered by :mod:`gigapatch.cli`
with :func:`add_batch_parser`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .errors import GigapatchError

__all__ = ["add_batch_parser", "EXIT_FAILED_ITEMS"]

#: exit status when some items failed (the others were still run)
EXIT_FAILED_ITEMS = 1


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return v


def add_batch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``batch`` on the main parser's subparsers."""
    b = subparsers.add_parser(
        "batch", help="run a manifest of references x seeds x sizes x presets",
        description="Run every item of a YAML or CSV manifest on one Dask cluster (local "
                    "worker processes, an existing scheduler, or SLURM/PBS/LSF/SGE jobs). "
                    "The manifest is checked as a whole first; finished items are skipped "
                    "when the batch is run again; a failed item does not stop the others.",
        epilog="Example: gigapatch batch jobs.yaml --workers 2 --sheet  (manifest format: "
               "README, 'Batch runs')")
    b.add_argument("manifest", metavar="MANIFEST", help="a .yaml or .csv manifest")
    b.add_argument("--batch-dir", metavar="DIR",
                   help="done records, summary.json/.csv, sheet.png and tiled run stores "
                        "(default: MANIFEST.gp-batch/ beside the manifest)")
    b.add_argument("--config", metavar="YAML|PRESET",
                   help="config for items that name no preset/config; also read for the "
                        "hpc section (default: the bundled default)")
    b.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE",
                   help="override a config key for every item (before the item's own set:)")
    b.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the workers compute (auto: their GPU if they have one)")
    where = b.add_mutually_exclusive_group()
    where.add_argument("--cluster", choices=("local", "slurm", "pbs", "lsf", "sge"),
                       default="local",
                       help="start the workers: local processes (default), or batch jobs "
                            "through dask-jobqueue from the config's hpc section "
                            "(pip install 'gigapatch[hpc]')")
    where.add_argument("--address", metavar="ADDR",
                       help="use an existing dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--scheduler-file", metavar="F",
                       help="use the scheduler described by F (dask scheduler "
                            "--scheduler-file F, or dask-mpi)")
    b.add_argument("--workers", type=_positive_int, metavar="N",
                   help="local worker processes (default 1 on a CPU; one per GPU)")
    b.add_argument("--threads", type=_positive_int, metavar="N",
                   help="torch threads per local CPU worker (default: cores / workers)")
    b.add_argument("--sheet", action="store_true",
                   help="also write BATCH_DIR/sheet.png, a contact sheet of the outputs")
    b.add_argument("--check", action="store_true",
                   help="only validate the manifest and list the outputs; run nothing")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=run_batch_command)
    return b


def run_batch_command(args: argparse.Namespace) -> int:
    """The ``batch`` command; returns the exit status."""
    from .pipeline.batch import default_batch_dir, run_batch
    from .pipeline.manifest import ManifestError, load_manifest
    from .config import load_config

    try:
        jobs = load_manifest(args.manifest, base_config=args.config,
                             base_overrides=tuple(args.overrides))
    except ManifestError as exc:
        print(f"gigapatch: error: {exc}", file=sys.stderr)
        print("gigapatch: fix the manifest and run the command again", file=sys.stderr)
        return 2
    batch_dir = Path(args.batch_dir) if args.batch_dir else default_batch_dir(args.manifest)
    items = len({j.item for j in jobs})
    tiled = sum(j.tiled for j in jobs)
    print(f"gigapatch: {args.manifest}: {items} item{'s' if items != 1 else ''}, "
          f"{len(jobs)} output{'s' if len(jobs) != 1 else ''} ({tiled} tiled)",
          file=sys.stderr)
    if args.check:
        for j in jobs:
            h, w = j.out_hw
            print(f"item {j.item} ({j.name}) seed {j.seed}: {j.output} ({w}x{h}"
                  f"{', tiled' if j.tiled else ''})")
        return 0
    base_cfg = load_config(args.config, tuple(args.overrides))
    try:
        batch_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GigapatchError(f"--batch-dir {batch_dir} cannot be created ({exc.strerror}); "
                             f"choose another folder") from None
    from .pipeline.clusters import open_client

    with open_client(kind=args.cluster, address=args.address,
                     scheduler_file=args.scheduler_file, workers=args.workers,
                     threads=args.threads, device=args.device, hpc=base_cfg.hpc) as handle:
        if not args.quiet:
            print(f"gigapatch: running on {handle.description}", file=sys.stderr)
        result = run_batch(jobs, handle.client, batch_dir=batch_dir, device=args.device,
                           gpu_resources=handle.gpus, progress=not args.quiet,
                           sheet=args.sheet)
    for line in result.describe():
        print(line, flush=True)
    return EXIT_FAILED_ITEMS if result.failed else 0
