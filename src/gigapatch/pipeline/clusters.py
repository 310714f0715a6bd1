"""Where a batch runs: a local cluster, an existing scheduler, or HPC jobs (dask-jobqueue).

:func:`open_client` is the one place that starts or connects to a Dask cluster for
``gigapatch batch``:

- nothing given: a ``LocalCluster`` of worker processes on this machine; on a machine with
  CUDA GPUs, one worker per GPU (dask-cuda's ``LocalCUDACluster`` when installed, else a
  ``SpecCluster`` of Nannies each with its own ``CUDA_VISIBLE_DEVICES``), every GPU worker
  declaring the resource ``{"GPU": 1}``;
- ``address``: an existing ``dask.distributed`` scheduler (``tcp://host:8786``);
- ``scheduler_file``: the scheduler file written by ``dask scheduler --scheduler-file`` or
  dask-mpi (the usual HPC convention);
- ``kind`` in slurm | pbs | lsf | sge: batch jobs submitted through dask-jobqueue (the
  optional extra ``gigapatch[hpc]``) from the ``hpc`` section of the config. With
  ``hpc.gpus_per_job`` > 0, every job asks its scheduler for the GPUs and starts one worker
  per GPU (:mod:`gigapatch.pipeline.gpu_worker`), each with ``CUDA_VISIBLE_DEVICES`` set to its GPU
  and the resource ``{"GPU": 1}``.

Tasks that need a GPU are submitted with ``resources={"GPU": 1}`` through
``client.submit``/``client.map`` (annotations can be dropped by graph optimisation), so
one task runs per GPU at a time.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import GigapatchError

__all__ = ["open_client", "ClusterHandle", "JOBQUEUE_KINDS", "jobqueue_cluster",
           "gpu_worker_specs", "local_gpu_devices", "has_gpu_workers"]

#: ``--cluster`` values handled by dask-jobqueue
JOBQUEUE_KINDS = ("slurm", "pbs", "lsf", "sge")


@dataclass
class ClusterHandle:
    """An open client and what its workers offer."""

    client: Any
    cluster: Any | None
    gpus: bool          # tasks go out with resources={"GPU": 1}
    description: str


def local_gpu_devices() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return []
    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [d.strip() for d in visible.split(",") if d.strip()][:torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_worker_specs(devices: list[str], *, threads: int = 1, name: str = "gpu",
                     memory_limit: str | int = "auto") -> dict[str, dict[str, Any]]:
    """SpecCluster worker specs: one Nanny per GPU, pinned through CUDA_VISIBLE_DEVICES.

    Each worker sees exactly one GPU (as ``cuda:0``) and declares ``{"GPU": 1}``, so the
    scheduler runs one GPU task per device at a time.
    """
    from distributed import Nanny

    return {f"{name}-{dev}": {"cls": Nanny, "options": {
        "nthreads": threads, "resources": {"GPU": 1}, "memory_limit": memory_limit,
        "env": {"CUDA_VISIBLE_DEVICES": dev}}} for dev in devices}


def _local_cluster(workers: int | None, threads: int | None, device: str):
    """A local cluster: one worker per GPU on a GPU machine, else CPU worker processes."""
    from distributed import LocalCluster

    devices = local_gpu_devices() if device in ("auto", "cuda") or device.startswith(
        "cuda") else []
    if devices:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            from distributed import Scheduler, SpecCluster

            specs = gpu_worker_specs(devices, threads=threads or 1)
            cluster = SpecCluster(workers=specs, scheduler={
                "cls": Scheduler, "options": {"dashboard_address": None}})
            return cluster, True, f"{len(devices)} GPU worker(s) (one Nanny per GPU)"
        cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(devices),
                                   threads_per_worker=threads or 1,
                                   resources={"GPU": 1}, dashboard_address=None)
        return cluster, True, f"{len(devices)} GPU worker(s) (dask-cuda)"
    n = workers or 1
    cores = os.cpu_count() or 1
    torch_threads = threads or max(1, cores // n)
    # every worker process runs one task at a time; torch inside uses torch_threads cores
    env = {k: str(torch_threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                          "OPENBLAS_NUM_THREADS")}
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=None, env=env)
    return cluster, False, (f"local cluster: {n} worker process{'es' if n != 1 else ''}, "
                            f"{torch_threads} torch thread{'s' if torch_threads != 1 else ''} "
                            f"each")


def jobqueue_cluster(kind: str, hpc, *, python: str | None = None):
    """A dask-jobqueue cluster (not yet scaled) from the ``hpc`` config section.

    Parameters
    ----------
    kind : {"slurm", "pbs", "lsf", "sge"}
    hpc : HpcConfig
        queue, account, cores, memory, walltime, gpus_per_job, processes, interface,
        local_directory, job_extra, job_prologue (see configs/default.yaml).
    python : str, optional
        The Python that runs the workers (default: this one).
    """
    if kind not in JOBQUEUE_KINDS:
        raise GigapatchError(f"--cluster {kind}: expected one of {', '.join(JOBQUEUE_KINDS)}")
    try:
        import dask_jobqueue
    except ImportError:
        raise GigapatchError(f"--cluster {kind} needs dask-jobqueue; install the extra: "
                             f"pip install 'gigapatch[hpc]'") from None
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster,
           "lsf": dask_jobqueue.LSFCluster, "sge": dask_jobqueue.SGECluster}[kind]
    gpus = hpc.gpus_per_job
    extra = [d.strip() for d in (hpc.job_extra or "").split(";") if d.strip()]
    prologue = [d.strip() for d in (hpc.job_prologue or "").split(";") if d.strip()]
    kwargs: dict[str, Any] = dict(cores=hpc.cores, memory=hpc.memory, walltime=hpc.walltime,
                                  queue=hpc.queue, interface=hpc.interface,
                                  local_directory=hpc.local_directory,
                                  job_script_prologue=prologue,
                                  scheduler_options={"dashboard_address": None})
    if python is not None:
        kwargs["python"] = python
    if kind in ("slurm", "pbs"):
        kwargs["account"] = hpc.account
    else:
        kwargs["project"] = hpc.account
    if gpus:
        # one worker process per GPU, each pinned to its device by gigapatch.gpu_worker
        kwargs["processes"] = gpus
        kwargs["worker_command"] = "gigapatch.pipeline.gpu_worker"
        kwargs["worker_extra_args"] = ["--gpus", str(gpus)]
        if kind == "slurm":
            extra.append(f"--gres=gpu:{gpus}")
        elif kind == "pbs":
            kwargs["resource_spec"] = (f"select=1:ncpus={hpc.cores}:ngpus={gpus}:"
                                       f"mem={hpc.memory}")
        elif kind == "lsf":
            extra.append(f'-gpu "num={gpus}"')
        else:
            extra.append(f"-l gpu={gpus}")
    else:
        kwargs["processes"] = hpc.processes
    kwargs["job_extra_directives"] = extra
    return cls(**kwargs)


@contextlib.contextmanager
def open_client(*, kind: str | None = None, address: str | None = None,
                scheduler_file: str | None = None, workers: int | None = None,
                threads: int | None = None, device: str = "auto", hpc=None) \
        -> Iterator[ClusterHandle]:
    """Start or connect to the cluster a batch runs on; closes what it started.

    Parameters
    ----------
    kind : {None, "local", "slurm", "pbs", "lsf", "sge"}
        Where to start workers (None/"local": this machine).
    address : str, optional
        An existing scheduler's address (``tcp://host:8786``).
    scheduler_file : str, optional
        An existing scheduler's file (``dask scheduler --scheduler-file F``, dask-mpi).
    workers : int, optional
        Local worker processes (default 1 on a CPU; one per GPU on a GPU machine).
    threads : int, optional
        torch threads per local CPU worker (default: cores / workers).
    device : str
        ``auto`` | ``cpu`` | ``cuda``: whether a local cluster starts GPU workers.
    hpc : HpcConfig, optional
        The ``hpc`` config section, for the job-queue kinds: jobs, adaptive_min/max.
    """
    from distributed import Client

    given = [x for x in (address, scheduler_file, kind if kind not in (None, "local")
                         else None) if x]
    if len(given) > 1:
        raise GigapatchError("give one of --cluster KIND, --address ADDR and "
                             "--scheduler-file F")
    if scheduler_file is not None:
        if not os.path.isfile(scheduler_file):
            raise GigapatchError(f"--scheduler-file {scheduler_file} does not exist; start "
                                 f"the scheduler first (dask scheduler --scheduler-file F, "
                                 f"or dask-mpi)")
        with Client(scheduler_file=scheduler_file, timeout="60s") as client:
            yield ClusterHandle(client, None, has_gpu_workers(client),
                                f"scheduler from {scheduler_file}")
        return
    if address is not None:
        with Client(address, timeout="60s") as client:
            yield ClusterHandle(client, None, has_gpu_workers(client), f"scheduler {address}")
        return
    if kind in JOBQUEUE_KINDS:
        if hpc is None:
            raise GigapatchError(f"--cluster {kind}: no hpc config section given")
        cluster = jobqueue_cluster(kind, hpc)
        try:
            if hpc.adaptive_max:
                cluster.adapt(minimum_jobs=hpc.adaptive_min, maximum_jobs=hpc.adaptive_max)
            else:
                cluster.scale(jobs=hpc.jobs)
            with Client(cluster) as client:
                yield ClusterHandle(client, cluster, hpc.gpus_per_job > 0,
                                    f"{kind} jobs ({_jobs_text(hpc)})")
        finally:
            cluster.close()
        return
    if kind not in (None, "local"):
        raise GigapatchError(f"--cluster {kind}: expected local, "
                             f"{', '.join(JOBQUEUE_KINDS)}")
    cluster, gpus, text = _local_cluster(workers, threads, device)
    try:
        with Client(cluster) as client:
            yield ClusterHandle(client, cluster, gpus, text)
    finally:
        cluster.close()


def _jobs_text(hpc) -> str:
    if hpc.adaptive_max:
        return f"adaptive, {hpc.adaptive_min}..{hpc.adaptive_max} jobs"
    return f"{hpc.jobs} job{'s' if hpc.jobs != 1 else ''}"


def has_gpu_workers(client) -> bool:
    """Whether a worker connected to ``client``'s scheduler declares a ``GPU`` resource."""
    import inspect

    info = client.scheduler_info(n_workers=-1) if "n_workers" in inspect.signature(
        client.scheduler_info).parameters else client.scheduler_info()
    return any("GPU" in (w.get("resources") or {}) for w in info["workers"].values())
