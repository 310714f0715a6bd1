"""Run a validated batch as ONE Dask graph: resumable, failure-isolated, summarised.

Every small (item, seed) is one task that calls the whole-image sampler (as
``gigapatch.generate``) and writes its output atomically; every item above the tiled
threshold is a :class:`~gigapatch.pipeline.run.TiledJob`: prepared on the driver (plan,
run store, lock, disk check), its tile and output-pyramid tasks put in the same graph as
the small items, finalised on the driver (output file written, lock released, run store
removed) as soon as its last task is done. The whole graph is computed with one call:
``client.get`` on a dask.distributed cluster, or the local threaded scheduler without
one. Keys start with the item and seed, so items that share a run key never collide.

"One graph" with waves: a tiled item with more than ``run.WAVE_TASKS`` tasks left gives
its tasks in waves (``TiledJob.waves``: planning memory and time bounded whatever its
tile count); the batch then computes one graph per wave, each holding the current wave
of EVERY unfinished tiled item (the first also every small item), one compute call each.
A batch whose tiled items have at most ``run.WAVE_TASKS`` tasks each is one graph.

Every task runs under :func:`_guarded`: an exception becomes a :class:`Failed` result
that the item's later tasks pass on without running, so one item's failure stops only
that item, whatever the scheduler. A tiled item whose task or output write hit a damaged
run-store chunk is repaired on its own afterwards (its markers cleared, the missing tasks
computed, up to ``run.MAX_REPAIRS`` times).

Resume: a finished job leaves a *done record* ``BATCH_DIR/done/<hash of output>.json``
holding the job's key (a hash of reference content, size, seed, image settings, output).
A job whose output exists and whose record holds the same key is skipped; an unfinished
tiled item resumes its run store (``BATCH_DIR/runs/``: only its missing tasks are in the
graph).

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
           "default_batch_dir", "run_job", "worker_device", "LEVELS", "Failed",
           "batch_graph", "BatchGraph"]

#: references kept decoded per worker process (items that share a reference read it once)
REFERENCE_CACHE_SIZE = 8
#: bytes of built level indexes kept per worker process (items that share a reference
#: level and the settings that shape its index build it once; least recently used dropped)
LEVEL_CACHE_BYTES = 1 << 30
#: threads of the driver that finalise tiled items (write their output files) while the
#: graph goes on computing the other items
FINALISE_THREADS = 2


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
    from .outmeta import resolve_output_metadata
    from .whole import sample_levels

    t0 = time.perf_counter()
    cfg = job.config
    ref = _REFERENCES.get(job.reference, job.ref_digest, cfg.output.max_input_pixels)
    image = to_unit(sample_levels(ref, job.out_hw, cfg, seed=job.seed,
                                  device=resolve_device(device), cache=LEVELS)[-1])
    # as ``gigapatch generate`` writes it: the reference's metadata with the output keys
    # applied (the manifest resolved ``bit_depth: auto`` from the reference already)
    meta = resolve_output_metadata(job.reference, cfg, job.out_hw, ref.shape[2])
    write_image(job.output, image, bit_depth=cfg.output.bits(), metadata=meta)
    seconds = time.perf_counter() - t0
    _write_done(batch_dir, job, seconds)
    return {"seconds": seconds, "pixels": job.pixels, "pid": os.getpid()}


def worker_device(device: str) -> str:
    """Task body: ``device`` (auto | cpu | cuda[:N]) resolved on the worker that runs it.

    A batch's tiled items ask a worker of the cluster (a GPU worker when the workers
    declare GPUs) rather than the driver, which may be a login node without a GPU."""
    from ..device import resolve_device

    return str(resolve_device(device, option="--device"))


# ---------------------------------------------------------------------------------------
# driver side
# ---------------------------------------------------------------------------------------

def _error_text(exc: BaseException) -> str:
    if isinstance(exc, GigapatchError):
        return " ".join(str(exc).split())
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}{where}"


class Failed:
    """What a batch task returns instead of raising (:func:`_guarded`): the item's error.

    The item's later tasks pass it on without running, so the item's last tasks end with
    it and the driver reports the item failed while every other item goes on, under the
    local scheduler (which stops at the first exception) as under a cluster.

    Attributes
    ----------
    error : str
        One line for the summary.
    corrupt : CorruptChunkError, optional
        A damaged run-store chunk (the item is repaired on its own and tried again).
    space : OSError, optional
        A write that failed for lack of disk space (reported with the space needed).
    """

    def __init__(self, error: str, corrupt: Any = None, space: OSError | None = None):
        self.error, self.corrupt, self.space = error, corrupt, space

    def __repr__(self) -> str:
        return f"Failed({self.error!r})"


def _guarded(func: Callable, *args: Any) -> Any:
    """``func(*args)``; a :class:`Failed` argument (a failed dependency) is returned as is,
    an exception is returned as a :class:`Failed`."""
    from ..storage.diskspace import is_out_of_space
    from ..storage.runstore import CorruptChunkError

    for a in args:
        if isinstance(a, Failed):
            return a
    try:
        return func(*args)
    except CorruptChunkError as exc:
        return Failed(_error_text(exc), corrupt=exc)
    except Exception as exc:  # noqa: BLE001 - reported for this item only
        space = exc if isinstance(exc, OSError) and is_out_of_space(exc) else None
        return Failed(_error_text(exc),
                      space=OSError(exc.errno, exc.strerror, exc.filename) if space else None)


@dataclass
class BatchGraph:
    """One graph of the batch and what the driver needs to follow it.

    ``owner[key]`` is the index of the job a task belongs to, ``tiles`` the keys of tiled
    items' tasks (the tile bar counts them), ``remaining[i]`` the tasks of job ``i`` in
    this graph not yet finished.
    """

    dsk: dict[str, Any]
    keys: list[str]
    owner: dict[str, int]
    tiles: set[str]
    remaining: dict[int, int]


def batch_graph(jobs: Sequence[BatchJob], small: Sequence[int], parts: dict[int, Any], *,
                device: str, batch_dir: str) -> BatchGraph:
    """One graph: a guarded :func:`run_job` task per small job in ``small``, and the tile
    and pyramid tasks (guarded) of each tiled job's current wave (``parts``: job index ->
    the ``TileGraph`` from its ``TiledJob.waves``), keyed per job."""
    g = BatchGraph({}, [], {}, set(), {})
    for i in small:
        job = jobs[i]
        key = f"gigapatch-item{job.item}-seed{job.seed}-{job.key[:12]}"
        g.dsk[key + "-job"] = job  # a literal: the task reads it by key
        g.dsk[key] = (_guarded, run_job, key + "-job", device, batch_dir)
        g.keys.append(key)
        g.owner[key] = i
        g.remaining[i] = 1
    for i, tg in parts.items():
        for k, v in tg.dsk.items():
            g.dsk[k] = (_guarded, *v) if k in tg.label else v
        for k in tg.keys:
            g.owner[k] = i
            g.tiles.add(k)
        g.keys += tg.keys
        g.remaining[i] = len(tg.keys)
    return g


def _compute_local(g: BatchGraph, workers: int, on_result: Callable[[str, Any], None]) -> None:
    """The whole graph on local threads (dask's threaded scheduler), ``on_result`` per task."""
    from .run import compute_on_threads

    def posttask(key, result, dsk, state, worker_id):
        if key in g.owner:
            on_result(key, result)

    compute_on_threads(g.dsk, g.keys, workers, posttask)


def _compute_distributed(g: BatchGraph, client, *, retries: int,
                         resources: dict[str, int] | None,
                         on_result: Callable[[str, Any], None]) -> None:
    """The whole graph with one ``client.get``; ``on_result`` per task as it finishes (a
    task the cluster could not run, e.g. a worker killed too often, gives a Failed)."""
    from distributed import as_completed

    futures = client.get(g.dsk, g.keys, sync=False, retries=retries, resources=resources)
    for fut in as_completed(futures):
        if fut.status == "finished":
            result = fut.result()
        else:
            result = Failed(_error_text(fut.exception()))
        on_result(fut.key, result)
        fut.release()


def run_batch(jobs: Sequence[BatchJob], client=None, *, batch_dir: str | os.PathLike,
              device: str = "auto", gpu_resources: bool | None = None,
              progress: bool = True, sheet: bool = False, workers: int = 1,
              on_finished: Callable[[JobResult], None] | None = None) -> BatchResult:
    """Run every job of a batch as one graph; write the summary (and sheet).

    Parameters
    ----------
    jobs : sequence of BatchJob
        From :func:`gigapatch.pipeline.manifest.load_manifest`.
    client : distributed.Client, optional
        Where the graph runs. Outputs and ``batch_dir`` must be on paths every worker sees.
        None: this process's threads (dask's local threaded scheduler, ``workers`` threads).
    batch_dir : path
        Done records, summaries, tiled run stores (``default_batch_dir(manifest)``).
    device : {"auto", "cpu", "cuda"}
        Resolved on each worker (``auto``: its GPU if it has one); for the tiled items, on
        one worker (a GPU worker when there are), never on this driver process.
    gpu_resources : bool, optional
        Submit every task with ``resources={"GPU": 1}`` (one task per GPU worker at a
        time). Default: when a connected worker declares a ``GPU`` resource.
    progress : bool
        tqdm bars on stderr: one over the jobs, one over the tiled items' tasks.
    sheet : bool
        Write ``BATCH_DIR/sheet.png``, a labelled contact sheet of every finished output.
    workers : int
        Local threads when ``client`` is None.
    on_finished : callable, optional
        Called with each job's :class:`JobResult` as it finishes (tests, logging).

    Returns
    -------
    BatchResult
    """
    from .run import TiledOptions

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
    if client is not None and gpu_resources is None:
        from .clusters import has_gpu_workers

        gpu_resources = has_gpu_workers(client)
    resources = {"GPU": 1} if gpu_resources else None

    bar = tiles_bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), initial=len(rows), desc="batch items", unit="item",
                   file=sys.stderr, dynamic_ncols=True, position=0)
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

    # the tiled items: prepared here (plan, run store, lock, disk check) on the device
    # the workers see, not this (driver) process's
    tiled: dict[int, Any] = {}
    item_seconds: dict[int, float] = {}
    if todo_large:
        try:
            if client is not None:
                dev = client.submit(worker_device, device, resources=resources,
                                    pure=False, priority=10).result()
            else:
                dev = worker_device(device)
        except Exception as exc:  # noqa: BLE001 - every tiled item fails with it
            for i in todo_large:
                finish(i, "failed", 0.0, _error_text(exc))
            todo_large = []
        address = client.scheduler.address if client is not None else None
        for i in todo_large:
            job = jobs[i]
            t0 = time.perf_counter()
            try:
                tiled[i] = _prepare_tiled(job, dev, str(bdir), address, workers)
            except Exception as exc:  # noqa: BLE001 - reported per item
                finish(i, "failed", time.perf_counter() - t0, _error_text(exc))
            item_seconds[i] = time.perf_counter() - t0

    failed: dict[int, Failed] = {}
    finals = ThreadPoolExecutor(max_workers=FINALISE_THREADS,
                                thread_name_prefix="gigapatch-finalise")
    pending = []

    def finalise(i: int) -> None:
        tj, job = tiled[i], jobs[i]
        t0 = time.perf_counter()
        try:
            _finalise_tiled(tj, failed.get(i))
        except Exception as exc:  # noqa: BLE001 - reported per item
            tj.release()
            if isinstance(exc, OSError) and _is_space(exc):
                exc = tj.space_error(exc)
            finish(i, "failed", item_seconds[i] + time.perf_counter() - t0,
                   _error_text(exc))
            return
        seconds = item_seconds[i] + time.perf_counter() - t0
        _write_done(str(bdir), job, seconds)
        finish(i, "done", seconds)

    waves = {i: tj.waves() for i, tj in tiled.items()}  # each tiled job's next waves
    last_wave: dict[int, bool] = {}
    # level tasks still to run per shared level denoiser (reference, level count, level),
    # over every tiled item and wave: at 0 the process (or each worker) drops it
    level_left, level_specs = _level_counts(tiled)

    def level_task_done(i: int, level: int) -> None:
        shared = _shared_level(tiled[i].spec, level)
        with lock:
            level_left[shared] -= 1
            if level_left[shared]:
                return
        from .tasks import release_level

        for spec in level_specs[shared]:
            if client is not None:
                client.run(release_level, spec, level)
            else:
                release_level(spec, level)

    def on_result(key: str, result: Any) -> None:
        i = g.owner[key]
        with lock:
            if isinstance(result, Failed):
                failed.setdefault(i, result)
            elif isinstance(result, tuple) and key in g.tiles:
                item_seconds[i] = item_seconds.get(i, 0.0) + float(result[-1])
            if tiles_bar is not None and key in g.tiles:
                tiles_bar.update(1)
            g.remaining[i] -= 1
            last = g.remaining[i] == 0
        if key in g.tiles and isinstance(result, tuple) and result[0] == "level":
            level_task_done(i, result[1])
        if not last:
            return
        if i in tiled:
            if last_wave[i]:  # its last task: write its output while the others go on
                pending.append(finals.submit(finalise, i))
        elif i in failed:
            finish(i, "failed", 0.0, failed[i].error)
        else:
            finish(i, "done", result["seconds"])

    try:
        if progress and tiled:
            from tqdm.auto import tqdm

            from .graph import graph_totals

            counts = [graph_totals(tj.plan, tj.store) for tj in tiled.values()]
            tiles_bar = tqdm(total=sum(sum(t.values()) for t, _ in counts),
                             initial=sum(sum(d.values()) for _, d in counts),
                             desc="tiles (tiled items)", unit="tile", file=sys.stderr,
                             dynamic_ncols=True, position=1)
        small_left = list(todo_small)
        # one graph per wave: the small items and every tiled item's first wave (all of a
        # tiled item that has at most run.WAVE_TASKS tasks left), then the next waves
        while small_left or waves:
            parts = {}
            for i in list(waves):
                try:
                    parts[i], last_wave[i] = next(waves[i])
                except Exception as exc:  # noqa: BLE001 - reported per item
                    del waves[i]
                    failed.setdefault(i, Failed(_error_text(exc)))
                    pending.append(finals.submit(finalise, i))
                    continue
                if last_wave[i]:
                    del waves[i]
            g = batch_graph(jobs, small_left, parts, device=device, batch_dir=str(bdir))
            small_left = []
            for i in parts:  # nothing to compute in this wave
                if g.remaining[i] == 0 and last_wave[i]:
                    pending.append(finals.submit(finalise, i))
            if g.keys:
                if client is not None:
                    retries = max((jobs[i].config.cluster.retries for i in g.remaining),
                                  default=0)
                    _compute_distributed(g, client, retries=retries, resources=resources,
                                         on_result=on_result)
                else:
                    _compute_local(g, workers, on_result)
            for i in list(waves):  # failed in a wave before its last: no more waves
                if i in failed:
                    del waves[i]
                    pending.append(finals.submit(finalise, i))
        for fut in list(pending):
            fut.result()
    finally:
        finals.shutdown(wait=True)
        for tj in tiled.values():  # an interrupted batch leaves no lock behind
            tj.release()
        if tiles_bar is not None:
            tiles_bar.close()
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


def _shared_level(spec: Any, level: int) -> tuple:
    """What tiled items share a level denoiser by (``tasks.denoiser_key``'s first parts)."""
    return (spec.ref_key or spec.run_dir, len(spec.levels), level)


def _level_counts(tiled: dict[int, Any]) -> tuple[dict[tuple, int], dict[tuple, list]]:
    """Level tasks not yet done per shared level (:func:`_shared_level`) over the tiled
    items, and the items' task specs per shared level. A failed item's tasks never finish,
    so its levels are never released early (they stay until the process ends)."""
    from .graph import graph_totals, label_level

    left: dict[tuple, int] = {}
    specs: dict[tuple, list] = {}
    for tj in tiled.values():
        totals, done = graph_totals(tj.plan, tj.store)
        for label, total in totals.items():
            level = label_level(label)
            if level is None:
                continue
            k = _shared_level(tj.spec, level)
            left[k] = left.get(k, 0) + total - done.get(label, 0)
            specs.setdefault(k, []).append(tj.spec)
    return left, specs


def _is_space(exc: OSError) -> bool:
    from ..storage.diskspace import is_out_of_space

    return is_out_of_space(exc)


def _prepare_tiled(job: BatchJob, device: str, batch_dir: str, address: str | None,
                   workers: int):
    """A large job's :class:`~gigapatch.pipeline.run.TiledJob`, its run store in
    ``BATCH_DIR/runs/`` (resumed when an earlier batch stopped), its keys its own.

    ``device`` is already resolved on a worker (:func:`worker_device`): the plan (the
    ``auto`` backend per level) and the tile tasks use the workers' device."""
    from .outmeta import resolve_output_metadata
    from .run import TiledJob, TiledOptions

    ref = _REFERENCES.get(job.reference, job.ref_digest, job.config.output.max_input_pixels)
    run_dir = Path(batch_dir) / "runs" / f"item{job.item:04d}-seed{job.seed}-{job.key[:8]}"
    return TiledJob.prepare(
        ref, job.out_hw, job.output, seed=job.seed, config=job.config, device=device,
        options=TiledOptions(run_dir=run_dir, tiled=True, cluster=address, workers=workers),
        metadata=resolve_output_metadata(job.reference, job.config, job.out_hw,
                                         ref.shape[2]),
        prefix=f"gp-item{job.item}-seed{job.seed}-{job.key[:8]}")


def _finalise_tiled(tj, failed: Failed | None) -> None:
    """Write a tiled item's output; a damaged chunk (met by a task or by the writer) is
    repaired on its own (markers cleared, the missing tasks computed as the item's own
    graph), up to ``run.MAX_REPAIRS`` times. Raises the item's error."""
    from ..errors import GigapatchError
    from ..storage.runstore import CorruptChunkError
    from .run import MAX_REPAIRS

    if failed is not None and failed.space is not None:
        raise tj.space_error(failed.space)
    if failed is not None and failed.corrupt is None:
        raise GigapatchError(failed.error)
    corrupt = failed.corrupt if failed is not None else None
    for attempt in range(MAX_REPAIRS + 1):
        try:
            if corrupt is not None:
                tj.repair(corrupt)
                tj.run_waves()
            tj.finalise()
            return
        except CorruptChunkError as exc:
            if attempt == MAX_REPAIRS:
                raise
            corrupt = exc


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
