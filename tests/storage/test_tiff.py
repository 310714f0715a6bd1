"""Pyramidal TIFF (tifffile, pyvips) writers read back; atomic writes.

The output pyramid is built in a run store from a synthetic image (no sampling).
"""

import math
import os

import numpy as np
import pytest

from gigapatch.storage.tiff import tiff_levels, write_tiff_tifffile, write_tiff_vips

from .pyramid_store import CHUNK, TT, H, W, levels as _levels, build_store as _store


@pytest.mark.parametrize("compression", ["deflate", "zstd", "none"])
def test_tifffile_pyramid_reads_back(tmp_path, compression):
    import tifffile

    store, img, shapes = _store(tmp_path)
    assert shapes == [(600, 520), (300, 260), (150, 130)]
    out = tmp_path / "out.tif"
    write_tiff_tifffile(out, _levels(store, shapes, math.lcm(CHUNK, TT)), shapes, channels=3,
                        dtype="uint8", tile=TT, compression=compression, dpi=300,
                        layout="subifd")
    assert tiff_levels(out) == shapes
    with tifffile.TiffFile(out) as tf:
        assert tf.is_bigtiff
        page = tf.pages[0]
        assert page.is_tiled and page.tilewidth == TT
        assert len(page.subifds) == len(shapes) - 1
        assert page.tags["XResolution"].value == (300, 1)
        # horizontal differencing helps the compressor; with no compression it is off
        assert page.predictor == (1 if compression == "none" else 2)
        levels = tf.series[0].levels
        assert np.array_equal(levels[0].asarray(), np.moveaxis(img, 0, -1))
        for r, lv in enumerate(levels):
            z = np.asarray(store.array(f"output/{r}")[...])
            assert np.array_equal(lv.asarray(), np.moveaxis(z, 0, -1))
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    if compression == "zstd":
        # a third-party limit, not ours: the pyvips-binary wheel's libtiff has no ZSTD
        # (it reads zeros, silently), so the second reader checks the other two codecs
        return
    import pyvips

    for r, (h, w) in enumerate(shapes):
        im = pyvips.Image.new_from_file(str(out), subifd=r - 1)
        assert (im.height, im.width, im.bands) == (h, w, 3)
    im = pyvips.Image.new_from_file(str(out))
    assert np.array_equal(im.numpy(), np.moveaxis(img, 0, -1))


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
