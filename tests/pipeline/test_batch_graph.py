"""A batch is ONE Dask graph: the small items' tasks and every tiled item's tile and
output-pyramid tasks, computed with one call (dask's local threaded scheduler here, or one
``client.get`` on a cluster); tiled items of one reference and level build its patch index
once per process; a failed item stops only itself; batch outputs equal single runs, with
the same metadata and bit depth as ``gigapatch generate`` writes.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

from gigapatch.api import generate_tiled
from gigapatch.cli import main
from gigapatch.pipeline import batch, tasks
from gigapatch.pipeline.batch import run_batch
from gigapatch.pipeline.manifest import load_manifest
from gigapatch.pipeline.run import TiledOptions
from gigapatch.pipeline.tasks import ProcessCache, denoiser_key
from gigapatch.storage import read_image, write_image
from gigapatch.storage.metadata import OutputMetadata, read_metadata

DATA = Path(__file__).resolve().parents[1] / "data"
CHEAP = ["sampler.patch_size=5", "sampler.steps=3", "sampler.eta=0.5", "tiling.tile=64"]


@pytest.fixture()
def computes(monkeypatch):
    """Records the keys of every call of dask's local scheduler (``dask.threaded.get``)."""
    import dask.threaded

    calls = []
    real = dask.threaded.get

    def get(dsk, keys, **kw):
        calls.append(list(keys))
        return real(dsk, keys, **kw)

    monkeypatch.setattr(dask.threaded, "get", get)
    return calls


def _manifest(tmp: Path) -> Path:
    shutil.copy(DATA / "wild_bush_crop.png", tmp / "bush.png")
    shutil.copy(DATA / "balloons.png", tmp / "balloons.png")
    (tmp / "out").mkdir()
    p = tmp / "m.yaml"
    p.write_text(
        f"defaults:\n  set: {CHEAP}\n"
        "items:\n"
        "  - {reference: bush.png, output: out/t.tif, size: 128x96, tiled: true, "
        "seeds: [0, 1]}\n"
        "  - {reference: balloons.png, output: out/s.png, size: 64x48}\n")
    return p


def test_batch_is_one_graph_and_shares_tiled_indexes(tmp_path, builds, computes):
    """Two tiled items of one reference and size (seeds 0 and 1) and a small item of
    another reference: ONE compute call whose keys hold the tiled items' tiles and the
    small item; each level index of the shared reference built once in the process
    (as one single tiled run builds them); outputs byte-identical to single runs.
    Kills: items computed one graph each (2+ calls); the tiled denoiser cache keyed by run
    dir (2x the builds); the batch's graph composition mixing items' keys (outputs
    differ); a level's denoiser never dropped, or dropped after one item's tasks of it
    (more builds)."""
    jobs = load_manifest(_manifest(tmp_path))
    res = run_batch(jobs, batch_dir=tmp_path / "b", device="cpu", progress=False)
    assert res.counts == {"done": 3, "skipped": 0, "failed": 0}, [r.error for r in res.rows]
    assert len(computes) == 1, [len(c) for c in computes]
    keys = computes[0]
    tile_keys = [k for k in keys if k.startswith("gp-item1-seed") and "-L" in k]
    assert {k.split("-L")[0] for k in tile_keys} == {
        f"gp-item1-seed{j.seed}-{j.key[:8]}" for j in jobs if j.tiled}
    assert sum(k.startswith("gigapatch-item2-") for k in keys) == 1
    in_batch = builds[0]
    # each shared level's denoiser dropped once both items' tasks of it were done (an
    # earlier drop would rebuild it: the build count below; none: it stays here)
    assert not [k for k in tasks.CACHE._values if k[0] == "denoiser"]

    # the oracles: each output alone (fresh caches), counting one tiled run's builds
    tiled = [j for j in jobs if j.tiled]
    builds[0] = 0
    tasks.CACHE.clear()
    batch.LEVELS.clear()
    for k, j in enumerate(tiled):
        one = tmp_path / f"single{j.seed}.tif"
        generate_tiled(j.reference, one, size=(j.out_hw[1], j.out_hw[0]), seed=j.seed,
                       config=j.config, device="cpu",
                       options=TiledOptions(run_dir=tmp_path / f"r{j.seed}", tiled=True))
        if k == 0:
            one_tiled_run = builds[0]
        tasks.CACHE.clear()
        assert np.array_equal(read_image(j.output)[0], read_image(one)[0]), j.label
    small = [j for j in jobs if not j.tiled][0]
    builds[0] = 0
    assert main(["generate", small.reference, "-o", str(tmp_path / "single_s.png"),
                 "--size", "64x48", "--seed", "0", "-q"]
                + sum((["--set", s] for s in CHEAP), [])) == 0
    small_run = builds[0]
    assert np.array_equal(read_image(small.output)[0],
                          read_image(tmp_path / "single_s.png")[0])
    assert one_tiled_run > 0 and small_run > 0
    # a usage level's index is per run (its entries are weighed by that run's own pilot
    # sample): each further tiled item of the reference builds those levels again
    cfg = tiled[0].config
    usage = cfg.prior.usage_levels if cfg.prior.usage_strength > 0 else 0
    assert in_batch == one_tiled_run + (len(tiled) - 1) * usage + small_run, \
        (in_batch, one_tiled_run, small_run, usage)


def test_batch_on_a_cluster_is_one_client_get(tmp_path, builds, monkeypatch):
    """The same batch on an (in-process) dask.distributed cluster: one ``client.get`` with
    every task, the outputs equal the local scheduler's. Kills: a get per item."""
    from distributed import Client

    jobs = load_manifest(_manifest(tmp_path))
    with Client(processes=False, n_workers=1, threads_per_worker=1,
                dashboard_address=None) as client:
        calls = []
        real = client.get

        def get(dsk, keys, **kw):
            calls.append(list(keys))
            return real(dsk, keys, **kw)

        monkeypatch.setattr(client, "get", get)
        res = run_batch(jobs, client, batch_dir=tmp_path / "b", device="cpu",
                        progress=False)
    assert res.counts["done"] == 3, [r.error for r in res.rows]
    assert len(calls) == 1
    assert any(k.startswith("gp-item1-seed1-") for k in calls[0])
    assert any(k.startswith("gigapatch-item2-") for k in calls[0])
    local = tmp_path / "local"
    local.mkdir()
    jobs2 = load_manifest(_manifest(local))
    tasks.CACHE.clear()
    assert run_batch(jobs2, batch_dir=local / "b", device="cpu",
                     progress=False).counts["done"] == 3
    for a, b in zip(jobs, jobs2):
        assert np.array_equal(read_image(a.output)[0], read_image(b.output)[0]), a.label


def test_failed_tiled_item_stops_only_itself_under_the_local_scheduler(tmp_path, monkeypatch,
                                                                       computes):
    """A tile of the seed-1 item raises: that item fails (lock released, run store kept
    to resume), the seed-0 item and the small item are done, in the one compute call; a
    second run redoes only the failed item, resuming its run store. Kills: no per-task
    guard (the local scheduler stops the whole batch at the first exception); the lock
    kept after a failure (the re-run refuses the run dir)."""
    real = tasks._sample_tile

    def failing(spec, level, iy, ix, store, *rest):
        if spec.seed == 1 and level == len(spec.levels) - 1 and (iy, ix) == (0, 0):
            raise RuntimeError("boom in a tile")
        return real(spec, level, iy, ix, store, *rest)

    monkeypatch.setattr(tasks, "_sample_tile", failing)
    jobs = load_manifest(_manifest(tmp_path))
    res = run_batch(jobs, batch_dir=tmp_path / "b", device="cpu", progress=False)
    assert len(computes) == 1
    status = {(r.item, r.seed): r.status for r in res.rows}
    assert status == {(1, 0): "done", (1, 1): "failed", (2, 0): "done"}, res.rows
    bad = [r for r in res.rows if r.status == "failed"][0]
    assert "boom in a tile" in bad.error and not Path(bad.output).exists()
    runs = list((tmp_path / "b" / "runs").glob("item0001-seed1-*"))
    assert len(runs) == 1 and not (runs[0] / "lock").exists()

    monkeypatch.setattr(tasks, "_sample_tile", real)
    computes.clear()
    res2 = run_batch(jobs, batch_dir=tmp_path / "b", device="cpu", progress=False)
    status2 = {(r.item, r.seed): r.status for r in res2.rows}
    assert status2 == {(1, 0): "skipped", (1, 1): "done", (2, 0): "skipped"}, res2.rows
    # resumed: only the failed tile's level onwards ran again, not the coarse levels
    assert len(computes) == 1
    assert not any(k.startswith("gp-item1-seed1-") and "-L0-" in k for k in computes[0])


def test_small_item_metadata_and_bit_depth_equal_a_single_generate(tmp_path):
    """A 16-bit TIFF reference with a resolution: the batch's small item is written as
    ``gigapatch generate`` writes it (16-bit from ``bit_depth: auto``, the reference's
    dpi carried), pixels identical. Kills: the batch writing 8-bit for auto; writing
    without the reference's metadata (dpi lost)."""
    a = read_image(DATA / "wild_bush_crop.png")[0]
    write_image(tmp_path / "ref16.tif", a, bit_depth=16,
                metadata=OutputMetadata(dpi=300.0))
    (tmp_path / "out").mkdir()
    (tmp_path / "m.yaml").write_text(
        f"items:\n  - {{reference: ref16.tif, output: out/b.tif, size: 64x48, set: "
        f"{CHEAP}}}\n")
    jobs = load_manifest(tmp_path / "m.yaml")
    res = run_batch(jobs, batch_dir=tmp_path / "b", device="cpu", progress=False)
    assert res.counts["done"] == 1, res.rows
    assert main(["generate", str(tmp_path / "ref16.tif"), "-o", str(tmp_path / "one.tif"),
                 "--size", "64x48", "--seed", "0", "-q"]
                + sum((["--set", s] for s in CHEAP), [])) == 0
    got, got_info = read_image(tmp_path / "out" / "b.tif")
    want, want_info = read_image(tmp_path / "one.tif")
    assert want_info.bit_depth == 16 and got_info.bit_depth == want_info.bit_depth
    assert np.array_equal(got, want)
    meta = read_metadata(tmp_path / "out" / "b.tif")
    assert meta.dpi == pytest.approx(300.0)
    assert meta == read_metadata(tmp_path / "one.tif")


def test_process_cache_is_bounded_least_recently_used_first():
    """Kills: a cache that never drops (grows with every item of a batch worker's life);
    dropping the oldest built instead of the least recently used."""
    cache = ProcessCache(max_entries=2)
    cache.get("a", lambda: 1)
    cache.get("b", lambda: 2)
    assert cache.get("a", lambda: -1) == 1  # a hit: "a" is now the most recent
    cache.get("c", lambda: 3)
    assert len(cache) == 2 and "b" not in cache and "a" in cache and "c" in cache
    assert (cache.builds, cache.hits) == (3, 1)
    assert cache.get("b", lambda: 4) == 4 and cache.builds == 4  # rebuilt after its drop


def test_denoiser_key_is_the_reference_and_settings_not_the_run(tmp_path):
    """Two runs of one reference with other seeds and run dirs share a level's key; the
    reference, the level count, the level, P, rho, the denoiser settings and the device
    each change it. Kills: keying by run dir (no sharing between a batch's items); a key
    without the reference digest (another reference's index reused)."""
    import dataclasses

    import torch

    from gigapatch.config import load_config
    from gigapatch.pipeline.run import TiledJob

    cfg = load_config(None, CHEAP)
    ref = read_image(DATA / "wild_bush_crop.png")[0]

    def spec(seed, run, ref=ref, size=(96, 128), config=cfg):
        job = TiledJob.prepare(ref, size, None, seed=seed, config=config, device="cpu",
                               options=TiledOptions(run_dir=tmp_path / run, tiled=True))
        job.release()
        return job.spec

    cpu = torch.device("cpu")
    a, b = spec(0, "a"), spec(1, "b")
    assert a.run_dir != b.run_dir
    assert denoiser_key(a, 1, cpu) == denoiser_key(b, 1, cpu)
    other = spec(0, "c", ref=np.ascontiguousarray(ref[::-1]))
    assert denoiser_key(other, 1, cpu) != denoiser_key(a, 1, cpu)
    assert denoiser_key(a, 1, cpu) != denoiser_key(a, 2, cpu)
    assert denoiser_key(a, 1, cpu) != denoiser_key(a, 1, torch.device("meta"))
    for change in ({"patch_size": 7}, {"rho": a.rho * 2},
                   {"denoiser": dataclasses.replace(a.denoiser, pca_dims=3)},
                   {"levels": a.levels[1:]}):
        assert denoiser_key(dataclasses.replace(a, **change), 0, cpu) != \
            denoiser_key(a, 0, cpu), change


def test_batch_in_waves_is_one_graph_per_wave_across_items(tmp_path, computes, monkeypatch):
    """With waves of at most 3 tasks per tiled item: one compute per wave, each holding
    the current wave of BOTH tiled items (the first also the small item), and the outputs
    equal the one-wave batch's. Kills: tiled items' waves computed item after item; a
    wave's edge to a task of a later wave (output differs / chunk missing)."""
    from gigapatch.pipeline import run

    one = tmp_path / "one"
    one.mkdir()
    jobs1 = load_manifest(_manifest(one))
    assert run_batch(jobs1, batch_dir=one / "b", device="cpu",
                     progress=False).counts["done"] == 3
    assert len(computes) == 1
    computes.clear()
    monkeypatch.setattr(run, "WAVE_TASKS", 3)
    waved = tmp_path / "waved"
    waved.mkdir()
    jobs = load_manifest(_manifest(waved))
    res = run_batch(jobs, batch_dir=waved / "b", device="cpu", progress=False)
    assert res.counts["done"] == 3, [r.error for r in res.rows]
    assert len(computes) >= 3
    assert all(len(c) <= 2 * 3 + 1 for c in computes)
    assert sum(k.startswith("gigapatch-item2-") for k in computes[0]) == 1
    for c in computes[:2]:
        assert {k.split("-L")[0].split("-P")[0] for k in c if k.startswith("gp-")} == {
            f"gp-item1-seed{j.seed}-{j.key[:8]}" for j in jobs if j.tiled}
    for a, b in zip(jobs1, jobs):
        assert np.array_equal(read_image(a.output)[0], read_image(b.output)[0]), a.label
