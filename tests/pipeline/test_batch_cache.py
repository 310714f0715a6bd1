"""Batch items that share a reference level share its built patch index.

A batch worker keeps built level indexes (and the fast backend's precomputation) in one
per-process ``LevelCache`` keyed by the level's pixels and every setting that shapes the
index. The batch runs on an in-process cluster here (``processes=False``), so a
monkeypatched ``PatchIndex.from_image`` counts the builds the worker really does.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gigapatch.api import generate
from gigapatch.diffusion.backends import LevelCache, level_key
from gigapatch.diffusion.settings import DenoiserSettings
from gigapatch.pipeline import batch
from gigapatch.pipeline.batch import run_batch
from gigapatch.pipeline.manifest import load_manifest
from gigapatch.storage import read_image, write_image

DATA = Path(__file__).resolve().parents[1] / "data"
CHEAP = ["sampler.patch_size=5", "sampler.steps=3", "sampler.eta=0.5"]


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=1,
                dashboard_address=None) as c:
        yield c


def _run(tmp: Path, items: list[str], client, builds):
    shutil.copy(DATA / "wild_bush_crop.png", tmp / "bush.png")
    (tmp / "out").mkdir()
    (tmp / "m.yaml").write_text("items:\n" + "".join(f"  - {it}\n" for it in items))
    jobs = load_manifest(tmp / "m.yaml")
    res = run_batch(jobs, client, batch_dir=tmp / "b", device="cpu", progress=False)
    assert res.counts["done"] == len(jobs), [r.error for r in res.rows]
    in_batch = builds[0]
    # the oracle: one single ``generate`` call per item (no cache), written the same way
    builds[0] = 0
    for j in jobs:
        single = generate(j.reference, size=(j.out_hw[1], j.out_hw[0]), seed=j.seed,
                          config=j.config, device="cpu")
        one = tmp / f"single{j.item}-{j.seed}.png"  # a new name: libvips caches opened files
        write_image(one, single, bit_depth=j.config.output.bits())
        assert np.array_equal(read_image(j.output)[0], read_image(one)[0]), j.label
    return in_batch, builds[0]


def test_items_of_one_reference_build_its_index_once(tmp_path, client, builds):
    """3 items of one reference (seeds 0 and 1, and another size): byte-identical to 3
    single ``generate`` calls, and each level index built once in the batch (three times
    in the single calls). Kills: no cache (3x builds); a denoiser state carried from one
    item to the next (outputs differ)."""
    s = f"set: {CHEAP}"
    in_batch, singles = _run(tmp_path, [
        f"{{reference: bush.png, output: out/a.png, size: 64x48, seed: 0, {s}}}",
        f"{{reference: bush.png, output: out/b.png, size: 64x48, seed: 1, {s}}}",
        f"{{reference: bush.png, output: out/c.png, size: 80x56, seed: 0, {s}}}"],
        client, builds)
    assert singles % 3 == 0 and singles > 0
    assert in_batch == singles // 3
    assert batch.LEVELS.hits == 2 * in_batch


def test_items_with_other_index_settings_do_not_reuse_it(tmp_path, client, builds):
    """Same reference and size, but another PCA size (fast backend) or another patch size
    (exact backend, whose entry budget does not depend on it): nothing is reused (builds
    equal the single calls') and every output equals its single call. Kills a cache key
    missing the fast precomputation's settings (the PCA basis of item a reused for b:
    output differs) or the patch size (P=5 patches for P=7: item d fails)."""
    cheap = ["sampler.steps=3", "sampler.eta=0.5"]
    fast = cheap + ["denoiser.backend=fast", "sampler.patch_size=5"]
    exact = cheap + ["denoiser.backend=exact"]
    in_batch, singles = _run(tmp_path, [
        f"{{reference: bush.png, output: out/a.png, size: 64x48, set: "
        f"{fast + ['denoiser.pca_dims=4']}}}",
        f"{{reference: bush.png, output: out/b.png, size: 64x48, set: "
        f"{fast + ['denoiser.pca_dims=12']}}}",
        f"{{reference: bush.png, output: out/c.png, size: 64x48, set: "
        f"{exact + ['sampler.patch_size=5']}}}",
        f"{{reference: bush.png, output: out/d.png, size: 64x48, set: "
        f"{exact + ['sampler.patch_size=7']}}}"],
        client, builds)
    assert in_batch == singles and batch.LEVELS.hits == 0


def _settings(**kw) -> DenoiserSettings:
    base = dict(backend="fast", dtype="float32", memory_budget_mb=64, candidates=8,
                pca_dims=8, dictionary_size=64, broad_steps=1, broad_min_ess=2.0,
                prune_tolerance=0.0, query_stride=1, probes=2, index_budget_mb=16,
                full_stride_pixels=0)
    base.update(kw)
    return DenoiserSettings(**base)


def test_level_key_has_every_field_that_shapes_the_index():
    """Each field that shapes a built index or fast level changes the key; the knobs a
    denoiser applies per call (candidates, probes) do not. Kills a key missing any of
    pixels, shape, backend, patch size, entry budget, prune tolerance, PCA dims, dictionary
    size, search dtype."""
    g = torch.Generator().manual_seed(0)
    lv = torch.rand(3, 20, 24, generator=g) * 2 - 1
    k = level_key(lv, "fast", patch_size=5, settings=_settings())
    other = lv.clone()
    other[0, 0, 0] += 1e-3
    variants = [
        level_key(other, "fast", patch_size=5, settings=_settings()),
        level_key(lv[:, :, :20], "fast", patch_size=5, settings=_settings()),
        level_key(lv, "exact", patch_size=5, settings=_settings()),
        level_key(lv, "fast", patch_size=7, settings=_settings()),
        level_key(lv, "exact", patch_size=7, settings=_settings()),
        level_key(lv, "fast", patch_size=5, settings=_settings(index_budget_mb=32)),
        level_key(lv, "fast", patch_size=5, settings=_settings(prune_tolerance=0.1)),
        level_key(lv, "fast", patch_size=5, settings=_settings(pca_dims=4)),
        level_key(lv, "fast", patch_size=5, settings=_settings(dictionary_size=32)),
        level_key(lv, "fast", patch_size=5, settings=_settings(dtype="bfloat16")),
    ]
    assert len({k, *variants}) == len(variants) + 1
    assert level_key(lv.clone(), "fast", patch_size=5,
                     settings=_settings(candidates=4, probes=1)) == k


def test_level_cache_is_bounded_by_bytes_least_recently_used_first():
    """Kills: no eviction (unbounded), evicting the most recent, keeping an entry larger
    than the bound, a hit that does not refresh the entry's age."""
    c = LevelCache(max_bytes=100)
    built = []

    def get(key, size):
        return c.get(key, lambda: built.append(key) or key, lambda v: size)

    get("a", 40)
    get("b", 40)
    get("a", 40)            # hit: a is now the most recent
    get("c", 40)            # 120 > 100: b (least recent) goes
    assert built == ["a", "b", "c"] and c.nbytes == 80
    get("a", 40)
    get("b", 40)            # rebuilt; c goes
    get("big", 101)         # larger than the bound: built, not kept
    get("big", 101)
    assert built == ["a", "b", "c", "b", "big", "big"]
    assert c.nbytes == 80 and len(c) == 2 and c.hits == 2
