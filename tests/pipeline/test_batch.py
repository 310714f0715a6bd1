"""Batch manifests and runs with real worker processes (CPU, tiny items of ~1 s).

- a manifest with many problems lists them ALL (item and field), before any work, exit 2;
- 6 items (8 outputs) on a LocalCluster of 2 worker processes, one worker SIGKILLed while
  it runs an item: every output equals a one-process run, byte for byte;
- a batch whose driver is SIGKILLed, then re-run: finished items are skipped (done records
  untouched), the others done;
- a failed item does not stop the others; the summary (JSON + CSV) and the contact sheet.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gigapatch.pipeline.batch import done_record_path, run_batch
from gigapatch.pipeline.manifest import ManifestError, load_manifest
from gigapatch.pipeline.clusters import open_client
from gigapatch.storage import read_image

DATA = Path(__file__).resolve().parents[1] / "data"
CHEAP = ["sampler.patch_size=5", "sampler.steps=3", "sampler.eta=0.5"]


def _refs(tmp: Path) -> None:
    shutil.copy(DATA / "wild_bush_crop.png", tmp / "bush.png")
    shutil.copy(DATA / "balloons.png", tmp / "balloons.png")
    (tmp / "out").mkdir()


def _manifest(tmp: Path, n_small: int = 5) -> Path:
    """A slower balloons item first (so it starts at once and is still running when the
    first small item ends), then ``n_small`` bush items of 64x48 (item 3 has 3 seeds)."""
    lines = ["defaults:", f"  set: {CHEAP}", "items:",
             "  - {name: big, reference: balloons.png, output: out/big.png, scale: 0.6}"]
    for k in range(n_small):
        seeds = "[0, 1, 2]" if k == 1 else f"[{k}]"
        lines.append(f"  - {{reference: bush.png, output: out/bush{k}.png, size: 64x48, "
                     f"seeds: {seeds}}}")
    p = tmp / "m.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _pixels(path: str) -> np.ndarray:
    return read_image(path)[0]


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """A LocalCluster of ONE worker process with one torch thread (the "one-process run"),
    shared by the tests of this module to pay its start-up once; it writes a scheduler
    file, as ``dask scheduler --scheduler-file`` and dask-mpi do, and is joined through it."""
    from distributed import LocalCluster

    sched_file = tmp_path_factory.mktemp("sched") / "scheduler.json"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None, env={"OMP_NUM_THREADS": "1"},
                      scheduler_kwargs={"scheduler_file": str(sched_file)}):
        with open_client(scheduler_file=str(sched_file)) as h:
            h.scheduler_file = str(sched_file)
            yield h


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------

def test_manifest_lists_every_problem_before_any_work(tmp_path):
    _refs(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "m.yaml").write_text(
        "items:\n"
        "  - {reference: missing.png, output: out/a.png}\n"                  # 1 reference
        "  - {reference: bush.png, output: out/b.png, size: 12xx4}\n"       # 2 size
        "  - {reference: bush.png, output: out/c.png, colour: red}\n"       # 3 unknown key
        "  - {reference: bush.png, output: out/d.png}\n"
        "  - {reference: bush.png, output: out/d.png}\n"                    # 5 duplicate
        "  - {reference: bush.png, output: afile/e.png}\n"                  # 6 unwritable
        "  - {reference: bush.png, output: out/f.png, set: [sampler.nope=1]}\n"  # 7 set
        "  - {reference: bush.png, output: out/g.png, size: 8x8}\n")        # 8 too small
    with pytest.raises(ManifestError) as err:
        load_manifest(tmp_path / "m.yaml")
    probs = err.value.problems
    heads = [p.split(":")[0] + ":" + p.split(":")[1] for p in probs]
    assert heads == ["item 1: reference", "item 2: size", "item 3: unknown field 'colour'; known",
                     "item 5: output", "item 6: output", "item 7: set", "item 8: size"], probs
    assert "missing.png" in probs[0] and "does not exist" in probs[0]
    assert "also the output of item 4" in probs[3]
    assert "afile" in probs[4] and "not a folder" in probs[4]
    assert "sampler.nope" in probs[5]
    assert "smaller than the patch size" in probs[6]
    assert sorted(os.listdir(tmp_path / "out")) == []  # nothing written


def test_manifest_problems_exit_2_on_the_command_line(tmp_path, capsys):
    from gigapatch.cli import main

    _refs(tmp_path)
    (tmp_path / "m.csv").write_text(
        "reference,output,size,seeds\n"
        "missing.png,out/a.png,64x48,0\n"
        "bush.png,out/b.png,big,0;1\n"
        "bush.png,out/c.png,64x48,x\n")
    assert main(["batch", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert "3 problems, nothing was run" in err
    for line in ("item 1: reference:", "item 2: size:", "item 3: seeds:"):
        assert line in err
    assert not (tmp_path / "m.csv.gp-batch").exists()


def test_csv_and_yaml_manifests_give_the_same_jobs(tmp_path):
    _refs(tmp_path)
    (tmp_path / "m.yaml").write_text(
        "items:\n"
        "  - {reference: bush.png, output: out/a.png, size: 64x48, seeds: [3, 4],\n"
        "     preset: gigapixel, set: [sampler.steps=2, sampler.eta=0.5]}\n"
        "  - {reference: balloons.png, output: out/b.tif, scale: 2x1, seed: 7}\n")
    (tmp_path / "m.csv").write_text(
        "reference,output,size,scale,seeds,preset,set\n"
        "bush.png,out/a.png,64x48,,3;4,gigapixel,sampler.steps=2;sampler.eta=0.5\n"
        "balloons.png,out/b.tif,,2x1,7,,\n")
    y = load_manifest(tmp_path / "m.yaml")
    c = load_manifest(tmp_path / "m.csv")
    assert [j.key for j in y] == [j.key for j in c]
    assert [(j.item, j.seed, Path(j.output).name, j.out_hw) for j in y] == [
        (1, 3, "a_000.png", (48, 64)), (1, 4, "a_001.png", (48, 64)),
        (2, 7, "b.tif", (186, 496))]
    assert y[0].config.sampler.steps == 2 and y[0].config.sampler.patch_size == 5
    assert y[2].config.sampler.patch_size == 15
    # the key follows what changes the image: another seed or setting, another key
    assert len({j.key for j in y}) == 3


# --------------------------------------------------------------------------------------
# real processes
# --------------------------------------------------------------------------------------

def test_two_workers_one_killed_equal_one_process(tmp_path, one_worker):
    _refs(tmp_path)
    jobs = load_manifest(_manifest(tmp_path))
    assert len({j.item for j in jobs}) == 6 and len(jobs) == 8
    # the one-process run: one worker process, one torch thread
    one = run_batch(jobs, one_worker.client, batch_dir=tmp_path / "one", device="cpu",
                    progress=False)
    assert one.counts == {"done": 8, "skipped": 0, "failed": 0}
    oracle = {j.output: _pixels(j.output) for j in jobs}
    for j in jobs:
        os.remove(j.output)

    big = next(j for j in jobs if j.name == "big")
    killed: dict = {}

    def kill_the_worker_running_big(row):
        if killed:
            return
        for addr, keys in h.client.processing().items():
            if any(f"item{big.item}-" in str(k) for k in keys):
                pid = h.client.run(os.getpid, workers=[addr])[addr]
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return

    with open_client(workers=2, threads=1, device="cpu") as h:
        two = run_batch(jobs, h.client, batch_dir=tmp_path / "two", device="cpu",
                        progress=False, on_finished=kill_the_worker_running_big)
    assert killed, "no worker was running the big item when the first item finished"
    assert two.counts == {"done": 8, "skipped": 0, "failed": 0}
    # the killed item was redone by another process
    rec = json.loads(done_record_path(tmp_path / "two", big).read_text())
    assert rec["pid"] != killed["pid"]
    for j in jobs:
        assert np.array_equal(_pixels(j.output), oracle[j.output]), j.label


def test_killed_batch_resumes_without_redoing_finished_items(tmp_path, one_worker):
    # `gigapatch batch` (driver, nanny, worker) is SIGKILLed mid-batch, then run again
    _refs(tmp_path)
    manifest = _manifest(tmp_path, n_small=6)
    jobs = load_manifest(manifest)
    bdir = tmp_path / "m.yaml.gp-batch"
    record_names = {done_record_path(bdir, j).name for j in jobs}
    cmd = [sys.executable, "-m", "gigapatch", "batch", str(manifest), "--device", "cpu", "-q"]
    # first run: its own local cluster (1 worker process), all killed together
    proc = subprocess.Popen(cmd + ["--workers", "1", "--threads", "1"], cwd=tmp_path,
                            start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # generous: the wait ends as soon as 2 items are done; a loaded CI box may take long
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            # count finished records only: a record being written is a `.NAME.tmp-PID`
            # file in the same folder (atomic write), which is not a finished item
            if (bdir / "done").is_dir() and len(record_names & set(os.listdir(bdir / "done"))) >= 2:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the batch finished before it was killed"
    assert not (bdir / "summary.json").exists()
    before = {p.name: p.read_text() for p in (bdir / "done").iterdir()
              if p.name in record_names}
    finished = {j.output for j in jobs if done_record_path(bdir, j).name in before}
    assert 2 <= len(finished) < len(jobs)

    # second run: on the module's cluster, through its scheduler file (saves a start-up)
    out = subprocess.run(cmd + ["--scheduler-file", one_worker.scheduler_file], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads((bdir / "summary.json").read_text())
    status = {r["output"]: r["status"] for r in summary["items"]}
    assert {o for o, s in status.items() if s == "skipped"} == finished
    assert {o for o, s in status.items() if s == "done"} == {j.output for j in jobs} - finished
    for name, text in before.items():  # finished items were not redone
        assert (bdir / "done" / name).read_text() == text
    assert f"{len(finished)} already done (skipped)" in out.stdout


def test_failed_item_does_not_stop_the_others_summary_and_sheet(tmp_path, one_worker):
    _refs(tmp_path)
    from gigapatch.storage import write_image

    # a reference no worker has seen (workers keep decoded references by content hash)
    write_image(tmp_path / "doomed.png", np.random.default_rng(0).random((40, 40, 3)))
    (tmp_path / "m.yaml").write_text(
        f"defaults: {{set: {CHEAP}}}\n"
        "items:\n"
        "  - {reference: bush.png, output: out/a.png, size: 64x48}\n"
        "  - {reference: doomed.png, output: out/b.png, size: 64x48}\n"
        "  - {reference: bush.png, output: out/c.png, size: 48x64, seed: 5}\n")
    jobs = load_manifest(tmp_path / "m.yaml")
    (tmp_path / "doomed.png").write_bytes(b"corrupt after validation")
    res = run_batch(jobs, one_worker.client, batch_dir=tmp_path / "b", device="cpu",
                    progress=False, sheet=True)
    assert [r.status for r in res.rows] == ["done", "failed", "done"]
    assert "doomed.png" in res.rows[1].error and not Path(jobs[1].output).exists()
    rows = list(csv.DictReader(open(tmp_path / "b" / "summary.csv")))
    assert [(r["item"], r["status"], r["pixels"]) for r in rows] == [
        ("1", "done", str(64 * 48)), ("2", "failed", "0"), ("3", "done", str(48 * 64))]
    assert rows[2]["output"] == str(tmp_path / "out" / "c.png")
    assert float(rows[0]["seconds"]) > 0
    data = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert data["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    assert _pixels(str(tmp_path / "out" / "c.png")).shape == (64, 48, 3)
    sheet = read_image(tmp_path / "b" / "sheet.png")[0]
    assert sheet.shape[0] > 100 and sheet.shape[1] > 2 * 100  # two previews side by side


def test_a_changed_item_is_redone_an_unchanged_one_skipped(tmp_path, one_worker):
    # the done record must match the item (its key), not merely the output's existence
    _refs(tmp_path)
    m = tmp_path / "m.yaml"
    item = "  - {{reference: bush.png, output: out/a.png, size: 64x48, seed: {}}}\n"
    m.write_text(f"defaults: {{set: {CHEAP}}}\nitems:\n" + item.format(0))
    first = run_batch(load_manifest(m), one_worker.client, batch_dir=tmp_path / "b",
                      device="cpu", progress=False)
    again = run_batch(load_manifest(m), one_worker.client, batch_dir=tmp_path / "b",
                      device="cpu", progress=False)
    m.write_text(f"defaults: {{set: {CHEAP}}}\nitems:\n" + item.format(1))
    changed = run_batch(load_manifest(m), one_worker.client, batch_dir=tmp_path / "b",
                        device="cpu", progress=False)
    assert [r.status for r in (first.rows + again.rows + changed.rows)] == [
        "done", "skipped", "done"]
