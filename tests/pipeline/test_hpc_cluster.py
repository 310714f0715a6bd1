"""HPC clusters through dask-jobqueue, against stand-in ``sbatch``/``squeue``/``scancel``.

The stand-ins (written into tmp_path, first on PATH) start the job script dask-jobqueue
generated as a local process and print a job id; ``scancel`` kills its process group. So
the job script, the worker start (``dask worker`` or ``gigapatch.gpu_worker``) and the
scheduling are the real ones. GPU jobs are run on the CPU: the job's workers get their
own ``CUDA_VISIBLE_DEVICES`` and the ``GPU`` resource, and the batch's tasks are
submitted with ``resources={"GPU": 1}``.
"""

import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from gigapatch.pipeline.batch import run_batch
from gigapatch.pipeline.manifest import load_manifest
from gigapatch.pipeline.clusters import gpu_worker_specs, jobqueue_cluster, open_client
from gigapatch.config import load_config
from gigapatch.pipeline.gpu_worker import worker_devices

DATA = Path(__file__).resolve().parents[1] / "data"
CHEAP = ["sampler.patch_size=5", "sampler.steps=3", "sampler.eta=0.5"]

SBATCH = """#!/usr/bin/env bash
# stand-in sbatch: run the job script as a local process in its own session
set -e
log="$GP_FAKE_SLURM"
n=$(ls "$log" | grep -c '^job-.*\\.sh$' || true)
cp "$1" "$log/job-$n.sh"
setsid bash "$log/job-$n.sh" > "$log/job-$n.out" 2>&1 < /dev/null &
echo "$!" >> "$log/jobs"
echo "Submitted batch job $!"
"""
SCANCEL = """#!/usr/bin/env bash
echo "$@" >> "$GP_FAKE_SLURM/scancel.log"
for id in "$@"; do kill -TERM -- "-$id" 2>/dev/null || true; done
"""
SQUEUE = """#!/usr/bin/env bash
echo "JOBID STATE"
while read -r id; do kill -0 "$id" 2>/dev/null && echo "$id RUNNING"; done < "$GP_FAKE_SLURM/jobs"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir, log = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    log.mkdir()
    (log / "jobs").write_text("")
    for name, text in (("sbatch", SBATCH), ("scancel", SCANCEL), ("squeue", SQUEUE)):
        p = bin_dir / name
        p.write_text(text)
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GP_FAKE_SLURM", str(log))
    return log


def _jobs(tmp_path, n=2):
    shutil.copy(DATA / "wild_bush_crop.png", tmp_path / "bush.png")
    (tmp_path / "out").mkdir()
    items = "\n".join(f"  - {{reference: bush.png, output: out/b{k}.png, size: 64x48, "
                      f"seed: {k}}}" for k in range(n))
    (tmp_path / "m.yaml").write_text(f"defaults: {{set: {CHEAP}}}\nitems:\n{items}\n")
    return load_manifest(tmp_path / "m.yaml")


def _hpc(*sets):
    return load_config("default", ["hpc.memory=8GB", "hpc.walltime=00:10:00", *sets]).hpc


def _job_ids(log: Path) -> list[str]:
    return (log / "jobs").read_text().split()


def _wait_gone(pid: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_slurm_job_runs_a_batch_end_to_end(tmp_path, fake_slurm):
    jobs = _jobs(tmp_path)
    hpc = _hpc("hpc.cores=1", "hpc.queue=debug", "hpc.account=proj42")
    with open_client(kind="slurm", hpc=hpc) as h:
        assert not h.gpus and "slurm" in h.description
        h.client.wait_for_workers(1, timeout=120)
        res = run_batch(jobs, h.client, batch_dir=tmp_path / "b", device="cpu",
                        progress=False)
    assert res.counts == {"done": 2, "skipped": 0, "failed": 0}
    assert all(Path(j.output).is_file() for j in jobs)
    (job_id,) = _job_ids(fake_slurm)
    script = (fake_slurm / "job-0.sh").read_text()
    for line in ("#SBATCH -p debug", "#SBATCH -A proj42", "#SBATCH -n 1",
                 "#SBATCH --cpus-per-task=1", "#SBATCH -t 00:10:00",
                 "-m distributed.cli.dask_worker", "--nthreads 1"):
        assert line in script, line
    assert "--gres" not in script and "GPU" not in script
    # closing the cluster cancels the job, and the job's processes end
    assert (fake_slurm / "scancel.log").read_text().split() == [job_id]
    assert _wait_gone(int(job_id))


def test_gpu_job_script_one_worker_per_gpu_with_gpu_resource(tmp_path, fake_slurm,
                                                             monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # what SLURM gives the job
    jobs = _jobs(tmp_path)
    hpc = _hpc("hpc.cores=2", "hpc.gpus_per_job=2")
    with open_client(kind="slurm", hpc=hpc) as h:
        assert h.gpus
        script = h.cluster.job_script()
        assert "#SBATCH --gres=gpu:2" in script
        assert "-m gigapatch.pipeline.gpu_worker" in script and "--gpus 2" in script
        assert "--nthreads 1" in script  # 2 cores over 2 GPU workers
        h.client.wait_for_workers(2, timeout=120)
        info = h.client.scheduler_info(n_workers=-1)["workers"]
        assert sorted(w["resources"].get("GPU") for w in info.values()) == [1, 1]
        seen = h.client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(seen.values()) == ["3", "5"]  # one GPU per worker
        names = sorted(w["name"] for w in info.values())
        assert [n[-2:] for n in names] == ["-0", "-1"]  # as dask-jobqueue expects
        res = run_batch(jobs, h.client, batch_dir=tmp_path / "b", device="cpu",
                        gpu_resources=h.gpus, progress=False)
    assert res.counts == {"done": 2, "skipped": 0, "failed": 0}


@pytest.mark.parametrize("kind, expected", [
    ("pbs", "#PBS -l select=1:ncpus=8:ngpus=4:mem=8GB"),
    ("lsf", '#BSUB -gpu "num=4"'),
    ("sge", "#$ -l gpu=4"),
])
def test_gpu_job_scripts_of_other_schedulers(kind, expected):
    cluster = jobqueue_cluster(kind, _hpc("hpc.cores=8", "hpc.gpus_per_job=4",
                                          "hpc.account=proj42"))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert expected in script, script
    assert "-m gigapatch.pipeline.gpu_worker" in script and "--gpus 4" in script
    assert "proj42" in script


def test_local_gpu_workers_are_pinned_nannies():
    specs = gpu_worker_specs(["0", "2"], threads=2)
    assert [s["options"]["env"] for s in specs.values()] == [
        {"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "2"}]
    assert all(s["options"]["resources"] == {"GPU": 1} and s["options"]["nthreads"] == 2
               for s in specs.values())
    assert worker_devices(2, "4,6,7") == ["4", "6"]
    assert worker_devices(2, None) == ["0", "1"]
    with pytest.raises(SystemExit):
        worker_devices(3, "4,6")


@pytest.mark.parametrize("sets, key", [
    (["hpc.memory=lots"], "hpc.memory"), (["hpc.walltime=soon"], "hpc.walltime"),
    (["hpc.gpus_per_job=-1"], "hpc.gpus_per_job"), (["hpc.processes=9"], "hpc.processes"),
    (["hpc.adaptive_min=2", "hpc.adaptive_max=1"], "hpc.adaptive_max"),
])
def test_bad_hpc_values_are_refused_with_the_key(sets, key):
    from gigapatch.errors import GigapatchError

    with pytest.raises(GigapatchError, match=key):
        load_config("default", sets)
