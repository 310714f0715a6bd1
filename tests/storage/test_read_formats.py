"""Reading inputs as a viewer shows them: every TIFF codec through tifffile, EXIF
orientation, pages, bands vs alpha, CMYK, palettes, arrays and PIL images; every check
against an oracle (the array written, Pillow's exif_transpose, a palette lookup)."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips
import tifffile
from PIL import Image, ImageOps

from gigapatch.errors import GigapatchError
from gigapatch.storage import read_image, write_image
from gigapatch.storage.read import coerce_image
from gigapatch.storage.tiff import COMPRESSIONS, LAYOUTS, write_tiff_tifffile, write_tiff_vips

RNG = np.random.default_rng(7)


def _img(h, w, c, dtype):
    if np.dtype(dtype).kind == "f":
        return RNG.random((h, w, c)).astype(dtype)
    top = np.iinfo(dtype).max
    return RNG.integers(0, top + 1, (h, w, c)).astype(dtype)


def _unit(a):
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.dtype.kind == "f":
        return a.astype(np.float32)
    return a.astype(np.float32) / np.float32(np.iinfo(a.dtype).max)


# ---------------------------------------------------------------- TIFF codecs (tifffile)

_LOSSLESS = [None, "zlib", "adobe_deflate", "lzw", "zstd", "packbits", "lerc"]


@pytest.mark.parametrize("tiled", [True, False])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("compression", _LOSSLESS)
def test_every_lossless_tiff_codec_reads_the_written_values(tmp_path, compression, dtype,
                                                            tiled):
    a = _img(37, 45, 3, dtype)
    p = tmp_path / "x.tif"
    kw = {"tile": (16, 16)} if tiled else {"rowsperstrip": 5}
    tifffile.imwrite(p, a, photometric="rgb", compression=compression, **kw)
    r, info = read_image(p)
    np.testing.assert_array_equal(r, _unit(a))
    assert (info.channels, info.format, info.had_alpha) == (3, "tiff", False)
    assert info.bit_depth == {"uint8": 8, "uint16": 16, "float32": 32}[dtype]


def test_zstd_tiled_tiff_is_not_read_as_zeros(tmp_path):
    """The libtiff of the pyvips wheel returns zeros for ZSTD tiles without an error; a
    pyvips-first reader gave an all-black reference. Mutant killed: the old pyvips-first
    path (this array would come back as zeros)."""
    a = _img(64, 80, 3, "uint16")
    p = tmp_path / "ref_zstd_tiled.tif"
    tifffile.imwrite(p, a, photometric="rgb", compression="zstd", tile=(32, 32),
                     predictor=True)
    r, _ = read_image(p)
    assert r.max() > 0.5
    np.testing.assert_array_equal(r, _unit(a))


@pytest.mark.parametrize("compression", ["jpeg", "webp"])
def test_jpeg_and_webp_tiff_codecs(tmp_path, compression):
    a = _img(4, 6, 3, "uint8")
    a = np.repeat(np.repeat(a, 8, 0), 8, 1)  # 8x8 blocks: smooth enough for JPEG
    p = tmp_path / "x.tif"
    args = {"lossless": True} if compression == "webp" else {"level": 99}
    tifffile.imwrite(p, a, photometric="rgb", compression=compression, tile=(16, 16),
                     compressionargs=args)
    r, _ = read_image(p)
    if compression == "webp":
        np.testing.assert_array_equal(r, _unit(a))
    else:
        _assert_jpeg_close(r, p, a)


def _assert_jpeg_close(r, p, a):
    """JPEG tiles: libvips' libtiff + libjpeg decode of the same file is the oracle (both
    decoders agree to rounding), and the result is near what was written."""
    vips = pyvips.Image.new_from_file(str(p)).numpy().astype(np.float32) / 255
    assert r.shape == a.shape
    assert np.abs(r - vips).max() <= 2 / 255
    assert np.abs(r - _unit(a)).mean() < 12 / 255


# ------------------------------------------- round trip of everything the tool writes

def _levels(a):
    """Level arrays (H, W, C) of a 2-level pyramid and the writer's band callables."""
    lv = [a, a[::2, ::2]]

    def bands(x):
        return lambda: iter([(0, np.ascontiguousarray(np.moveaxis(x, -1, 0)))])

    return lv, [bands(x) for x in lv], [x.shape[:2] for x in lv]


_WRITTEN = [(c, d) for c in COMPRESSIONS for d in ("uint8", "uint16")
            if not (c == "jpeg" and d == "uint16")]  # JPEG holds 8 bits (writer refuses)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("compression,dtype", _WRITTEN)
def test_pyramidal_tifffile_output_reads_back(tmp_path, compression, dtype, layout):
    """Every compression x bit depth of the tifffile writer, read by the tool itself; the
    reduced levels (SubIFDs or reduced pages of the main chain) are not pages."""
    a = _img(64, 96, 3, dtype)
    if compression == "jpeg":
        a = np.repeat(np.repeat(a[::8, ::8], 8, 0), 8, 1)
    lv, bands, shapes = _levels(a)
    p = write_tiff_tifffile(tmp_path / "o.tif", bands, shapes, channels=3, dtype=dtype,
                            tile=32, compression=compression, layout=layout)
    r, info = read_image(p)
    assert info.notes == () and r.shape == a.shape
    if compression == "jpeg":
        _assert_jpeg_close(r, p, a)
    else:
        np.testing.assert_array_equal(r, _unit(a))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("compression,dtype", [x for x in _WRITTEN if x[0] != "zstd"])
def test_pyramidal_vips_output_reads_back(tmp_path, compression, dtype, layout):
    """The vips writer (no zstd: its libtiff lacks the codec and it refuses it)."""
    a = _img(64, 96, 3, dtype)
    if compression == "jpeg":
        a = np.repeat(np.repeat(a[::8, ::8], 8, 0), 8, 1)
    band = np.ascontiguousarray(np.moveaxis(a, -1, 0))
    p = write_tiff_vips(tmp_path / "o.tif", iter([(0, band)]), a.shape[:2], channels=3,
                        dtype=dtype, tile=32, compression=compression, layout=layout)
    r, info = read_image(p)
    assert r.shape == a.shape and info.notes == ()
    if compression == "jpeg":
        _assert_jpeg_close(r, p, a)
    else:
        np.testing.assert_array_equal(r, _unit(a))


@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("bands", [2, 4, 5])
def test_multiband_output_is_a_tiff_of_bands(tmp_path, bit_depth, bands):
    """A 4-band (RGB + NIR) result is written as a TIFF whose extra samples are bands, and
    reads back with every band; PNG cannot hold it and says so in one line."""
    top = 255 if bit_depth == 8 else 65535
    x = (RNG.integers(0, top + 1, (9, 11, bands)) / top).astype(np.float32)
    p = write_image(tmp_path / "m.tif", x, bit_depth=bit_depth)
    r, info = read_image(p)
    assert (info.channels, info.had_alpha, info.bit_depth) == (bands, False, bit_depth)
    np.testing.assert_allclose(r, x, atol=0.5 / top)
    with pytest.raises(GigapatchError, match=f"{bands} bands.*write a .tif"):
        write_image(tmp_path / "m.png", x)
    assert not (tmp_path / "m.png").exists()


# ------------------------------------------------------------------------ orientation

def _exif_file(path, a, orientation, fmt, **kw):
    im = Image.fromarray(a)
    ex = im.getexif()
    ex[0x0112] = orientation
    im.save(path, fmt, exif=ex.tobytes(), **kw)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt,suffix,kw,tol", [("PNG", ".png", {}, 0),
                                               ("WEBP", ".webp", {"lossless": True}, 0),
                                               ("TIFF", ".tif", {}, 0),
                                               ("JPEG", ".jpg", {"quality": 100}, 3 / 255)])
def test_exif_orientation_is_applied(tmp_path, orientation, fmt, suffix, kw, tol):
    """Oracle: Pillow's ImageOps.exif_transpose (what viewers show). Mutant killed: an
    apply_orientation that swaps 6 and 8 (or ignores the tag)."""
    a = _img(5, 7, 3, "uint8")  # not square and not symmetric: every orientation differs
    p = _exif_file(tmp_path / f"o{suffix}", a, orientation, fmt, **kw)
    oracle = _unit(np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB")))
    r, info = read_image(p)
    assert r.shape == oracle.shape
    assert np.abs(r - oracle).max() <= tol
    assert any("orientation" in n for n in info.notes) == (orientation != 1)


# ---------------------------------------------------------------------- pages / frames

def _two_page_tiff(p):
    pages = [_img(6, 5, 3, "uint8"), _img(6, 5, 3, "uint8")]
    with tifffile.TiffWriter(p) as tw:
        for x in pages:
            tw.write(x, photometric="rgb")
    return pages


def test_multipage_tiff_is_refused_unless_a_page_is_picked(tmp_path):
    p = tmp_path / "stack.tif"
    pages = _two_page_tiff(p)
    with pytest.raises(GigapatchError) as e:
        read_image(p, what="reference")
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "2 pages" in msg and "--page N" in msg
    with pytest.raises(GigapatchError, match=r"page=N"):
        read_image(p, words="api")
    for k in (0, 1):
        np.testing.assert_array_equal(read_image(p, page=k)[0], _unit(pages[k]))
    with pytest.raises(GigapatchError, match=r"--page 2 is out of range, use 0..1"):
        read_image(p, page=2)


@pytest.mark.parametrize("fmt,suffix,kw", [("WEBP", ".webp", {"lossless": True}),
                                           ("GIF", ".gif", {})])
def test_animated_images_are_refused_unless_a_frame_is_picked(tmp_path, fmt, suffix, kw):
    colours = [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    frames = [Image.new("RGB", (8, 6), c) for c in colours]
    p = tmp_path / f"anim{suffix}"
    frames[0].save(p, fmt, save_all=True, append_images=frames[1:], duration=100, **kw)
    with pytest.raises(GigapatchError) as e:
        read_image(p, what="reference")
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "3 frames" in msg and "--page N" in msg
    r, _ = read_image(p, page=1)
    np.testing.assert_array_equal(r, np.broadcast_to(np.float32([0, 0, 1]), (6, 8, 3)))


# ------------------------------------------------------------- bands, alpha, colour spaces

def test_rgb_plus_nir_tiff_keeps_four_bands(tmp_path):
    """ExtraSamples "unspecified" is a band (e.g. NIR), not alpha. Mutant killed: treating
    every 4th sample as alpha (the old reader)."""
    a = _img(9, 10, 4, "uint16")
    p = tmp_path / "rgbn.tif"
    tifffile.imwrite(p, a, photometric="rgb", extrasamples=["unspecified"])
    r, info = read_image(p)
    np.testing.assert_array_equal(r, _unit(a))
    assert (info.channels, info.had_alpha, info.notes) == (4, False, ())
    assert info.mode == "4-band"
    b = _img(9, 10, 5, "uint8")
    tifffile.imwrite(p, b, photometric="minisblack", planarconfig="contig")
    np.testing.assert_array_equal(read_image(p)[0], _unit(b))
    tifffile.imwrite(p, np.moveaxis(b, -1, 0), photometric="minisblack",
                     planarconfig="separate")
    np.testing.assert_array_equal(read_image(p)[0], _unit(b))


@pytest.mark.parametrize("alpha", ["unassalpha", "assocalpha"])
def test_tiff_alpha_is_dropped_with_a_note(tmp_path, alpha):
    rgb = _img(6, 7, 3, "uint16").astype(np.float64) / 65535
    al = RNG.integers(1, 65536, (6, 7, 1)) / 65535
    stored = rgb * al if alpha == "assocalpha" else rgb
    a = np.rint(np.concatenate([stored, al], axis=2) * 65535).astype(np.uint16)
    p = tmp_path / "rgba.tif"
    tifffile.imwrite(p, a, photometric="rgb", extrasamples=[alpha])
    r, info = read_image(p)
    assert info.had_alpha and info.channels == 3 and "alpha" in info.notes[0]
    expect = _unit(a)[:, :, :3]
    if alpha == "assocalpha":  # un-premultiplied
        expect = np.clip(expect / _unit(a)[:, :, 3:], 0, 1)
    np.testing.assert_allclose(r, expect, atol=1e-6)


def test_16bit_rgba_png_and_grey_alpha(tmp_path):
    a = _img(6, 7, 4, "uint16")
    p = tmp_path / "a16.png"
    pyvips.Image.new_from_array(a).copy(interpretation="rgb16").pngsave(str(p))
    r, info = read_image(p)
    np.testing.assert_array_equal(r, _unit(a)[:, :, :3])
    assert info.bit_depth == 16 and info.had_alpha and "alpha" in info.notes[0]
    la = _img(6, 7, 2, "uint8")
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    r, info = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(r, _unit(la)[:, :, :1])
    assert info.channels == 1 and info.had_alpha


def test_palette_png_and_tiff_become_rgb(tmp_path):
    """Colours, not palette indices. Mutant killed: reading the index plane."""
    palette = RNG.integers(0, 256, (16, 3)).astype(np.uint8)
    idx = RNG.integers(0, 16, (6, 9)).astype(np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette.ravel().tolist())
    im.save(tmp_path / "p.png")
    r, info = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(r, _unit(palette[idx]))
    assert info.channels == 3
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :16] = palette.T.astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=cmap)
    r, info = read_image(tmp_path / "p.tif")
    np.testing.assert_array_equal(r, _unit(palette[idx]))
    assert info.bit_depth == 8


def test_cmyk_is_converted_to_rgb_with_a_note(tmp_path):
    """Choice: convert (plain formula R = (1-C)(1-K)) with a note, not refuse."""
    cmyk = _img(6, 7, 4, "uint8")
    p = tmp_path / "cmyk.tif"
    tifffile.imwrite(p, cmyk, photometric="separated")
    r, info = read_image(p)
    c = _unit(cmyk)
    np.testing.assert_allclose(r, (1 - c[:, :, :3]) * (1 - c[:, :, 3:]), atol=1e-6)
    assert info.channels == 3 and "CMYK" in info.notes[0]
    # a CMYK JPEG (what Photoshop exports): against Pillow's decoding of the same inks
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    inks = _unit(np.asarray(Image.open(tmp_path / "cmyk.jpg")))
    r, info = read_image(tmp_path / "cmyk.jpg")
    np.testing.assert_allclose(r, (1 - inks[:, :, :3]) * (1 - inks[:, :, 3:]), atol=2 / 255)
    assert "CMYK" in info.notes[0]


def test_miniswhite_is_inverted(tmp_path):
    a = _img(5, 6, 1, "uint8")[:, :, 0]
    tifffile.imwrite(tmp_path / "w.tif", a, photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "w.tif")[0], _unit(255 - a))


def test_float_tiff_with_nan_is_refused_in_one_line(tmp_path):
    a = RNG.random((5, 6)).astype(np.float32)
    a[2, 3] = np.nan
    p = tmp_path / "nan.tif"
    tifffile.imwrite(p, a)
    with pytest.raises(GigapatchError) as e:
        read_image(p, what="reference")
    assert "\n" not in str(e.value) and str(p) in str(e.value) and "NaN" in str(e.value)


# ---------------------------------------------------------------- arrays and PIL images

def test_integer_arrays_are_8_or_16_bit_by_their_range():
    """Mutant killed: integer arrays taken as floats ("must lie in [0, 1]")."""
    a8 = RNG.integers(0, 256, (4, 5, 3)).astype(np.int64)
    np.testing.assert_array_equal(coerce_image(a8)[0], a8.astype(np.float32) / 255)
    a16 = a8 * 200
    np.testing.assert_array_equal(coerce_image(a16)[0], a16.astype(np.float32) / 65535)
    for bad in (np.array([[-1, 3]]), np.array([[0, 70000]])):
        with pytest.raises(GigapatchError, match="0..255.*0..65535"):
            coerce_image(bad)
    assert coerce_image(np.zeros((4, 5, 7), np.float32))[0].shape == (4, 5, 7)


def test_pil_images_are_read_as_shown():
    palette = RNG.integers(0, 256, (8, 3)).astype(np.uint8)
    idx = RNG.integers(0, 8, (5, 6)).astype(np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette.ravel().tolist())
    np.testing.assert_array_equal(coerce_image(im)[0], _unit(palette[idx]))
    rgba = _img(5, 6, 4, "uint8")
    r, notes = coerce_image(Image.fromarray(rgba, "RGBA"))
    np.testing.assert_array_equal(r, _unit(rgba)[:, :, :3])
    assert "alpha" in notes[0]
    g16 = _img(5, 6, 1, "uint16")[:, :, 0]
    np.testing.assert_array_equal(coerce_image(Image.fromarray(g16))[0], _unit(g16))
    with pytest.raises(GigapatchError, match="expected an image file path"):
        coerce_image([[0, 1], [1, 0]])
