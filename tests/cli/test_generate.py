"""`gigapatch generate` end to end: sizes, several samples, 16-bit, alpha and grey notes."""

from __future__ import annotations

import os

import numpy as np

from gigapatch.storage import read_image, write_image

from .runner import CHEAP, run as _run


def test_generate_writes_the_requested_size(tmp_path, capsys, ref24):
    out = tmp_path / "out.png"
    code, stdout, err = _run(capsys, ["generate", ref24, "-o", out, "--size", "32x20",
                                      "--seed", "3", *CHEAP])
    assert code == 0, err
    a, info = read_image(out)
    assert (info.width, info.height, info.channels) == (32, 20, 3)
    assert a.std() > 0.01  # an image, not a constant
    assert stdout.strip() == stdout.strip().splitlines()[0]
    assert stdout.startswith(f"wrote {out} (32x20, RGB, 8-bit)")
    assert [n for n in os.listdir(tmp_path) if n != "out.png"] == []


def test_generate_several_samples_scale_and_16bit(tmp_path, capsys, ref24):
    out = tmp_path / "s.tif"
    code, stdout, err = _run(capsys, ["generate", ref24, "-o", out, "-n", "2", "--scale",
                                      "1.5x1", "--quiet", "--set", "output.bit_depth=16",
                                      *CHEAP])
    assert code == 0, err
    assert err == ""  # --quiet: no progress, no notes
    names = sorted(os.listdir(tmp_path))
    assert names == ["s_000.tif", "s_001.tif"]
    a0, i0 = read_image(tmp_path / "s_000.tif")
    a1, _ = read_image(tmp_path / "s_001.tif")
    assert (i0.width, i0.height, i0.bit_depth) == (36, 24, 16)
    assert not np.array_equal(a0, a1)  # seeds 0 and 1
    assert len(stdout.strip().splitlines()) == 2


def test_generate_notes_dropped_alpha_and_grey(tmp_path, capsys, ref24):
    a, _ = read_image(ref24)
    import pyvips

    rgba = np.concatenate([np.rint(a * 255), np.full(a.shape[:2] + (1,), 255.0)], axis=2)
    src = tmp_path / "rgba.png"
    pyvips.Image.new_from_array(rgba.astype(np.uint8)).copy(
        interpretation="srgb").write_to_file(str(src))
    out = tmp_path / "o.png"
    code, stdout, err = _run(capsys, ["generate", src, "-o", out, "--set",
                                      "sampler.levels=1", *CHEAP])
    assert code == 0, err
    assert "alpha channel" in err and "ignored" in err
    assert read_image(out)[1].channels == 3

    grey = tmp_path / "grey.png"
    write_image(grey, a.mean(axis=2))
    code, stdout, err = _run(capsys, ["generate", grey, "-o", tmp_path / "g.png", "-q",
                                      "--set", "sampler.levels=1", *CHEAP])
    assert code == 0, err
    assert "grey" in stdout and read_image(tmp_path / "g.png")[1].channels == 1
