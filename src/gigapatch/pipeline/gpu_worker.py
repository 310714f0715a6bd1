"""``python -m gigapatch.pipeline.gpu_worker SCHEDULER --gpus N ...``: one Dask worker per GPU.

The worker command of GPU jobs submitted by :func:`gigapatch.pipeline.clusters.jobqueue_cluster`
(dask-jobqueue calls it with the arguments of ``dask worker``). It starts N Nannies, the
i-th with ``CUDA_VISIBLE_DEVICES`` set to the i-th GPU the job was given (the job's own
``CUDA_VISIBLE_DEVICES``, else 0..N-1) and the resource ``GPU=1``, so each worker sees one
device as ``cuda:0`` and the scheduler runs one GPU task per device at a time. Names are
NAME-0, NAME-1, ... (NAME alone for one GPU), as dask-jobqueue expects.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Sequence

__all__ = ["main", "worker_devices"]


def worker_devices(gpus: int, visible: str | None) -> list[str]:
    """The device of each worker: the job's visible GPUs, else ``0..gpus-1``."""
    listed = [d.strip() for d in (visible or "").split(",") if d.strip()]
    if listed:
        if len(listed) < gpus:
            raise SystemExit(f"gigapatch.pipeline.gpu_worker: --gpus {gpus} but CUDA_VISIBLE_DEVICES "
                             f"lists {len(listed)} device(s): {visible}")
        return listed[:gpus]
    return [str(i) for i in range(gpus)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gigapatch.pipeline.gpu_worker")
    p.add_argument("scheduler")
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--name", default="gpu-worker")
    p.add_argument("--nthreads", type=int, default=1)
    p.add_argument("--memory-limit", default="auto")
    p.add_argument("--death-timeout", type=float, default=None)
    p.add_argument("--local-directory", default=None)
    p.add_argument("--interface", default=None)
    p.add_argument("--protocol", default=None)
    return p


async def _run(args: argparse.Namespace) -> None:
    from distributed import Nanny

    devices = worker_devices(args.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    nannies = []
    for i, dev in enumerate(devices):
        name = args.name if len(devices) == 1 else f"{args.name}-{i}"
        nannies.append(Nanny(args.scheduler, name=name, nthreads=args.nthreads,
                             memory_limit=args.memory_limit, resources={"GPU": 1},
                             env={"CUDA_VISIBLE_DEVICES": dev},
                             death_timeout=args.death_timeout,
                             local_directory=args.local_directory,
                             interface=args.interface, protocol=args.protocol))
    await asyncio.gather(*nannies)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    finished = asyncio.gather(*(n.finished() for n in nannies))
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([finished, waiter], return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*(n.close(timeout=10) for n in nannies), return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.gpus < 1:
        print("gigapatch.pipeline.gpu_worker: --gpus must be >= 1", file=sys.stderr)
        return 2
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":  # pragma: no cover - started by the job script
    sys.exit(main())
