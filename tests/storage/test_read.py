"""Reading images: every input kind, the alpha note, the bomb guard, and one clear line
for every bad input. Fixtures are made at runtime."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile

from gigapatch.errors import GigapatchError
from gigapatch.storage import read_image

from ..helpers import DATA


RNG = np.random.default_rng(1234)


def _vips_save(path: Path, arr: np.ndarray, interpretation: str) -> Path:
    pyvips.Image.new_from_array(arr).copy(interpretation=interpretation).write_to_file(str(path))
    return path


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
                                  "truncated_jpeg", "garbage_tiff", "lab_tiff", "float_nan",
                                  "float_out_of_range", "int16", "multipage"])
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
    elif case == "lab_tiff":
        tifffile.imwrite(p, np.zeros((6, 5, 3), np.uint8), photometric="cielab")
    elif case == "float_nan":
        tifffile.imwrite(p, np.full((6, 5), np.nan, np.float32))
    elif case == "float_out_of_range":
        tifffile.imwrite(p, np.full((6, 5, 3), 3.0, np.float32), photometric="rgb")
    elif case == "int16":
        tifffile.imwrite(p, np.full((6, 5), -3, np.int16))
    elif case == "multipage":
        with tifffile.TiffWriter(p) as tw:
            tw.write(np.zeros((6, 5), np.uint8))
            tw.write(np.zeros((6, 5), np.uint8))
    capfd.readouterr()
    with pytest.raises(GigapatchError) as exc:
        read_image(p, what="reference")
    msg = str(exc.value)
    assert "\n" not in msg and str(p) in msg and msg.startswith("reference ")
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # libvips / tifffile warnings are kept off the terminal
    assert "VIPS_WARNING" not in os.environ
