"""Pyramidal TIFF layouts opened with the readers our users have: tifffile, pyvips, GDAL
(rasterio), OpenSlide (openslide-bin wheel) and tiffslide.

The pyramid is a tiny synthetic one (600 x 520, tile 128 -> 4 levels) whose every level is
known exactly (the oracle): each reader must see every level of the default ``chain``
layout, with the right sizes and the exact pixel values.
"""

import numpy as np
import pytest

from gigapatch.errors import GigapatchError
from gigapatch.storage.tiff import write_tiff_tifffile, write_tiff_vips

H, W, TILE = 600, 520, 128


def _pyramid(channels=3, dtype=np.uint8, seed=0):
    """Every level as (H_r, W_r, C): random level 0, 2x box means below (exact oracle)."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    lv = [rng.integers(0, top + 1, size=(H, W, channels)).astype(dtype)]
    while max(lv[-1].shape[:2]) > TILE:
        a = lv[-1].astype(np.float64)
        h, w = (a.shape[0] + 1) // 2, (a.shape[1] + 1) // 2
        a = np.pad(a, ((0, 2 * h - a.shape[0]), (0, 2 * w - a.shape[1]), (0, 0)), mode="edge")
        lv.append(np.rint(a.reshape(h, 2, w, 2, channels).mean((1, 3))).astype(dtype))
    return lv


def _bands(level, band=TILE):
    def gen():
        for y0 in range(0, level.shape[0], band):
            yield y0, np.ascontiguousarray(np.moveaxis(level[y0:y0 + band], -1, 0))
    return gen


def _write(path, layout, levels=None, **kw):
    levels = levels or _pyramid()
    write_tiff_tifffile(path, [_bands(lv) for lv in levels], [lv.shape[:2] for lv in levels],
                        channels=levels[0].shape[2], dtype=levels[0].dtype, tile=TILE,
                        layout=layout, **kw)
    return levels


def test_chain_layout_every_reader_sees_every_level(tmp_path):
    import openslide
    import pyvips
    import rasterio
    import tifffile
    import tiffslide

    out = tmp_path / "chain.tif"
    levels = _write(out, "chain")
    shapes = [lv.shape[:2] for lv in levels]
    assert len(shapes) == 4
    with tifffile.TiffFile(out) as tf:
        assert [lv.shape[:2] for lv in tf.series[0].levels] == shapes
        assert len(tf.pages) == 4 and not tf.pages[0].subifds
        for r, lv in enumerate(tf.series[0].levels):
            assert np.array_equal(lv.asarray(), levels[r])
    for r, lv in enumerate(levels):
        im = pyvips.Image.new_from_file(str(out), page=r)
        assert np.array_equal(im.numpy(), lv)
    with rasterio.open(out) as ds:
        ov = ds.overviews(1)
        assert len(ov) == 3
        assert np.array_equal(np.moveaxis(ds.read(), 0, -1), levels[0])
    with rasterio.open(out, overview_level=1) as ds:  # GDAL's overview 1 = our level 2
        assert np.array_equal(np.moveaxis(ds.read(), 0, -1), levels[2])
    with openslide.OpenSlide(str(out)) as s:
        assert s.level_count == 4
        assert [d[::-1] for d in s.level_dimensions] == shapes
        assert np.array_equal(np.asarray(s.read_region((0, 0), 3, shapes[3][::-1]))[..., :3],
                              levels[3])
    with tiffslide.TiffSlide(str(out)) as s:
        assert s.level_count == 4
        assert np.array_equal(np.asarray(s.read_region((0, 0), 1, shapes[1][::-1]))[..., :3],
                              levels[1])


def test_subifd_layout_is_an_option_openslide_sees_level_0_only(tmp_path):
    # the measured reason chain is the default (BENCHMARKS.md, "Pyramid layouts")
    import openslide
    import tifffile

    out = tmp_path / "sub.tif"
    levels = _write(out, "subifd")
    with tifffile.TiffFile(out) as tf:
        assert len(tf.pages) == 1 and len(tf.pages[0].subifds) == 3
        for r, lv in enumerate(tf.series[0].levels):
            assert np.array_equal(lv.asarray(), levels[r])
    with openslide.OpenSlide(str(out)) as s:
        assert s.level_count == 1


def test_vips_writer_chain_layout(tmp_path):
    import openslide
    import tifffile

    levels = _pyramid()
    out = tmp_path / "v.tif"
    write_tiff_vips(out, _bands(levels[0])(), levels[0].shape[:2], channels=3, dtype="uint8",
                    tile=TILE, layout="chain")
    with tifffile.TiffFile(out) as tf:
        assert len(tf.pages) >= 3 and not tf.pages[0].subifds
        assert np.array_equal(tf.series[0].levels[0].asarray(), levels[0])
    with openslide.OpenSlide(str(out)) as s:
        assert s.level_count == len(tifffile.TiffFile(out).pages)
        assert s.level_dimensions[1] == (W // 2, H // 2)


def test_unknown_layout_refused(tmp_path):
    with pytest.raises(GigapatchError, match="layout"):
        _write(tmp_path / "x.tif", "cog-ish")
    assert not list(tmp_path.iterdir())


def test_deflate_is_the_portable_code_8(tmp_path):
    # tifffile's 'deflate' is the legacy 32946 that libtiff warns about
    import tifffile

    out = tmp_path / "d.tif"
    _write(out, "chain", compression="deflate")
    with tifffile.TiffFile(out) as tf:
        assert {p.tags["Compression"].value for p in tf.pages} == {8}
        assert {p.predictor for p in tf.pages} == {2}


def test_layout_flag_sets_the_config_key():
    from gigapatch.cli import _load_config, build_parser

    base = ["generate", "ref.png", "-o", "out.tif"]
    assert _load_config(build_parser().parse_args(base)).output.layout == "chain"
    args = build_parser().parse_args(base + ["--layout", "subifd"])
    assert _load_config(args).output.layout == "subifd"
