"""A run store holding a synthetic output pyramid, built chunk by chunk exactly as the
pipeline's pyramid tasks do it (imported by the storage writer tests)."""

import numpy as np

from gigapatch.storage.runstore import RunStore
from gigapatch.tiling import Box

H, W, CHUNK, TT = 600, 520, 128, 256


def build_store(tmp_path, channels=3, dtype="uint8", seed=0):
    """A RunStore with a random (channels, H, W) output/0 and its reduced levels:
    (store, image, level shapes)."""
    from gigapatch.pipeline.plan import output_level_shapes

    rng = np.random.default_rng(seed)
    top = 255 if dtype == "uint8" else 65535
    shapes = output_level_shapes((H, W), TT)
    store = RunStore.create_or_open(
        tmp_path / "run", run_key="k", meta={"summary": "test"},
        reference=np.zeros((channels, 8, 8), np.float32), level_shapes=[(H, W)],
        grid_shapes=[(1, 1)], output_shapes=shapes, chunk=CHUNK, out_dtype=dtype)
    img = rng.integers(0, top + 1, size=(channels, H, W)).astype(dtype)
    # smooth-ish content so compression has something to do
    img[:, : H // 2] = (np.arange(W)[None, None, :] * top // W).astype(dtype)
    store.write("output/0", Box(0, 0, H, W), img)
    for r in range(1, len(shapes)):
        ny, nx = store.array(f"output_done/{r}").shape
        for iy in range(ny):
            for ix in range(nx):
                store.reduce_output_chunk(r, iy, ix)
    return store, img, shapes


def levels(store, shapes, band):
    """One band reader per output level, as the TIFF writers take them."""
    return [lambda r=r: store.output_bands(r, band) for r in range(len(shapes))]
