"""Reading and writing images: every input kind, the alpha note, the bomb guard, and
atomic writes that leave nothing behind on failure. Fixtures are made at runtime."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile

from gigapatch.errors import GigapatchError
from gigapatch.storage import check_writable, numbered_path, read_image, write_image

DATA = Path(__file__).parent / "data"
RNG = np.random.default_rng(1234)


def _vips_save(path: Path, arr: np.ndarray, interpretation: str) -> Path:
    pyvips.Image.new_from_array(arr).copy(interpretation=interpretation).write_to_file(str(path))
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


# ----------------------------------------------------------------------------- reading

@pytest.mark.parametrize("name,channels", [("balloons.png", 3), ("sigd16_6.jpg", 3)])
def test_read_committed_references(name, channels):
    a, info = read_image(DATA / name)
    assert a.dtype == np.float32 and a.ndim == 3 and a.shape[2] == channels
    assert (info.height, info.width, info.channels) == a.shape
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert info.bit_depth == 8 and not info.had_alpha
    assert info.format == ("png" if name.endswith(".png") else "jpeg")


def test_read_png_8bit_exact(tmp_path):
    u8 = RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    a, info = read_image(_vips_save(tmp_path / "rgb.png", u8, "srgb"))
    np.testing.assert_array_equal(np.rint(a * 255).astype(np.uint8), u8)
    assert (info.width, info.height, info.channels, info.bit_depth) == (7, 9, 3, 8)


def test_read_grey_png(tmp_path):
    u8 = RNG.integers(0, 256, (9, 7), dtype=np.uint8)
    a, info = read_image(_vips_save(tmp_path / "g.png", u8, "b-w"))
    assert a.shape == (9, 7, 1) and info.mode == "grey" and not info.had_alpha
    np.testing.assert_array_equal(np.rint(a[:, :, 0] * 255).astype(np.uint8), u8)


@pytest.mark.parametrize("bands,interp,channels", [(4, "srgb", 3), (2, "b-w", 1)])
def test_alpha_is_dropped_and_noted(tmp_path, bands, interp, channels):
    u8 = RNG.integers(0, 256, (6, 5, bands), dtype=np.uint8)
    a, info = read_image(_vips_save(tmp_path / "alpha.png", u8, interp))
    assert a.shape == (6, 5, channels) and info.had_alpha and info.channels == channels
    np.testing.assert_array_equal(np.rint(a * 255).astype(np.uint8), u8[:, :, :channels])
    assert "alpha dropped" in info.describe()


@pytest.mark.parametrize("shape", [(20, 30, 3), (20, 30)])
def test_read_16bit_tiff_exact(tmp_path, shape):
    u16 = RNG.integers(0, 65536, shape, dtype=np.uint16)
    path = tmp_path / "x16.tif"
    tifffile.imwrite(path, u16, photometric="rgb" if len(shape) == 3 else "minisblack")
    a, info = read_image(path)
    assert info.bit_depth == 16 and info.format == "tiff"
    np.testing.assert_array_equal(np.rint(a * 65535).astype(np.uint16).reshape(shape), u16)


def test_read_float_tiff_in_unit_range(tmp_path):
    f = RNG.random((8, 9, 3), dtype=np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f, photometric="rgb")
    a, _ = read_image(tmp_path / "f.tif")
    np.testing.assert_allclose(a, f, atol=1e-6)


def test_tifffile_fallback_for_codecs_vips_lacks(tmp_path):
    u16 = RNG.integers(0, 65536, (12, 10, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", u16, photometric="rgb", compression="zstd")
    a, info = read_image(tmp_path / "z.tif")
    assert info.bit_depth == 16
    np.testing.assert_array_equal(np.rint(a * 65535).astype(np.uint16), u16)


def test_bomb_guard_refuses_before_decoding(tmp_path):
    path = _vips_save(tmp_path / "big.png", np.zeros((40, 50, 3), np.uint8), "srgb")
    with pytest.raises(GigapatchError) as exc:
        read_image(path, max_pixels=1999)
    msg = str(exc.value)
    assert str(path) in msg and "--max-input-pixels" in msg and "output.max_input_pixels" in msg
    assert read_image(path, max_pixels=2000)[0].shape == (40, 50, 3)


def _corrupt_png(tmp_path: Path) -> Path:
    data = (DATA / "balloons.png").read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("case", ["missing", "folder", "empty", "text", "truncated_png",
                                  "truncated_jpeg", "garbage_tiff", "cmyk", "five_channels",
                                  "float_out_of_range", "int16", "gif"])
def test_bad_inputs_give_one_line_naming_the_file(tmp_path, capfd, case):
    p = tmp_path / f"{case}.img"
    if case == "missing":
        p = tmp_path / "nope.png"
    elif case == "folder":
        p = tmp_path
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "text":
        p.write_text("not an image\n")
    elif case == "truncated_png":
        p = _corrupt_png(tmp_path)
    elif case == "truncated_jpeg":
        data = (DATA / "sigd16_6.jpg").read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif case == "garbage_tiff":
        p.write_bytes(b"II*\x00" + bytes(RNG.integers(0, 256, 300, dtype=np.uint8)))
    elif case == "cmyk":
        p = tmp_path / "cmyk.jpg"
        pyvips.Image.new_from_array(np.full((6, 5, 4), 9, np.uint8)).copy(
            interpretation="cmyk").jpegsave(str(p))
    elif case == "five_channels":
        tifffile.imwrite(p, np.zeros((6, 5, 5), np.uint8), photometric="minisblack",
                         planarconfig="contig")
    elif case == "float_out_of_range":
        tifffile.imwrite(p, np.full((6, 5, 3), 3.0, np.float32), photometric="rgb")
    elif case == "int16":
        tifffile.imwrite(p, np.full((6, 5), -3, np.int16))
    elif case == "gif":
        p = tmp_path / "x.gif"
        pyvips.Image.new_from_array(np.zeros((6, 5, 3), np.uint8)).copy(
            interpretation="srgb").gifsave(str(p))
    capfd.readouterr()
    with pytest.raises(GigapatchError) as exc:
        read_image(p, what="reference")
    msg = str(exc.value)
    assert "\n" not in msg and str(p) in msg and msg.startswith("reference ")
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # libvips / tifffile warnings are kept off the terminal
    assert "VIPS_WARNING" not in os.environ


# ----------------------------------------------------------------------------- writing

@pytest.mark.parametrize("suffix,bit_depth,tol", [(".png", 8, 0.5 / 255), (".png", 16, 0.5 / 65535),
                                                  (".tif", 16, 0.5 / 65535),
                                                  (".tiff", 8, 0.5 / 255), (".jpg", 8, 0.15)])
@pytest.mark.parametrize("channels", [1, 3])
def test_write_read_roundtrip(tmp_path, suffix, bit_depth, tol, channels):
    x = RNG.random((11, 13, channels), dtype=np.float32)
    path = write_image(tmp_path / f"out{suffix}", x, bit_depth=bit_depth, dpi=300)
    a, info = read_image(path)
    assert a.shape == x.shape and info.bit_depth == bit_depth
    assert np.abs(a - x).max() <= tol + 1e-7
    assert _leftovers(tmp_path) == []


def test_write_dpi_and_clipping(tmp_path):
    x = np.linspace(-1, 2, 5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    write_image(tmp_path / "d.tif", x, dpi=300)
    with tifffile.TiffFile(tmp_path / "d.tif") as tif:
        page = tif.pages[0]
        assert page.resolution == pytest.approx((300, 300), rel=1e-3)
        assert page.tags["ResolutionUnit"].value == 2  # inch
        a = page.asarray()
    assert a.min() == 0 and a.max() == 255


def test_write_replaces_existing_file_atomically(tmp_path):
    path = tmp_path / "o.png"
    path.write_bytes(b"old")
    write_image(path, np.zeros((4, 4, 3), np.float32))
    assert read_image(path)[0].shape == (4, 4, 3)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["out.bmp", "out", "out.jpg"])
def test_write_bad_suffix_or_depth(tmp_path, name):
    with pytest.raises(GigapatchError) as exc:
        write_image(tmp_path / name, np.zeros((4, 4, 3)), bit_depth=16)
    assert name in str(exc.value)
    assert os.listdir(tmp_path) == []


def test_write_missing_folder(tmp_path):
    with pytest.raises(GigapatchError, match="does not exist"):
        write_image(tmp_path / "no" / "o.png", np.zeros((4, 4, 3)))


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    """A saver that dies half-way (disk full, Ctrl-C) leaves neither temp nor final file."""
    def broken_save(self, filename, **kw):
        Path(filename).write_bytes(b"\x89PNG half")
        raise pyvips.Error("write failed", "No space left on device")

    monkeypatch.setattr(pyvips.Image, "pngsave", broken_save)
    with pytest.raises(GigapatchError) as exc:
        write_image(tmp_path / "o.png", np.zeros((4, 4, 3)))
    assert "o.png" in str(exc.value) and "\n" not in str(exc.value)
    assert os.listdir(tmp_path) == []

    def interrupted_save(self, filename, **kw):
        Path(filename).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(pyvips.Image, "pngsave", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "o.png", np.zeros((4, 4, 3)))
    assert os.listdir(tmp_path) == []


def test_check_writable(tmp_path, monkeypatch):
    assert check_writable(tmp_path / "a.png") == tmp_path / "a.png"
    assert os.listdir(tmp_path) == []  # the probe is removed
    for bad, words in [(tmp_path / "a.gif", "suffix"), (tmp_path / "no" / "a.png", "does not exist"),
                       (tmp_path, "suffix")]:
        with pytest.raises(GigapatchError, match=words):
            check_writable(bad)
    (tmp_path / "file").write_text("x")
    with pytest.raises(GigapatchError, match="not a folder"):
        check_writable(tmp_path / "file" / "a.png")
    with pytest.raises(GigapatchError, match="JPEG"):
        check_writable(tmp_path / "a.jpg", bit_depth=16)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(GigapatchError, match="not writable"):
        check_writable(tmp_path / "a.png")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root can write into read-only folders")
def test_check_writable_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(GigapatchError, match="not writable"):
            check_writable(ro / "a.png")
    finally:
        ro.chmod(0o700)


def test_numbered_path():
    assert numbered_path("out.png", 0, 1) == Path("out.png")
    assert [numbered_path("d/out.png", i, 3).as_posix() for i in range(3)] == \
        ["d/out_000.png", "d/out_001.png", "d/out_002.png"]
    assert numbered_path("out.tif", 5, 1001) == Path("out_0005.tif")
    with pytest.raises(ValueError):
        numbered_path("out.png", 3, 3)
