"""The tiny tiled run's parameters and runner (imported by the pipeline tests)."""

from gigapatch.pipeline import run_tiled

SIZE = (150, 130)
SEED = 3
OVERRIDES = ["sampler.patch_size=5", "sampler.steps=3", "sampler.eta=0.5"]


def run(ref, cfg, run_dir, **kw):
    """``run_tiled`` of the tiny run into ``run_dir`` (tile 64 unless given)."""
    kw.setdefault("tile", 64)
    return run_tiled(ref, None, size=SIZE, seed=SEED, config=cfg, device="cpu",
                     run_dir=run_dir, **kw)
