"""Print, microscopy, GIS and web outputs opened with the tools their users have: Pillow,
GDAL (rasterio), rio-cogeo (GDAL's COG rules), OpenSlide, tiffslide, pyvips.

Every file is tiny and written by the writer functions directly (or by a 2-step run of the
CLI for the end-to-end checks); the oracle is the array / metadata written.
"""

import math
import warnings

import numpy as np
import pytest
from affine import Affine
from PIL import Image

from gigapatch.errors import GigapatchError
from gigapatch.storage.imageio import write_image
from gigapatch.storage.metadata import (OutputMetadata, output_metadata, parse_pixel_size,
                                        print_size_pixels, read_metadata)
from gigapatch.storage.tiff import write_tiff_tifffile, write_tiff_vips

from .test_layout_readers import TILE, _bands, _pyramid

warnings.filterwarnings("ignore", message="Dataset has no geotransform")


def _srgb_icc() -> bytes:
    import pyvips

    im = pyvips.Image.new_from_array(np.zeros((2, 2, 3), np.uint8)).copy(interpretation="srgb")
    return bytes(im.icc_export(output_profile="srgb").get("icc-profile-data"))


def _write_pyramid(path, levels, meta, **kw):
    write_tiff_tifffile(path, [_bands(lv) for lv in levels], [lv.shape[:2] for lv in levels],
                        channels=levels[0].shape[2], dtype=levels[0].dtype, tile=TILE,
                        metadata=meta, **kw)


# --- print: resolution and ICC ----------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_no_resolution_is_written_when_nobody_knows_it(tmp_path, suffix):
    import tifffile

    out = write_image(tmp_path / f"a{suffix}", np.full((20, 30, 3), 0.5, np.float32))
    im = Image.open(out)
    assert "dpi" not in im.info  # no made-up 25.4 dpi (libvips' default)
    if suffix == ".tif":
        with tifffile.TiffFile(out) as tf:
            assert tf.pages[0].tags["ResolutionUnit"].value == 1  # NONE
    assert read_metadata(out) == OutputMetadata()


def test_vips_pyramid_without_resolution_says_unit_none(tmp_path):
    import tifffile

    levels = _pyramid()
    out = tmp_path / "v.tif"
    write_tiff_vips(out, _bands(levels[0])(), levels[0].shape[:2], channels=3, dtype="uint8",
                    tile=TILE)
    with tifffile.TiffFile(out) as tf:
        assert [p.tags["ResolutionUnit"].value for p in tf.pages] == [1] * len(tf.pages)
        assert tf.pages[0].tags["XResolution"].value == (1, 1)
        assert np.array_equal(tf.pages[0].asarray(), levels[0])


def test_vips_pyramid_carries_dpi_and_icc_and_refuses_geotiff_keys(tmp_path):
    import tifffile

    icc = _srgb_icc()
    levels = _pyramid()
    out = tmp_path / "v.tif"
    write_tiff_vips(out, _bands(levels[0])(), levels[0].shape[:2], channels=3, dtype="uint8",
                    tile=TILE, metadata=OutputMetadata(dpi=300, icc=icc))
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        x = page.tags["XResolution"].value
        assert x[0] / x[1] == pytest.approx(300, abs=1e-3)
        assert page.tags["ResolutionUnit"].value == 2
        assert bytes(page.tags[34675].value) == icc
    with pytest.raises(GigapatchError, match="writer=tifffile"):
        write_tiff_vips(tmp_path / "g.tif", _bands(levels[0])(), levels[0].shape[:2],
                        channels=3, dtype="uint8", tile=TILE,
                        metadata=OutputMetadata(crs="EPSG:4326"))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_dpi_and_icc_carried_from_a_reference(tmp_path, suffix):
    import tifffile

    icc = _srgb_icc()
    ref = tmp_path / "ref.tif"
    tifffile.imwrite(ref, np.zeros((8, 8, 3), np.uint16), photometric="rgb",
                     resolution=(300, 300), resolutionunit="INCH", iccprofile=icc)
    meta = read_metadata(ref)
    assert meta.dpi == 300 and meta.icc == icc
    out = write_image(tmp_path / f"o{suffix}", np.full((20, 30, 3), 0.25, np.float32),
                      metadata=meta, bit_depth=8)
    im = Image.open(out)
    assert im.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    assert im.info["icc_profile"] == icc
    back = read_metadata(out)
    assert back.dpi == pytest.approx(300, abs=0.01) and back.icc == icc


def test_pyramid_dpi_scales_per_level_and_icc_on_level_0(tmp_path):
    import tifffile

    icc = _srgb_icc()
    out = tmp_path / "p.tif"
    _write_pyramid(out, _pyramid(), OutputMetadata(dpi=300, icc=icc))
    with tifffile.TiffFile(out) as tf:
        res = [p.tags["XResolution"].value for p in tf.pages]
        assert [a / b for a, b in res] == [300, 150, 75, 37.5]
        assert {p.tags["ResolutionUnit"].value for p in tf.pages} == {2}
        assert bytes(tf.pages[0].tags[34675].value) == icc
    assert Image.open(out).info["dpi"] == (300, 300)


def test_microscopy_pixel_size_is_what_openslide_and_tiffslide_report(tmp_path):
    import openslide
    import tiffslide

    out = tmp_path / "m.tif"
    _write_pyramid(out, _pyramid(), OutputMetadata(pixel_size_um=parse_pixel_size("250nm")))
    with openslide.OpenSlide(str(out)) as s:
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.25)
        assert s.level_count == 4
    with tiffslide.TiffSlide(str(out)) as s:
        assert s.properties["tiffslide.mpp-x"] == pytest.approx(0.25)
    assert read_metadata(out).pixel_size_um == pytest.approx(0.25)


def test_resolution_in_cm_is_a_print_dpi_or_a_microscope_pixel(tmp_path):
    import tifffile

    for ppcm, dpi, um in ((300 / 2.54, 300, None), (4000.0, None, 2.5)):
        path = tmp_path / f"r{ppcm:.0f}.tif"
        tifffile.imwrite(path, np.zeros((4, 4), np.uint8), resolution=(ppcm, ppcm),
                         resolutionunit="CENTIMETER")
        m = read_metadata(path)
        assert m.dpi == (pytest.approx(dpi, rel=1e-6) if dpi else None)
        assert m.pixel_size_um == (pytest.approx(um) if um else None)


def test_libvips_placeholder_25_4_dpi_is_not_carried(tmp_path):
    import pyvips

    im = pyvips.Image.new_from_array(np.zeros((8, 8, 3), np.uint8)).copy(interpretation="srgb")
    im.pngsave(str(tmp_path / "v.png"))  # libvips writes 1 px/mm when it knows nothing
    im.jpegsave(str(tmp_path / "v.jpg"))
    assert Image.open(tmp_path / "v.png").info["dpi"] == pytest.approx((25.4, 25.4))
    assert read_metadata(tmp_path / "v.png").dpi is None
    assert read_metadata(tmp_path / "v.jpg").dpi is None


def test_print_size_pixels():
    assert print_size_pixels("60x40cm", 300) == (7087, 4724)  # 23.62 in x 300 = 7086.6
    assert print_size_pixels("10x5in", 100) == (1000, 500)
    assert print_size_pixels("254x127mm", 100) == (1000, 500)
    with pytest.raises(GigapatchError, match="--dpi"):
        print_size_pixels("60x40cm", None)
    with pytest.raises(GigapatchError, match="60x40cm"):
        print_size_pixels("60x40", 300)


def test_16_bit_reference_gives_16_bit_output_by_default():
    from gigapatch.config import load_config

    oc = load_config().output
    assert oc.bit_depth == "auto"
    assert (oc.bits(8), oc.bits(16), oc.bits(32), oc.bits()) == (8, 16, 16, 8)
    assert load_config(overrides=["output.bit_depth=8"]).output.bits(16) == 8


# --- GIS: GeoTIFF and COG ----------------------------------------------------------------

GEO_AFFINE = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4650000.0)
GEO = OutputMetadata(crs="EPSG:32633", transform=(500000.0, 10.0, 0.0, 4650000.0, 0.0, -10.0),
                     nodata=0.0, band_names=("red", "green", "blue", "nir"))


def _geo_pyramid():
    return _pyramid(channels=4, dtype=np.uint16, seed=3)


def _check_gdal(path, levels, meta, cog=False):
    import rasterio
    from rasterio.enums import ColorInterp

    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == 32633
        assert tuple(ds.transform)[:6] == (10.0, 0.0, 500000.0, 0.0, -10.0, 4650000.0)
        assert ds.nodata == 0 and ds.descriptions == meta.band_names
        assert ds.count == 4 and ds.dtypes == ("uint16",) * 4
        assert ds.colorinterp[3] != ColorInterp.alpha  # NIR is data, not transparency
        assert len(ds.overviews(1)) == len(levels) - 1
        assert np.array_equal(np.moveaxis(ds.read(), 0, -1), levels[0])
    with rasterio.open(path, overview_level=0) as ds:
        assert np.array_equal(np.moveaxis(ds.read(), 0, -1), levels[1])


def test_geotiff_from_the_tifffile_writer_read_by_gdal(tmp_path):
    levels = _geo_pyramid()
    out = tmp_path / "g.tif"
    _write_pyramid(out, levels, GEO)
    _check_gdal(out, levels, GEO)
    assert read_metadata(out) == GEO


def test_cog_is_valid_by_gdal_rules_and_keeps_bands_and_georeferencing(tmp_path):
    from rio_cogeo.cogeo import cog_validate

    from gigapatch.storage.cog import write_cog

    levels = _geo_pyramid()
    out = tmp_path / "c.tif"
    write_cog(out, [_bands(lv) for lv in levels], [lv.shape[:2] for lv in levels],
              channels=4, dtype=np.uint16, tile=TILE, metadata=GEO)
    valid, errors, warns = cog_validate(str(out))
    assert valid and not errors and not warns, (errors, warns)
    _check_gdal(out, levels, GEO, cog=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif"]  # no temporaries left


def test_the_cog_validator_refuses_our_plain_pyramid(tmp_path):
    # the check above can fail: GDAL's rules refuse a pyramid whose IFDs are not all first
    from rio_cogeo.cogeo import cog_validate

    out = tmp_path / "plain.tif"
    levels = _geo_pyramid()
    _write_pyramid(out, levels, GEO)
    assert not cog_validate(str(out))[0]


def test_an_icc_profile_of_another_colour_space_is_not_carried():
    from gigapatch.storage.metadata import icc_colour_space

    rgb = _srgb_icc()
    assert icc_colour_space(rgb) == "RGB"
    cmyk = rgb[:16] + b"CMYK" + rgb[20:]
    ref = OutputMetadata(icc=cmyk)
    assert output_metadata(ref, out_hw=(4, 4), channels=3).icc is None
    assert output_metadata(OutputMetadata(icc=rgb), out_hw=(4, 4), channels=3).icc == rgb
    assert output_metadata(OutputMetadata(icc=rgb), out_hw=(4, 4), channels=1).icc is None


def test_georeferencing_moves_with_origin_and_bounds():
    ref = OutputMetadata(crs="EPSG:32633", transform=(100.0, 2.0, 0.0, 900.0, 0.0, -2.0),
                         band_names=("a", "b", "c"))
    m = output_metadata(ref, out_hw=(50, 80), channels=3)
    assert m.transform == ref.transform and m.band_names == ("a", "b", "c")
    m = output_metadata(ref, out_hw=(50, 80), channels=3, origin=(10.0, 20.0))
    assert m.transform == (10.0, 2.0, 0.0, 20.0, 0.0, -2.0)
    m = output_metadata(ref, out_hw=(50, 80), channels=3, bounds=(0.0, 0.0, 160.0, 200.0),
                        crs="epsg:4326", nodata=-1)
    assert m.transform == (0.0, 2.0, 0.0, 200.0, 0.0, -4.0)
    assert m.crs == "EPSG:4326" and m.nodata == -1
    assert output_metadata(ref, out_hw=(5, 5), channels=1).band_names is None
    with pytest.raises(GigapatchError, match="--bounds"):
        output_metadata(OutputMetadata(), out_hw=(5, 5), channels=1, origin=(1.0, 2.0))
    with pytest.raises(GigapatchError, match="one"):
        output_metadata(ref, out_hw=(5, 5), channels=3, dpi=300, pixel_size_um=0.5)


# --- web: DZI and preview ------------------------------------------------------------------

def test_dzi_descriptor_and_tiles(tmp_path):
    import pyvips

    from gigapatch.storage.web import write_dzi

    levels = _pyramid()
    out = tmp_path / "w.dzi"
    write_dzi(out, _bands(levels[0])(), levels[0].shape[:2], channels=3, dtype=np.uint8)
    xml = out.read_text()
    assert 'Width="520"' in xml and 'Height="600"' in xml and 'TileSize="254"' in xml
    files = tmp_path / "w_files"
    n = math.ceil(math.log2(600)) + 1  # Deep Zoom levels down to 1x1
    assert sorted(int(d.name) for d in files.iterdir() if d.is_dir()) == list(range(n))
    top = files / str(n - 1)
    assert len(list(top.glob("*.jpg"))) == 3 * 3  # ceil(520/254) x ceil(600/254)
    tile = pyvips.Image.new_from_file(str(top / "0_0.jpg")).numpy()
    assert tile.shape == (255, 255, 3)  # 254 + 1 px overlap on the far sides
    assert np.abs(tile.astype(int) - levels[0][:255, :255]).mean() < 40  # JPEG of noise
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.dzi", "w_files"]


def test_preview_long_side_1024(tmp_path):
    import pyvips

    from gigapatch.storage.web import preview_path, write_preview

    assert preview_path(tmp_path / "big.tif").name == "big.preview.jpg"
    assert preview_path(tmp_path / "big.ome.zarr").name == "big.preview.jpg"
    a = np.zeros((1000, 2048, 3), np.uint16)
    a[:, 1024:] = 65535
    p = write_preview(tmp_path / "x.preview.jpg", a)
    im = pyvips.Image.new_from_file(str(p))
    assert (im.width, im.height, im.bands) == (1024, 500, 3)
    px = im.numpy()
    assert px[:, :500].max() < 10 and px[:, 524:].min() > 245


# --- end to end: the CLI carries the reference's metadata --------------------------------

def _run(argv, capsys):
    from gigapatch.cli import main

    rc = main(["generate", "-q", "--set", "sampler.steps=1", "--size", "48x40"] + argv)
    return rc, capsys.readouterr()


def test_cli_16bit_icc_print_reference(tmp_path, capsys):
    import tifffile

    icc = _srgb_icc()
    ref = tmp_path / "ref.tif"
    rng = np.random.default_rng(1)
    tifffile.imwrite(ref, rng.integers(0, 65536, (40, 48, 3)).astype(np.uint16),
                     photometric="rgb", resolution=(300, 300), resolutionunit="INCH",
                     iccprofile=icc)
    rc, cap = _run([str(ref), "-o", str(tmp_path / "o.tif"), "--preview"], capsys)
    assert rc == 0 and "300 dpi, ICC profile" in cap.out
    with tifffile.TiffFile(tmp_path / "o.tif") as tf:
        page = tf.pages[0]
        assert page.dtype == np.uint16 and page.tags["Compression"].value == 8
        assert page.tags["XResolution"].value == (300, 1)
        assert bytes(page.tags[34675].value) == icc
    assert (tmp_path / "o.preview.jpg").exists() and "preview:" in cap.out
    rc, cap = _run([str(ref), "-o", str(tmp_path / "n.png"), "--no-metadata",
                    "--set", "output.bit_depth=8"], capsys)
    assert rc == 0
    assert read_metadata(tmp_path / "n.png") == OutputMetadata()


def test_cli_cog_from_a_georeferenced_reference(tmp_path, capsys):
    import rasterio
    from rasterio.transform import from_origin
    from rio_cogeo.cogeo import cog_validate

    ref = tmp_path / "geo.tif"
    rng = np.random.default_rng(2)
    with rasterio.open(ref, "w", driver="GTiff", width=48, height=40, count=3,
                       dtype="uint16", crs="EPSG:32633", nodata=0,
                       transform=from_origin(500000, 4650000, 10, 10)) as ds:
        ds.write(rng.integers(1, 4000, (3, 40, 48)).astype(np.uint16))
    out = tmp_path / "c.tif"
    rc, cap = _run([str(ref), "-o", str(out), "--format", "cog", "--origin", "600000,4000000",
                    "--nodata", "65535"], capsys)
    assert rc == 0 and "view: QGIS" in cap.out
    assert cog_validate(str(out))[0]
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32633 and ds.nodata == 65535 and ds.dtypes[0] == "uint16"
        assert tuple(ds.transform)[:6] == (10.0, 0.0, 600000.0, 0.0, -10.0, 4000000.0)
        assert (ds.width, ds.height) == (48, 40)


def test_cli_rgb_nir_16bit_geotiff_keeps_bands_type_and_names(tmp_path, capsys):
    import rasterio
    from rasterio.enums import ColorInterp

    ref = tmp_path / "rgbn.tif"
    rng = np.random.default_rng(4)
    with rasterio.open(ref, "w", driver="GTiff", width=48, height=40, count=4, dtype="uint16",
                       crs="EPSG:32633", transform=GEO_AFFINE, photometric="RGB") as ds:
        ds.write(rng.integers(1, 4000, (4, 40, 48)).astype(np.uint16))
        for i, n in enumerate(("red", "green", "blue", "nir"), start=1):
            ds.set_band_description(i, n)
    out = tmp_path / "o.tif"
    rc, cap = _run([str(ref), "-o", str(out)], capsys)
    assert rc == 0 and "bands red,green,blue,nir" in cap.out
    with rasterio.open(out) as ds:
        assert ds.count == 4 and ds.dtypes == ("uint16",) * 4
        assert ds.descriptions == ("red", "green", "blue", "nir")
        assert ds.colorinterp[3] == ColorInterp.undefined
        assert ds.crs.to_epsg() == 32633
        assert tuple(ds.transform)[:6] == tuple(GEO_AFFINE)[:6]
        assert ds.read(4).std() > 0  # the NIR band was sampled, not left empty


def test_cli_print_size_at_dpi_sets_the_pixel_size(tmp_path, capsys):
    import tifffile

    from gigapatch.cli import main

    ref = tmp_path / "r.tif"
    tifffile.imwrite(ref, np.random.default_rng(5).integers(0, 256, (40, 48, 3), np.uint8),
                     photometric="rgb", resolution=(50, 50), resolutionunit="INCH")
    assert main(["info", str(ref), "--print-size", "25.4x12.7mm", "--set",
                 "output.dpi=200"]) == 0
    assert "output:    200x100," in capsys.readouterr().out
    assert main(["info", str(ref), "--print-size", "4x2in"]) == 0  # the reference's 50 dpi
    assert "output:    200x100," in capsys.readouterr().out
    out = tmp_path / "o.tif"
    assert main(["generate", "-q", str(ref), "-o", str(out), "--print-size", "1x0.5in",
                 "--dpi", "64", "--set", "sampler.steps=1"]) == 0
    assert "wrote" in capsys.readouterr().out
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert page.shape[:2] == (32, 64)
        assert page.tags["XResolution"].value == (64, 1)


def test_cli_pixel_size_reaches_openslide(tmp_path, capsys):
    import openslide

    ref = tmp_path / "r.png"
    write_image(ref, np.random.default_rng(6).random((40, 48, 3)))
    out = tmp_path / "m.tif"
    rc, cap = _run([str(ref), "-o", str(out), "--pixel-size", "500nm"], capsys)
    assert rc == 0 and "0.5 um/px" in cap.out
    with openslide.OpenSlide(str(out)) as s:
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)
