"""Pyramidal TIFF (tifffile, pyvips) and OME-Zarr writers read back; atomic writes.

The output pyramid is built in a run store from a synthetic image (no sampling), exactly
as the pipeline's pyramid tasks do it, chunk by chunk.
"""

import json
import math
import os

import numpy as np
import pytest

from gigapatch.storage.runstore import RunStore, reduce2_box
from gigapatch.storage.tiff import tiff_levels, write_tiff_tifffile, write_tiff_vips
from gigapatch.tiling import Box

H, W, CHUNK, TT = 600, 520, 128, 256


def _store(tmp_path, channels=3, dtype="uint8", seed=0):
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


def _levels(store, shapes, band):
    return [lambda r=r: store.output_bands(r, band) for r in range(len(shapes))]


def test_reduce2_box_odd_edges():
    a = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    r = reduce2_box(a)
    assert r.shape == (2, 2, 3)
    assert r[0, 0, 0] == np.rint((0 + 1 + 5 + 6) / 4)
    assert r[0, 1, 2] == a[0, 2, 4]  # corner pixel averaged with itself


@pytest.mark.parametrize("compression", ["deflate", "zstd", "none"])
def test_tifffile_pyramid_reads_back(tmp_path, compression):
    import tifffile

    store, img, shapes = _store(tmp_path)
    assert shapes == [(600, 520), (300, 260), (150, 130)]
    out = tmp_path / "out.tif"
    write_tiff_tifffile(out, _levels(store, shapes, math.lcm(CHUNK, TT)), shapes, channels=3,
                        dtype="uint8", tile=TT, compression=compression, dpi=300)
    assert tiff_levels(out) == shapes
    with tifffile.TiffFile(out) as tf:
        assert tf.is_bigtiff
        page = tf.pages[0]
        assert page.is_tiled and page.tilewidth == TT
        assert len(page.subifds) == len(shapes) - 1
        assert page.tags["XResolution"].value == (300, 1)
        if compression != "none":
            assert page.predictor == 2
        levels = tf.series[0].levels
        assert np.array_equal(levels[0].asarray(), np.moveaxis(img, 0, -1))
        for r, lv in enumerate(levels):
            z = np.asarray(store.array(f"output/{r}")[...])
            assert np.array_equal(lv.asarray(), np.moveaxis(z, 0, -1))
    if compression == "zstd":
        return  # the pyvips-binary wheel's libtiff has no ZSTD (reads zeros, silently)
    import pyvips

    for r, (h, w) in enumerate(shapes):
        im = pyvips.Image.new_from_file(str(out), subifd=r - 1)
        assert (im.height, im.width, im.bands) == (h, w, 3)
    im = pyvips.Image.new_from_file(str(out))
    assert np.array_equal(im.numpy(), np.moveaxis(img, 0, -1))
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_tifffile_grey16_and_jpeg(tmp_path):
    import tifffile

    from gigapatch.errors import GigapatchError

    store, img, shapes = _store(tmp_path, channels=1, dtype="uint16")
    out = tmp_path / "g.tif"
    write_tiff_tifffile(out, _levels(store, shapes, 256), shapes, channels=1, dtype="uint16",
                        tile=TT, compression="lzw")
    with tifffile.TiffFile(out) as tf:
        a = tf.series[0].levels[0].asarray()
    assert a.dtype == np.uint16 and np.array_equal(a.reshape(H, W), img[0])
    with pytest.raises(GigapatchError, match="8 bits"):
        write_tiff_tifffile(tmp_path / "j.tif", _levels(store, shapes, 256), shapes,
                            channels=1, dtype="uint16", tile=TT, compression="jpeg")
    assert not (tmp_path / "j.tif").exists()


def test_vips_writer_reads_back(tmp_path):
    import pyvips
    import tifffile

    store, img, shapes = _store(tmp_path)
    out = tmp_path / "v.tif"
    write_tiff_vips(out, store.output_bands(0, 256), (H, W), channels=3, dtype="uint8",
                    tile=TT, compression="deflate", dpi=300)
    with tifffile.TiffFile(out) as tf:
        levels = tf.series[0].levels
        assert [lv.shape[:2] for lv in levels][:2] == shapes[:2]  # libvips picks its depth
        assert np.array_equal(levels[0].asarray(), np.moveaxis(img, 0, -1))
        assert tf.pages[0].is_tiled and tf.pages[0].tilewidth == TT
    im = pyvips.Image.new_from_file(str(out))
    assert (im.height, im.width) == (H, W)
    assert abs(im.xres * 25.4 - 300) < 1e-3
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".raw-" in p]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    store, img, shapes = _store(tmp_path)
    out = tmp_path / "fail.tif"
    out.write_bytes(b"previous")

    def broken():
        yield 0, np.asarray(store.array("output/0")[:, :256])
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_tiff_tifffile(out, [broken, broken], shapes, channels=3, dtype="uint8",
                            tile=TT)
    assert out.read_bytes() == b"previous"  # the old file is untouched
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_ome_zarr_metadata_and_copy(tmp_path):
    import zarr

    from gigapatch.storage.omezarr import write_ome_zarr

    store, img, shapes = _store(tmp_path)
    out = write_ome_zarr(store.path / "output", tmp_path / "img.ome.zarr")
    meta = json.loads((out / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["node_type"] == "group"
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["channel", "space", "space"]
    assert [d["path"] for d in ms["datasets"]] == [str(r) for r in range(len(shapes))]
    for r, d in enumerate(ms["datasets"]):
        assert d["coordinateTransformations"] == [
            {"type": "scale", "scale": [1.0, 2.0 ** r, 2.0 ** r]}]
        arr = zarr.open_array(str(out / str(r)), mode="r")
        assert arr.shape == (3,) + shapes[r]
        assert tuple(arr.metadata.dimension_names) == ("c", "y", "x")
    assert np.array_equal(zarr.open_array(str(out / "0"), mode="r")[...], img)
    # rewriting replaces it atomically
    write_ome_zarr(store.path / "output", out)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]
