"""The tiny tiled run's parameters and runner (imported by the pipeline tests)."""

from gigapatch.api import generate_tiled
from gigapatch.pipeline import TiledOptions

SIZE = (150, 130)
SEED = 3
OVERRIDES = ["sampler.patch_size=5", "sampler.steps=3", "sampler.eta=0.5"]


def run(ref, cfg, run_dir, seed=SEED, **kw):
    """``generate_tiled`` of the tiny run into ``run_dir`` (tile 64 unless given); ``kw``
    are ``TiledOptions`` fields."""
    kw.setdefault("tile", 64)
    return generate_tiled(ref, None, size=SIZE, seed=seed, config=cfg, device="cpu",
                          options=TiledOptions(run_dir=run_dir, **kw))
