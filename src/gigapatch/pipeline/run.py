"""``run_tiled``: plan -> run store -> Dask graph of tiles -> streaming output writers.

Takes prepared inputs (a reference array, the output size, a ``Config``, a torch device:
``gigapatch.api.generate_tiled`` normalises user input) and a :class:`TiledOptions`.
Embedded default: the
local threaded scheduler (see :func:`local_threads`: on a GPU, tile tasks take turns on the
device while the other threads read, quantise, write and reduce the output pyramid; on a CPU
``cluster.workers`` threads, default 1 because every tile already uses all cores through
torch). With ``cluster.address`` / ``--cluster ADDR``, the graph goes to an existing
dask.distributed scheduler; the run store must then be on a path every worker sees.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..config import Config, config_hash
from ..diffusion.model_space import exact_samples, to_model
from ..errors import GigapatchError
from ..storage.metadata import OutputMetadata
from ..info import format_bytes
from ..storage.diskspace import check_free_space, is_out_of_space, used_bytes
from ..storage.runstore import CorruptChunkError, RunLock, RunStore
from .graph import TileGraph, build_graph, graph_totals, iter_graphs, label_level
from .outmeta import resolve_output_metadata
from .plan import RunPlan, disk_estimate, make_plan, prior_settings, tile_advice
from .progress import TileProgress
from .tasks import TaskSpec, release_level, run_level_tile

__all__ = ["run_tiled", "TiledJob", "TiledOptions", "TiledResult", "default_run_dir", "output_format",
           "read_result", "IMAGE_MAX_PIXELS"]

log = logging.getLogger(__package__)

#: times a run clears the markers of damaged chunks and runs again before giving up
MAX_REPAIRS = 3

#: local worker threads on a GPU by default: one tile on the device, the rest doing I/O
GPU_THREADS = 4

#: tasks per wave: a run's graph is built and computed in waves of at most this many tasks
#: (``graph.iter_graphs``), so planning time and memory do not grow with the tile count
WAVE_TASKS = 8192

#: PNG/JPEG/plain TIFF outputs are assembled in memory: only up to this many pixels
IMAGE_MAX_PIXELS = 2**28


@dataclass(frozen=True)
class TiledOptions:
    """How a tiled run is laid out and executed (none of it changes the image).

    Attributes
    ----------
    run_dir : path, optional
        The run store (default ``OUT.gp-run/`` beside the output). Re-running the same
        call resumes it; one made with another config or seed is refused.
    tile : int, optional
        Tile core side (multiple of 64; default ``tiling.tile``).
    tiled : bool, optional
        True: tile every level that does not fit one tile (``--tiled``); None: follow
        ``tiling.mode`` and ``tiling.global_max_pixels``.
    cluster : str, optional
        Address of a dask.distributed scheduler (default ``cluster.address``).
    workers : int, optional
        Local worker threads (default ``cluster.workers``, else see :func:`local_threads`).
    fmt : {"tiff", "cog", "dzi", "ome-zarr", "png"}, optional
        Output format (default: by suffix; ``cog`` needs the ``gis`` extra).
    writer : {"tifffile", "vips"}, optional
        Pyramidal TIFF writer (default ``output.writer``).
    keep_run : bool, optional
        Keep the run store after an output file was written (default ``tiling.keep_run``,
        False: removed on success; a failed or interrupted run keeps it to resume). Without
        an output the store is the result and is always kept.
    """

    run_dir: str | os.PathLike | None = None
    tile: int | None = None
    tiled: bool | None = True
    cluster: str | None = None
    workers: int | None = None
    fmt: str | None = None
    writer: str | None = None
    keep_run: bool | None = None


@dataclass
class TiledResult:
    """What a tiled run did (returned by :func:`run_tiled`)."""

    output: Path | None
    format: str | None
    run_dir: Path
    plan: RunPlan
    tasks_total: int
    tasks_computed: int
    seconds: dict[str, float] = field(default_factory=dict)
    level_seconds: dict[str, float] = field(default_factory=dict)
    output_bytes: int = 0
    preview: Path | None = None
    metadata: OutputMetadata | None = None
    run_dir_kept: bool = True

    def describe(self) -> list[str]:
        """Lines for the end of a CLI run: the file, its size, levels, how to view it."""
        h, w = self.plan.out_hw
        lines = []
        if self.output is not None:
            mb = self.output_bytes / 2**20
            levels = ", ".join(f"{s[1]}x{s[0]}" for s in self.plan.output_shapes) \
                if self.format in ("tiff", "ome-zarr", "cog") else f"{w}x{h}"
            carried = self.metadata is not None and self.format in ("tiff", "cog", "image")
            extra = self.metadata.describe() if carried else ""
            lines.append(f"wrote {self.output} ({w}x{h}, {self.plan.channels} channel"
                         f"{'s' if self.plan.channels != 1 else ''}, {self.plan.bit_depth}-bit, "
                         f"{f'{extra}, ' if extra else ''}"
                         f"{mb:,.1f} MiB) in {sum(self.seconds.values()):.1f} s")
            if self.format in ("tiff", "ome-zarr", "cog"):
                lines.append(f"  levels: {levels}")
            if self.preview is not None:
                lines.append(f"  preview: {self.preview}")
            lines.append("  view: " + how_to_view(self.output, self.format))
        if self.run_dir_kept:
            lines.append(f"  run store: {self.run_dir} ({self.tasks_computed} of "
                         f"{self.tasks_total} tasks computed this time; delete it when done)")
        else:
            lines.append(f"  run store: removed ({self.tasks_computed} of {self.tasks_total} "
                         f"tasks computed this time; --keep-run keeps it)")
        return lines


def how_to_view(path: Path, fmt: str | None) -> str:
    """One line telling the user which tools open ``path`` (format ``fmt``)."""
    if fmt == "tiff":
        return (f"`vipsdisp {path}`; QuPath or any OpenSlide viewer (File > Open); "
                f"QGIS (Layer > Add Raster Layer)")
    if fmt == "cog":
        return (f"QGIS (Layer > Add Raster Layer) or `gdalinfo {path}`; served over HTTP, "
                f"GIS tools read it in ranges (/vsicurl/)")
    if fmt == "dzi":
        return (f"OpenSeadragon: serve the folder (`python -m http.server`) and give "
                f"tileSources: '{Path(path).name}'")
    if fmt == "ome-zarr":
        return f"napari (`napari --plugin napari-ome-zarr {path}`), QuPath 0.6+, vizarr"
    return "any image viewer"


#: output formats: --format name -> internal name
FORMATS = {"tiff": "tiff", "cog": "cog", "dzi": "dzi", "ome-zarr": "ome-zarr", "png": "image"}


def default_run_dir(output: str | os.PathLike | None) -> Path:
    """``OUT.gp-run/`` beside the output (``gigapatch.gp-run`` without an output)."""
    if output is None:
        return Path("gigapatch.gp-run").absolute()
    p = Path(output).absolute()
    return p.with_name(p.name + ".gp-run")


def output_format(output: str | os.PathLike | None, fmt: str | None = None) -> str | None:
    """``tiff`` | ``cog`` | ``dzi`` | ``ome-zarr`` | ``image`` (PNG/JPEG) from ``--format``
    or the suffix."""
    if output is None:
        return None
    if fmt:
        if fmt not in FORMATS:
            raise GigapatchError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
        if fmt in ("tiff", "cog") and not str(output).lower().endswith((".tif", ".tiff")):
            raise GigapatchError(f"output {output}: --format {fmt} writes a TIFF; name it "
                                 f"{Path(output).stem}.tif")
        if fmt == "dzi" and not str(output).lower().endswith(".dzi"):
            raise GigapatchError(f"output {output}: --format dzi writes NAME.dzi + NAME_files/; "
                                 f"name it {Path(output).stem}.dzi")
        return FORMATS[fmt]
    name = str(output).lower().rstrip("/")
    if name.endswith(".dzi"):
        return "dzi"
    if name.endswith(".ome.zarr") or name.endswith(".zarr"):
        return "ome-zarr"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    if name.endswith((".png", ".jpg", ".jpeg")):
        return "image"
    raise GigapatchError(f"output {output}: the tiled pipeline writes .tif/.tiff (pyramidal "
                         f"BigTIFF), .ome.zarr, or .png/.jpg for small outputs")


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _check_output(path: Path, fmt: str, out_hw: tuple[int, int], bit_depth: int) -> None:
    from ..storage.imageio import check_writable

    if fmt == "image":
        if out_hw[0] * out_hw[1] > IMAGE_MAX_PIXELS:
            raise GigapatchError(f"output {path}: {out_hw[1]}x{out_hw[0]} is too large for a "
                                 f"PNG/JPEG held in memory; write a .tif (pyramidal BigTIFF) "
                                 f"or .ome.zarr")
        check_writable(path, bit_depth=bit_depth)
    elif fmt in ("tiff", "cog"):
        check_writable(path, bit_depth=bit_depth)
        if fmt == "cog":
            from ..storage.cog import need_rasterio

            need_rasterio()
    else:
        parent = path.absolute().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise GigapatchError(f"cannot write output {path}: the folder {parent} does not "
                                 f"exist or is not writable")


def local_threads(device, workers: int | None, config: Config) -> tuple[int, bool]:
    """Local scheduler threads, and whether tile tasks take turns on the device.

    On a GPU: ``workers`` / ``cluster.workers`` threads (default :data:`GPU_THREADS`), the
    device part of each tile under one lock (``tasks.device_turn``), so the Zarr reads and
    writes, quantising and output pyramid chunks of the other tasks overlap the GPU work.
    On a CPU: ``workers`` / ``cluster.workers`` threads (default 1: every tile already uses
    all cores through torch), no lock.
    """
    n = workers or config.cluster.workers
    if str(device).startswith("cuda"):
        return n or GPU_THREADS, True
    return n or 1, False


def compute_on_threads(dsk: dict, keys: list, workers: int,
                       posttask: Callable[..., None]) -> None:
    """Compute ``keys`` of ``dsk`` on ``workers`` local threads (dask's threaded scheduler),
    calling dask's ``posttask(key, result, dsk, state, worker_id)`` after each task.

    Daemon threads (multiprocessing's ThreadPool): on Ctrl-C the main thread leaves at once
    and the process exits while a tile is still computing (its chunk is written atomically,
    its marker only after it); concurrent.futures threads would be joined at exit, i.e.
    after the running tiles (minutes). The KeyboardInterrupt then carries
    ``tiles_running = True``, which tells the CLI to leave with ``os._exit``.
    """
    from multiprocessing.pool import ThreadPool

    import dask.threaded
    from dask.callbacks import Callback

    pool = ThreadPool(workers)
    try:
        with Callback(posttask=posttask):
            dask.threaded.get(dsk, keys, num_workers=workers, pool=pool)
    except KeyboardInterrupt as exc:
        exc.tiles_running = True  # type: ignore[attr-defined]
        raise
    pool.close()
    pool.join()


def _execute_local(graph, workers: int, prog: TileProgress,
                   on_done: Callable[[str], None] | None = None) -> None:
    """Compute ``graph`` on local threads; ``on_done(label)`` when a label's last task of
    the run is done. Level tiles report their sampler steps to ``prog`` as they run."""
    def posttask(key, result, dsk, state, worker_id):
        label = graph.label.get(key)
        if label is not None:
            last = prog.update(label, result[-1] if isinstance(result, tuple) else 0.0,
                               key=key)
            if last and on_done is not None:
                on_done(label)

    compute_on_threads(with_step_reports(graph, prog), graph.keys, workers, posttask)


def with_step_reports(graph, prog: TileProgress) -> dict:
    """``graph.dsk`` with each level tile's task given ``on_step`` = ``prog.advance`` of
    its label and key (a copy: the graph itself stays picklable for a cluster)."""
    dsk = dict(graph.dsk)
    for key in graph.keys:
        task = dsk[key]
        if isinstance(task, tuple) and task and task[0] is run_level_tile:
            report = functools.partial(prog.advance, graph.label[key], key)
            dsk[key] = (functools.partial(run_level_tile, on_step=report), *task[1:])
    return dsk


def _execute_distributed(graph, address: str, retries: int, device: str,
                         prog: TileProgress, spec: TaskSpec | None = None) -> None:
    """Compute ``graph`` on the cluster at ``address``; when the last task of a level is
    done, every worker drops its denoisers of that level (``tasks.release_level`` through
    ``client.run``: a fine level's index is GBs, and a worker would otherwise keep each
    level's through the finer ones)."""
    from distributed import Client, as_completed

    with Client(address) as client:
        resources = None
        if device.startswith("cuda"):
            info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) \
                else client.scheduler_info()
            if any("GPU" in (w.get("resources") or {}) for w in info["workers"].values()):
                resources = {"GPU": 1}
        futures = client.get(graph.dsk, graph.keys, sync=False, retries=retries,
                             resources=resources)
        for fut in as_completed(futures):
            result = fut.result()  # raises the task's exception
            label = graph.label.get(fut.key)
            if label is not None and prog.update(label, result[-1]) and spec is not None:
                level = label_level(label)
                if level is not None:
                    client.run(release_level, spec, level)


def _accepts_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _write_output(store: RunStore, plan: RunPlan, path: Path, fmt: str, config: Config,
                  writer: str | None, meta: OutputMetadata) -> None:
    oc = config.output
    dtype = np.uint8 if plan.bit_depth == 8 else np.uint16
    band = math.lcm(plan.tile, oc.tiff_tile)
    if fmt == "image":
        from ..storage.imageio import write_image

        q = store.read("output/0", None)
        top = 255.0 if plan.bit_depth == 8 else 65535.0
        write_image(path, np.moveaxis(q, 0, -1).astype(np.float32) / np.float32(top),
                    bit_depth=plan.bit_depth, metadata=meta)
    elif fmt == "cog":
        from ..storage.cog import write_cog

        write_cog(path, [lambda r=r: store.output_bands(r, band)
                         for r in range(len(plan.output_shapes))], plan.output_shapes,
                  channels=plan.channels, dtype=dtype, tile=oc.tiff_tile,
                  compression=oc.compression, metadata=meta)
    elif fmt == "dzi":
        from ..storage.web import write_dzi

        write_dzi(path, store.output_bands(0, band), plan.out_hw, channels=plan.channels,
                  dtype=dtype)
    elif fmt == "ome-zarr":
        from ..storage.omezarr import write_ome_zarr

        for r in range(len(plan.output_shapes)):  # checksums first: the copy is of files
            for _ in store.output_bands(r):
                pass
        write_ome_zarr(store.path / "output", path)
    else:
        from ..storage.tiff import write_tiff_tifffile, write_tiff_vips

        if (writer or oc.writer) == "vips":
            write_tiff_vips(path, store.output_bands(0, band), plan.out_hw,
                            channels=plan.channels, dtype=dtype, tile=oc.tiff_tile,
                            compression=oc.compression, layout=oc.layout, metadata=meta)
        else:
            levels = [lambda r=r: store.output_bands(r, band)
                      for r in range(len(plan.output_shapes))]
            write_tiff_tifffile(path, levels, plan.output_shapes, channels=plan.channels,
                                dtype=dtype, tile=oc.tiff_tile, compression=oc.compression,
                                layout=oc.layout, metadata=meta)


def _write_preview(store: RunStore, plan: RunPlan, path: Path) -> Path:
    """``OUT.preview.jpg`` from the smallest output level whose long side is >= 1024."""
    from ..storage.web import PREVIEW_SIDE, preview_path, write_preview

    r = max([0] + [r for r, hw in enumerate(plan.output_shapes) if max(hw) >= PREVIEW_SIDE])
    q = np.moveaxis(store.read(f"output/{r}", None), 0, -1)
    return write_preview(preview_path(path), q)


def _size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


class TiledJob:
    """One tiled output in three steps, so a batch can compose many into one graph.

    :meth:`prepare` plans the run, checks the output and the free disk, takes the run dir's
    lock and opens (or resumes) the run store; :meth:`graph` gives the Dask tasks still to
    run (every level's tiles and the output pyramid's chunks; call it again after
    :meth:`repair`); :meth:`finalise` writes the output file and its preview, releases the
    lock and removes the run store (unless kept). :meth:`release` gives up the lock of a
    job that failed (its run store stays, to resume). :func:`run_tiled` is these steps
    for one output; ``pipeline.batch`` computes every item's :meth:`graph` in one graph.
    """

    def __init__(self, *, plan: RunPlan, spec: TaskSpec, store: RunStore, lock: RunLock,
                 run_dir: Path, out_path: Path | None, fmt: str | None, config: Config,
                 options: TiledOptions, metadata: OutputMetadata, needs_bytes: int,
                 keep: bool, prefix: str, t_start: float):
        self.plan, self.spec, self.store, self.lock = plan, spec, store, lock
        self.run_dir, self.out_path, self.fmt = run_dir, out_path, fmt
        self.config, self.options, self.metadata = config, options, metadata
        self.needs_bytes, self.keep, self.prefix = needs_bytes, keep, prefix
        self.t_start = t_start
        self.seconds: dict[str, float] = {}
        self.level_seconds: dict[str, float] = {}
        self.tasks_total: int | None = None
        self.tasks_computed = 0

    @classmethod
    def prepare(cls, ref: np.ndarray, out_hw: tuple[int, int],
                output: str | os.PathLike | None = None, *, seed: int, config: Config,
                device: Any, options: TiledOptions = TiledOptions(),
                metadata: OutputMetadata | None = None, prefix: str | None = None) \
            -> "TiledJob":
        """Plan, check, lock and open the run store (arguments as :func:`run_tiled`).

        ``prefix`` starts every task key of the job's graph (default ``gp-RUNKEY``; a batch
        gives each output its own, as two outputs may share a run key).

        Raises
        ------
        GigapatchError
            Symmetry asked, an unwritable output, not enough free disk, the run dir in use
            or made with another config (nothing is locked then).
        """
        opt = options
        t_start = time.perf_counter()
        cfg, dev = config, device
        if cfg.sampler.symmetry != "none":
            raise GigapatchError(
                f"sampler.symmetry={cfg.sampler.symmetry} needs the whole image (a tile's "
                f"mirror partner lies outside it): write a .png of at most "
                f"tiling.global_max_pixels pixels without the tiled options, or drop "
                f"--symmetry")
        ref_hw = ref.shape[:2]
        fmt_ = output_format(output, opt.fmt)
        out_path = Path(output) if output is not None else None
        out_meta = metadata if metadata is not None else \
            resolve_output_metadata(None, cfg, out_hw, ref.shape[2])
        if out_path is not None:
            _check_output(out_path, fmt_, out_hw, cfg.output.bits())
        ref_model = to_model(ref).numpy()  # (C, h, w) in [-1, 1]
        ref_key = _digest(ref_model)
        # the store keeps the reference's integer samples when they give ref_model bit for
        # bit (an 8-bit reference: 1 byte per sample instead of 4)
        stored = exact_samples(ref, ref_model)
        stored_ref = ref_model if stored is None else stored
        plan = make_plan(ref_hw, out_hw, ref.shape[2], cfg, seed=seed, ref_digest=ref_key,
                         tile=opt.tile, tiled=opt.tiled, device=dev)
        rd = Path(opt.run_dir).absolute() if opt.run_dir is not None \
            else default_run_dir(output)
        # refuse before the lock and before any work when the writes cannot fit
        scratch, out_bytes = disk_estimate(plan, pyramid=fmt_ != "image",
                                           ref_itemsize=stored_ref.dtype.itemsize)
        needs = [("run store", rd, scratch - used_bytes(rd))]
        if out_path is not None:
            needs.append(("output", out_path, out_bytes))
        check_free_space(needs)
        advice = tile_advice(plan)
        if advice:
            log.warning("warning: %s", advice)
        keep = cfg.tiling.keep_run if opt.keep_run is None else bool(opt.keep_run)
        address = opt.cluster or cfg.cluster.address
        n_workers, serial_device = local_threads(dev, opt.workers, cfg)
        if address:
            log.info("tiles run on the dask.distributed scheduler at %s", address)
        else:
            log.info("tiles run on %d local thread%s on %s%s", n_workers,
                     "s" if n_workers != 1 else "", dev,
                     ", taking turns on the device" if serial_device else "")
        sc = cfg.sampler
        spec = TaskSpec(
            run_dir=str(rd), seed=int(seed), device=str(dev), channels=plan.channels,
            patch_size=sc.patch_size, rho=sc.rho, steps=sc.steps, eta=sc.eta,
            s_min=sc.s_min, levels=plan.levels, grids=plan.grids, denoiser=plan.denoiser,
            bit_depth=plan.bit_depth, serial_device=serial_device, prior=prior_settings(cfg),
            ref_key=ref_key)
        meta = {"summary": plan.summary(), "config": cfg.to_dict(),
                "config_hash": config_hash(cfg), "seed": int(seed), "out_hw": list(out_hw),
                "ref_hw": list(ref_hw), "tile": plan.tile,
                "levels": [{"level": lv.level, "out_hw": list(lv.out_hw), "mode": lv.mode,
                            "backend": lv.backend,
                            "halo": lv.halo, "tiles": len(grid)}
                           for lv, grid in zip(plan.levels, plan.grids)]}
        lock = RunLock(rd)
        try:
            lock.acquire()
            store = RunStore.create_or_open(
                rd, run_key=plan.run_key, meta=meta, reference=stored_ref,
                level_shapes=[lv.out_hw for lv in plan.levels],
                grid_shapes=[grid.shape for grid in plan.grids],
                output_shapes=plan.output_shapes, chunk=plan.tile,
                out_dtype="uint8" if plan.bit_depth == 8 else "uint16")
        except BaseException as exc:
            lock.release()
            if isinstance(exc, OSError) and is_out_of_space(exc):
                raise _space_error(exc, rd, scratch + out_bytes) from None
            raise
        job = cls(plan=plan, spec=spec, store=store, lock=lock, run_dir=rd,
                  out_path=out_path, fmt=fmt_, config=cfg, options=opt, metadata=out_meta,
                  needs_bytes=scratch + out_bytes, keep=keep,
                  prefix=prefix or f"gp-{plan.run_key[:8]}", t_start=t_start)
        job.seconds["plan"] = time.perf_counter() - t_start
        return job

    def graph(self) -> TileGraph:
        """All the tasks not yet done (resume) as one graph, keys starting with this job's
        prefix (small runs, tests; a run computes :meth:`waves`)."""
        g = build_graph(self.plan, self.spec, self.store, prefix=self.prefix)
        self._count(g)
        return g

    def waves(self, max_tasks: int | None = None) -> Iterator[tuple[TileGraph, bool]]:
        """The tasks not yet done in waves of at most ``max_tasks`` (default
        :data:`WAVE_TASKS`), each with whether it is the last: compute each wave before
        using the next (a wave's edges to earlier waves are left out). The next wave is
        built before the current one is handed out (to know it is the last), so at most
        two waves are held: planning memory and time do not grow with the tile count."""
        it = iter_graphs(self.plan, self.spec, self.store, prefix=self.prefix,
                         max_tasks=max_tasks or WAVE_TASKS)
        current = next(it)
        for following in it:
            self._count(current)
            yield current, False
            current = following
        self._count(current)
        yield current, True

    def _count(self, g: TileGraph) -> None:
        if self.tasks_total is None:
            self.tasks_total = sum(g.totals.values())
        self.tasks_computed += len(g.keys)

    def progress(self, *, enabled: bool = False) -> TileProgress:
        """Bars per level over the whole run (tasks done earlier count as done)."""
        totals, done = graph_totals(self.plan, self.store)
        return TileProgress(totals, done, enabled=enabled)

    def repair(self, exc: CorruptChunkError) -> None:
        """Clear the markers of the tasks owning ``exc``'s chunks (run :meth:`graph` again)."""
        cleared = self.store.invalidate(exc)
        log.warning("%s; recomputing %d task%s", exc, len(cleared),
                    "s" if len(cleared) != 1 else "")

    def execute(self, graph: TileGraph, prog: TileProgress) -> None:
        """Compute ``graph`` alone: on ``options.cluster`` / ``cluster.address``, or on
        local threads (:func:`local_threads`); ``prog`` counts its tasks."""
        cfg = self.config
        address = self.options.cluster or cfg.cluster.address
        t0 = time.perf_counter()
        try:
            if graph.keys:
                if address:
                    _execute_distributed(graph, address, cfg.cluster.retries,
                                         self.spec.device, prog, self.spec)
                else:
                    _execute_local(graph, local_threads(self.spec.device,
                                                        self.options.workers, cfg)[0], prog,
                                   on_done=self._level_done)
        finally:
            self.seconds["sample"] = self.seconds.get("sample", 0.0) + \
                time.perf_counter() - t0

    def _level_done(self, label: str) -> None:
        """A level's last task is done: this process's denoisers of it go (local runs; on
        a cluster each worker drops its own, :func:`_execute_distributed`)."""
        level = label_level(label)
        if level is not None:
            release_level(self.spec, level)

    def run_waves(self, *, progress: bool = False) -> None:
        """Compute every wave still to do, one after another (the job alone)."""
        prog = self.progress(enabled=progress)
        try:
            for g, _last in self.waves():
                self.execute(g, prog)
        finally:
            prog.close()
            self.add_tile_seconds(prog.seconds)

    def add_tile_seconds(self, seconds: dict[str, float]) -> None:
        for k, v in seconds.items():
            self.level_seconds[k] = self.level_seconds.get(k, 0.0) + v

    def finalise(self) -> TiledResult:
        """Write the output (and preview), release the lock, remove the run store unless
        kept. Raises ``CorruptChunkError`` when a chunk it reads is damaged (the lock is
        then still held: :meth:`repair`, compute :meth:`graph`, finalise again)."""
        preview, nbytes = None, 0
        if self.out_path is not None:
            t0 = time.perf_counter()
            try:
                _write_output(self.store, self.plan, self.out_path, self.fmt, self.config,
                              self.options.writer, self.metadata)
            except OSError as exc:
                if is_out_of_space(exc):
                    raise self.space_error(exc) from None
                raise
            self.seconds["write"] = time.perf_counter() - t0
            nbytes = _size_on_disk(self.out_path)
            if self.config.output.preview:
                preview = _write_preview(self.store, self.plan, self.out_path)
        self.release()
        if self.out_path is not None and not self.keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return TiledResult(self.out_path, self.fmt, self.run_dir, self.plan,
                           self.tasks_total or 0, self.tasks_computed, self.seconds,
                           self.level_seconds, nbytes, preview, self.metadata,
                           run_dir_kept=self.out_path is None or self.keep)

    def release(self) -> None:
        """Give up the run dir's lock (the run store stays: the same call resumes it)."""
        self.lock.release()

    def space_error(self, exc: OSError) -> GigapatchError:
        """The one-line error for a write that failed for lack of space."""
        return _space_error(exc, self.run_dir, self.needs_bytes)


def _space_error(exc: OSError, run_dir: Path, needs: int) -> GigapatchError:
    where = exc.filename or run_dir
    return GigapatchError(
        f"no space left on the disk writing {where} ({exc.strerror}); free some space "
        f"(this run needs up to ~{format_bytes(needs)}) and run the same "
        f"command again: it resumes where it stopped")


def run_tiled(ref: np.ndarray, out_hw: tuple[int, int],
              output: str | os.PathLike | None = None, *, seed: int, config: Config,
              device: Any, options: TiledOptions = TiledOptions(),
              progress: bool = False, metadata: OutputMetadata | None = None) -> TiledResult:
    """Generate one image tile by tile through a resumable run store.

    The three steps of a :class:`TiledJob` (prepare, graph + compute, finalise), with up
    to :data:`MAX_REPAIRS` rounds of recomputing damaged chunks.

    Parameters
    ----------
    ref : ndarray, shape (H, W, C)
        The reference: float32 in [0, 1], or its uint8 / uint16 samples
        (``gigapatch.api.load_reference``, ``native``).
    out_hw : (int, int)
        Output (height, width).
    output : path, optional
        ``.tif``/``.tiff`` (pyramidal tiled BigTIFF), ``.ome.zarr`` (OME-Zarr 0.5), or
        ``.png``/``.jpg`` (small outputs only). ``None``: only the run store is filled.
    seed : int
    config : Config
    device : torch.device
    options : TiledOptions
    progress : bool
        tqdm bars per level on stderr.
    metadata : OutputMetadata, optional
        Resolution, ICC profile, georeferencing and band names of the output
        (``gigapatch.api.generate_tiled`` reads the reference file's; default: only the
        ``output`` config keys, :func:`gigapatch.pipeline.outmeta.resolve_output_metadata`).
    """
    job = TiledJob.prepare(ref, out_hw, output, seed=seed, config=config, device=device,
                           options=options, metadata=metadata)
    try:
        for attempt in range(MAX_REPAIRS + 1):
            try:
                job.run_waves(progress=progress)
                return job.finalise()
            except CorruptChunkError as exc:
                # a lost or damaged chunk: clear its owner's marker, run what is missing
                if attempt == MAX_REPAIRS:
                    raise
                job.repair(exc)
    except OSError as exc:
        if not is_out_of_space(exc):
            raise
        raise job.space_error(exc) from None
    finally:
        job.release()
    raise AssertionError("unreachable")  # pragma: no cover


def read_result(run_dir: str | os.PathLike, level: int | None = None,
                model_space: bool = False) -> np.ndarray:
    """A finished run's level (default the finest) as float32.

    The finest level is stored only quantised (``output/0``): it comes back as
    ``q / (2**bit_depth - 1)``, (H, W, C) in [0, 1], the image the output file holds.
    A coarser level comes back as ``gigapatch.generate`` would give it ((H, W, C) in [0, 1])
    or, with ``model_space=True``, as stored ((C, H, W) in [-1, 1], not clamped).
    For small outputs and tests: it reads the whole level.
    """
    store = RunStore.open(run_dir)
    n = len(store.attrs["levels"])
    lv = n - 1 if level is None else level
    if lv == n - 1:
        if model_space:
            raise GigapatchError(f"run store {run_dir}: the finest level is stored quantised "
                                 f"only (output/0); read it with model_space=False")
        q = store.read("output/0", None)
        top = np.float32(np.iinfo(q.dtype).max)
        return np.ascontiguousarray(np.moveaxis(q, 0, -1).astype(np.float32) / top)
    a = store.read(f"levels/{lv}", None)
    if model_space:
        return a
    return np.ascontiguousarray(np.moveaxis((np.clip(a, -1, 1) + 1) / 2, 0, -1),
                                dtype=np.float32)
