"""`gigapatch generate REF --with MAP ... / --alpha keep`: one aligned output per map,
named OUT_<map>.<suffix>; bad stacks refused in one line with nothing written."""

from __future__ import annotations

import os

import numpy as np

from gigapatch.storage import read_image, write_image

from .runner import CHEAP, assert_user_error, run as _run


def test_map_stack_writes_one_aligned_output_per_map(tmp_path, capsys, ref24):
    a, _ = read_image(ref24)
    inv = tmp_path / "inverse.png"
    write_image(inv, 1.0 - a.mean(axis=2), bit_depth=16)  # grey 16-bit beside RGB 8-bit
    out = tmp_path / "o" / "out.png"
    out.parent.mkdir()
    code, stdout, err = _run(capsys, ["generate", ref24, "--with", inv, "-o", out,
                                      "--size", "30x26", "--set", "output.bit_depth=16",
                                      *CHEAP])
    assert code == 0, err
    assert sorted(os.listdir(out.parent)) == ["out.png", "out_inverse.png"]
    o1, i1 = read_image(out)
    o2, i2 = read_image(out.parent / "out_inverse.png")
    assert (i1.channels, i2.channels, i1.width, i2.height) == (3, 1, 30, 26)
    np.testing.assert_allclose(o2[:, :, 0], 1.0 - o1.mean(axis=2), atol=3 / 65535)
    assert len(stdout.strip().splitlines()) == 2


def test_yaml_map_list_and_weights(tmp_path, capsys, ref24):
    a, _ = read_image(ref24)
    write_image(tmp_path / "rough.png", a[:, :, :1])
    (tmp_path / "maps.yaml").write_text("- {path: rough.png, weight: 0.3}\n")
    out = tmp_path / "m.png"
    code, _, err = _run(capsys, ["generate", ref24, "--with", tmp_path / "maps.yaml", "-o",
                                 out, *CHEAP])
    assert code == 0, err
    assert (tmp_path / "m_rough.png").is_file()
    code, _, err = _run(capsys, ["generate", ref24, "--with", tmp_path / "rough.png", "-o",
                                 out, "--map-weights", "1", *CHEAP])
    assert_user_error(code, err, "--map-weights", "2 numbers")


def test_alpha_keep_writes_rgba(tmp_path, capsys, ref24):
    a, _ = read_image(ref24)
    yy = np.linspace(0, 1, a.shape[0], dtype=np.float32)[:, None, None]
    rgba = np.concatenate([a, np.broadcast_to(yy, a.shape[:2] + (1,))], axis=2)
    src = tmp_path / "rgba.png"
    import pyvips

    pyvips.Image.new_from_array(np.rint(rgba * 255).astype(np.uint8)).copy(
        interpretation="srgb").write_to_file(str(src))
    out = tmp_path / "out.png"
    code, stdout, err = _run(capsys, ["generate", src, "-o", out, "--alpha", "keep", *CHEAP])
    assert code == 0, err
    assert "RGB+alpha" in stdout
    kept, info = read_image(out, alpha="keep")
    assert info.alpha_kept and kept.shape[2] == 4
    assert kept[:, :, 3].std() > 0.05  # the alpha is sampled, not constant
    _, dropped = read_image(out)
    assert dropped.had_alpha and dropped.channels == 3


def test_bad_stacks_are_refused_with_nothing_written(tmp_path, capsys, ref24):
    a, _ = read_image(ref24)
    small = tmp_path / "small.png"
    write_image(small, a[:20])
    out = tmp_path / "out.png"
    code, _, err = _run(capsys, ["generate", ref24, "--with", small, "-o", out, *CHEAP])
    assert_user_error(code, err, "small.png is 24x20", "same size")
    code, _, err = _run(capsys, ["generate", ref24, "--with", ref24, "-o", out, "--tiled",
                                 *CHEAP])
    assert_user_error(code, err, "whole-image path")
    code, _, err = _run(capsys, ["generate", ref24, "--with", ref24, "-o", tmp_path / "o.jpg",
                                 "--normalize-normals", *CHEAP])
    assert_user_error(code, err, "--normalize-normals", "no normal map")
    assert sorted(os.listdir(tmp_path)) == ["small.png"]


def test_float_normal_map_in_minus_one_to_one(tmp_path, capsys, ref24):
    # a float TIFF normal map in [-1, 1]: accepted, renormalised, written back as a float32
    # TIFF in [-1, 1] beside the albedo (.tif output) or 8-bit encoded (.png output)
    import tifffile

    a, _ = read_image(ref24)
    g = a.mean(axis=2)
    v = np.stack([0.8 * (2 * g - 1), 0.6 * (1 - 2 * g), np.full_like(g, 0.5)], 2)
    n = (v / np.linalg.norm(v, axis=2, keepdims=True)).astype(np.float32)
    tifffile.imwrite(tmp_path / "normal.tif", n, photometric="rgb")
    out = tmp_path / "out.tif"
    code, stdout, err = _run(capsys, ["generate", ref24, "--with", tmp_path / "normal.tif",
                                      "-o", out, "--normalize-normals", "--size", "30x26",
                                      *CHEAP])
    assert code == 0, err
    assert "out_normal.tif (30x26, RGB, float32 in [-1, 1])" in stdout
    m = tifffile.imread(tmp_path / "out_normal.tif")
    assert m.dtype == np.float32 and m.shape == (26, 30, 3) and m.min() < -0.1
    np.testing.assert_allclose(np.linalg.norm(m.astype(np.float64), axis=2), 1.0, atol=1e-5)
    code, stdout, err = _run(capsys, ["generate", ref24, "--with", tmp_path / "normal.tif",
                                      "-o", tmp_path / "p.png", "--normalize-normals",
                                      "--size", "30x26", *CHEAP])
    assert code == 0, err
    enc, info = read_image(tmp_path / "p_normal.png")
    assert info.bit_depth == 8
    np.testing.assert_allclose(np.linalg.norm(2.0 * enc - 1.0, axis=2), 1.0, atol=0.02)
