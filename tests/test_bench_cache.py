"""The benchmarks' exact-run cache key (benchmarks/_common.py): a run with a prior on is
never served a cached run without it, and the keys of the runs cached before the priors
existed (all off) do not change.

Mutants killed: a key without the priors, a key that always names them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from gigapatch.config import load_config

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_common.py"
_spec = importlib.util.spec_from_file_location("bench_common", _PATH)
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def test_exact_cache_key_names_the_priors_only_when_one_is_on():
    off = load_config("paper")
    key = json.loads(common._exact_key("places50/1.jpg", off, 0, 1.0))
    assert set(key) == {"ref", "scale", "seed", "sampler"}  # as before the priors
    none = ["prior.t0=1.0", "prior.position_strength=0", "prior.usage_strength=0"]
    paths = {common.exact_cache_path("places50/1.jpg", load_config(p, s), 0, 1.0)
             for p, s in (("paper", []), ("default", none), ("paper", ["prior.t0=1.0"]))}
    assert len(paths) == 1  # all off, however written: one cached run
    on = [common.exact_cache_path("places50/1.jpg", load_config("paper", [s]), 0, 1.0)
          for s in ("prior.t0=0.9", "prior.position_strength=30",
                    "prior.usage_strength=3")]
    assert len(set(on) | paths) == 4
    # the default preset has them on: its key names them
    assert common.exact_cache_path("places50/1.jpg", load_config("default"), 0, 1.0) \
        not in paths
    # the fast backend's settings are not the exact sampler's: same key
    fast = load_config("paper", ["denoiser.candidates=8", "denoiser.pca_dims=32"])
    assert common.exact_cache_path("places50/1.jpg", fast, 0, 1.0) in paths
