"""Run a validated batch on a Dask cluster: resumable, failure-isolated, summarised.

Every small (item, seed) is one task that calls the whole-image sampler
(``gigapatch.generate``) and writes its output atomically; items above the tiled
threshold go through ``run_tiled`` on the same cluster (their tiles spread over its
workers, resumable through their run stores). All small tasks are submitted at once
(one ``client.map``); the tiled items' graphs are submitted from driver threads started
before it, up to :data:`TILED_AT_ONCE` at a time, so the scheduler holds the small items
and several tiled items' tiles together (not one graph, but no item waits for another to
be submitted).

Resume: a finished job leaves a *done record* ``BATCH_DIR/done/<hash of output>.json``
holding the job's key (a hash of reference content, size, seed, image settings, output).
A job whose output exists and whose record holds the same key is skipped.

One failure does not stop the others: every job is reported in the summary
(``BATCH_DIR/summary.json`` and ``summary.csv``: item, name, seed, status, seconds, output,
pixels, error) and the caller turns failures into a non-zero exit status.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..diffusion.backends import LevelCache
from ..errors import GigapatchError
from .manifest import BatchJob

__all__ = ["run_batch", "BatchResult", "JobResult", "done_record_path", "is_done",
           "default_batch_dir", "run_job", "worker_device", "LEVELS"]

#: references kept decoded per worker process (items that share a reference read it once)
REFERENCE_CACHE_SIZE = 8
#: bytes of built level indexes kept per worker process (items that share a reference
#: level and the settings that shape its index build it once; least recently used dropped)
LEVEL_CACHE_BYTES = 1 << 30
#: tiled items whose tile graphs are on the scheduler at the same time (each has its own
#: driver thread, run store and client; their tiles share the workers with the small items)
TILED_AT_ONCE = 4


@dataclass
class JobResult:
    """One row of the summary."""

    item: int
    name: str
    seed: int
    status: str          # done | skipped (finished earlier) | failed
    seconds: float
    output: str
    pixels: int
    error: str = ""


@dataclass
class BatchResult:
    """What :func:`run_batch` did."""

    rows: list[JobResult]
    batch_dir: Path
    summary_json: Path
    summary_csv: Path
    sheet: Path | None = None
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.rows if r.status == "failed"]

    def describe(self) -> list[str]:
        c = self.counts
        lines = [f"batch: {c.get('done', 0)} done, {c.get('skipped', 0)} already done "
                 f"(skipped), {c.get('failed', 0)} failed, in {self.seconds:.1f} s"]
        for r in self.failed:
            lines.append(f"  FAILED item {r.item} ({r.name}) seed {r.seed}: {r.error}")
        lines.append(f"  summary: {self.summary_json} and {self.summary_csv}")
        if self.sheet is not None:
            lines.append(f"  contact sheet: {self.sheet}")
        return lines


def default_batch_dir(manifest: str | os.PathLike) -> Path:
    """``MANIFEST.gp-batch/`` beside the manifest: done records, summaries, run stores."""
    p = Path(manifest).absolute()
    return p.with_name(p.name + ".gp-batch")


def done_record_path(batch_dir: str | os.PathLike, job: BatchJob) -> Path:
    """Where the done record of ``job`` lives (keyed by its output path)."""
    h = hashlib.sha256(job.output.encode()).hexdigest()[:20]
    return Path(batch_dir) / "done" / f"{h}.json"


def is_done(batch_dir: str | os.PathLike, job: BatchJob) -> bool:
    """Whether ``job`` finished earlier: its output exists and its record has its key."""
    rec = done_record_path(batch_dir, job)
    if not Path(job.output).exists() or not rec.is_file():
        return False
    try:
        return json.loads(rec.read_text()).get("key") == job.key
    except (OSError, ValueError):
        return False


def _atomic_write_text(path: Path, text: str) -> None:
    from ..storage import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def _write_done(batch_dir: str, job: BatchJob, seconds: float) -> None:
    _atomic_write_text(done_record_path(batch_dir, job), json.dumps(
        {"key": job.key, "item": job.item, "name": job.name, "seed": job.seed,
         "output": job.output, "seconds": round(seconds, 3), "pixels": job.pixels,
         "finished": time.time(), "pid": os.getpid()}, indent=1))


# ---------------------------------------------------------------------------------------
# worker side
# ---------------------------------------------------------------------------------------

class _ReferenceCache:
    """Decoded references of this process, keyed by file content hash (LRU)."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()
        self.loads = 0

    def get(self, path: str, digest: str, max_pixels: int) -> np.ndarray:
        with self.lock:
            if digest in self.items:
                self.items.move_to_end(digest)
                return self.items[digest]
        from ..storage import read_image

        arr = read_image(path, max_pixels=max_pixels, what="reference")[0]
        with self.lock:
            self.loads += 1
            self.items[digest] = arr
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return arr


# one of each per process, by design; both lock every access to their maps
_REFERENCES = _ReferenceCache(REFERENCE_CACHE_SIZE)
LEVELS = LevelCache(LEVEL_CACHE_BYTES)


def run_job(job: BatchJob, device: str, batch_dir: str) -> dict[str, Any]:
    """Task body of one small job: sample the whole image, write it, record it as done.

    Runs on a worker; returns ``{"seconds", "pixels", "pid"}``. Raises on failure (the
    driver records the error for this job and goes on with the others).
    """
    from ..device import resolve_device
    from ..diffusion.model_space import to_unit
    from ..storage import write_image
    from .whole import sample_levels

    t0 = time.perf_counter()
    cfg = job.config
    ref = _REFERENCES.get(job.reference, job.ref_digest, cfg.output.max_input_pixels)
    image = to_unit(sample_levels(ref, job.out_hw, cfg, seed=job.seed,
                                  device=resolve_device(device), cache=LEVELS)[-1])
    write_image(job.output, image, bit_depth=cfg.output.bits(), dpi=cfg.output.dpi)
    seconds = time.perf_counter() - t0
    _write_done(batch_dir, job, seconds)
    return {"seconds": seconds, "pixels": job.pixels, "pid": os.getpid()}


def worker_device(device: str) -> str:
    """Task body: ``device`` (auto | cpu | cuda[:N]) resolved on the worker that runs it.

    A batch's tiled items ask a worker of the cluster (a GPU worker when the workers
    declare GPUs) rather than the driver, which may be a login node without a GPU."""
    from ..device import resolve_device

    return str(resolve_device(device, option="--device"))


def _run_tiled_job(job: BatchJob, device: str, batch_dir: str, address: str | None,
                   progress: bool) -> dict[str, Any]:
    """A large job through the tiled pipeline, its tiles on the cluster at ``address``.

    ``device`` is already resolved on a worker (:func:`worker_device`): the plan (the
    ``auto`` backend per level) and the tile tasks use the workers' device, not the
    driver's."""
    from .outmeta import resolve_output_metadata
    from .run import TiledOptions, run_tiled

    t0 = time.perf_counter()
    ref = _REFERENCES.get(job.reference, job.ref_digest, job.config.output.max_input_pixels)
    run_dir = Path(batch_dir) / "runs" / f"item{job.item:04d}-seed{job.seed}-{job.key[:8]}"
    run_tiled(ref, job.out_hw, job.output, seed=job.seed, config=job.config,
              device=device,
              options=TiledOptions(run_dir=run_dir, tiled=True, cluster=address),
              progress=progress,
              metadata=resolve_output_metadata(job.reference, job.config, job.out_hw,
                                               ref.shape[2]))
    seconds = time.perf_counter() - t0
    _write_done(batch_dir, job, seconds)
    return {"seconds": seconds, "pixels": job.pixels, "pid": os.getpid()}


# ---------------------------------------------------------------------------------------
# driver side
# ---------------------------------------------------------------------------------------

def _error_text(exc: BaseException) -> str:
    if isinstance(exc, GigapatchError):
        return " ".join(str(exc).split())
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}{where}"


def run_batch(jobs: Sequence[BatchJob], client, *, batch_dir: str | os.PathLike,
              device: str = "auto", gpu_resources: bool | None = None,
              progress: bool = True, sheet: bool = False,
              on_finished: Callable[[JobResult], None] | None = None) -> BatchResult:
    """Run every job of a batch on ``client``'s cluster; write the summary (and sheet).

    Parameters
    ----------
    jobs : sequence of BatchJob
        From :func:`gigapatch.pipeline.manifest.load_manifest`.
    client : distributed.Client
        Where the tasks run. Outputs and ``batch_dir`` must be on paths every worker sees.
    batch_dir : path
        Done records, summaries, tiled run stores (``default_batch_dir(manifest)``).
    device : {"auto", "cpu", "cuda"}
        Resolved on each worker (``auto``: its GPU if it has one); for the tiled items, on
        one worker (a GPU worker when there are), never on this driver process.
    gpu_resources : bool, optional
        Submit every task with ``resources={"GPU": 1}`` (one task per GPU worker at a
        time). Default: when a connected worker declares a ``GPU`` resource.
    progress : bool
        A tqdm bar over the jobs on stderr (and the tiled items' per-level bars).
    sheet : bool
        Write ``BATCH_DIR/sheet.png``, a labelled contact sheet of every finished output.
    on_finished : callable, optional
        Called with each job's :class:`JobResult` as it finishes (tests, logging).

    Returns
    -------
    BatchResult
    """
    from distributed import as_completed

    t_start = time.perf_counter()
    bdir = Path(batch_dir).absolute()
    bdir.mkdir(parents=True, exist_ok=True)
    rows: dict[int, JobResult] = {}
    todo_small, todo_large = [], []
    for i, job in enumerate(jobs):
        if is_done(bdir, job):
            rec = json.loads(done_record_path(bdir, job).read_text())
            rows[i] = JobResult(job.item, job.name, job.seed, "skipped",
                                float(rec.get("seconds", 0.0)), job.output, job.pixels)
        elif job.tiled:
            todo_large.append(i)
        else:
            todo_small.append(i)
    if gpu_resources is None:
        from .clusters import has_gpu_workers

        gpu_resources = has_gpu_workers(client)
    resources = {"GPU": 1} if gpu_resources else None

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), initial=len(rows), desc="batch items", unit="item",
                   file=sys.stderr, dynamic_ncols=True)
    lock = threading.Lock()

    def finish(i: int, status: str, seconds: float, error: str = "") -> None:
        job = jobs[i]
        row = JobResult(job.item, job.name, job.seed, status, round(seconds, 3), job.output,
                        job.pixels if status == "done" else 0, error)
        with lock:
            rows[i] = row
            if bar is not None:
                bar.update(1)
                if status == "failed":
                    bar.write(f"gigapatch: item {job.item} ({job.name}) seed {job.seed} "
                              f"failed: {error}", file=sys.stderr)
        if on_finished is not None:
            on_finished(row)

    # the tiled items: their own graphs on the same cluster, from driver threads
    def large_loop() -> None:
        address = client.scheduler.address
        try:  # the workers' device, not this (driver) process's
            dev = client.submit(worker_device, device, resources=resources, pure=False,
                                priority=10).result()  # before the queued small items
        except Exception as exc:  # noqa: BLE001 - every tiled item fails with it
            for i in todo_large:
                finish(i, "failed", 0.0, _error_text(exc))
            return

        def one(i: int) -> None:
            t0 = time.perf_counter()
            try:
                r = _run_tiled_job(jobs[i], dev, str(bdir), address, progress)
                finish(i, "done", r["seconds"])
            except Exception as exc:  # noqa: BLE001 - reported per item
                finish(i, "failed", time.perf_counter() - t0, _error_text(exc))

        # several tiled items' graphs on the scheduler at once (each its own run store)
        with ThreadPoolExecutor(max_workers=min(TILED_AT_ONCE, len(todo_large)),
                                thread_name_prefix="gigapatch-tiled-item") as pool:
            list(pool.map(one, todo_large))

    large = threading.Thread(target=large_loop, name="gigapatch-tiled-items", daemon=True)
    try:
        if todo_large:
            large.start()
        if todo_small:
            futures = client.map(run_job, [jobs[i] for i in todo_small],
                                 device=device, batch_dir=str(bdir),
                                 key=[f"gigapatch-item{jobs[i].item}-seed{jobs[i].seed}-"
                                      f"{jobs[i].key[:12]}" for i in todo_small],
                                 pure=False, resources=resources)
            index = {f.key: i for f, i in zip(futures, todo_small)}
            started = time.perf_counter()
            for fut in as_completed(futures):
                i = index[fut.key]
                if fut.status == "finished":
                    finish(i, "done", fut.result()["seconds"])
                else:
                    exc = fut.exception()
                    finish(i, "failed", time.perf_counter() - started, _error_text(exc))
                fut.release()
        if todo_large:
            large.join()
    finally:
        if bar is not None:
            bar.close()

    ordered = [rows[i] for i in range(len(jobs))]
    counts = {s: sum(r.status == s for r in ordered) for s in ("done", "skipped", "failed")}
    result = BatchResult(ordered, bdir, bdir / "summary.json", bdir / "summary.csv",
                         seconds=time.perf_counter() - t_start, counts=counts)
    _write_summary(result)
    if sheet:
        result.sheet = write_sheet([j for j, r in zip(jobs, ordered)
                                    if r.status != "failed"], bdir / "sheet.png")
    return result


def _write_summary(result: BatchResult) -> None:
    fields = [f for f in asdict(result.rows[0])] if result.rows else \
        ["item", "name", "seed", "status", "seconds", "output", "pixels", "error"]
    payload = {"counts": result.counts, "seconds": round(result.seconds, 3),
               "items": [asdict(r) for r in result.rows]}
    _atomic_write_text(result.summary_json, json.dumps(payload, indent=1))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in result.rows:
        w.writerow(asdict(r))
    _atomic_write_text(result.summary_csv, buf.getvalue())


def _preview(path: str, height: int) -> np.ndarray | None:
    """A small (h, w, C) uint8 preview of an output (pyramidal TIFFs read shrunk)."""
    import pyvips

    if str(path).lower().endswith(".zarr"):
        return None
    im = pyvips.Image.thumbnail(str(path), 100_000, height=height)
    a = im.numpy()
    if a.ndim == 2:
        a = a[:, :, None]
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    if a.shape[2] in (2, 4):
        a = a[:, :, :-1]
    return a


def write_sheet(jobs: Sequence[BatchJob], path: Path, *, height: int = 160) -> Path | None:
    """A labelled contact sheet of the outputs of ``jobs`` (``gigapatch.metrics``)."""
    from ..metrics.sheet import contact_sheet

    imgs, labels = [], []
    for job in jobs:
        a = _preview(job.output, height)
        if a is not None:
            imgs.append(a)
            labels.append(f"{job.item}: {job.name} s{job.seed}")
    if not imgs:
        return None
    contact_sheet(imgs[0], imgs[1:], labels=labels, height=height, columns=6, path=path)
    return path
