"""User mistakes on the command line: one stderr line in CLI words (``--seed``, never
``seed=``), exit 2, no output; and a bad-input corpus of files a new user would try (read as
a viewer shows them, or refused with one line)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile
from PIL import Image, ImageOps

from gigapatch.storage import read_image

from .runner import assert_user_error as _assert_user_error
from .runner import run as _run

CHEAP = ["--set", "sampler.patch_size=5", "--set", "sampler.steps=2"]
RNG = np.random.default_rng(3)


# ------------------------------------------------------------------------------ CLI

@pytest.fixture()
def ref_png(tmp_path, ref_u8) -> Path:
    p = tmp_path / "ref.png"
    Image.fromarray(ref_u8).save(p)
    return p


@pytest.mark.parametrize("argv,out_name,words", [
    (["--seed", str(2**64)], "o.png", ["--seed", "0..2**63-1"]),
    (["--seed", "-1"], "o.png", ["--seed -1", "0..2**63-1"]),
    (["--seed", str(2**63 - 1), "-n", "2"], "o.png", ["last of 2 samples"]),
    (["--tiled", "--tile", "100"], "o.tif", ["--tile", "multiple of 64", "128"]),
    (["--format", "png"], "o.tif", ["--format png", "o.tif", "*.png"]),
    ([], "o.webp", ["o.webp", "suffix '.webp'"]),
    (["--page", "-2"], "o.png", ["--page", "page number"]),
])
def test_cli_option_mistakes(tmp_path, capsys, ref_png, argv, out_name, words):
    out = tmp_path / out_name
    code, _, err = _run(capsys, ["generate", ref_png, "-o", out, *argv, *CHEAP])
    _assert_user_error(code, err, *words)
    assert "tiled pipeline" not in err and "size=" not in err
    assert not out.exists()


def test_cli_folder_output(tmp_path, capsys, ref_png):
    code, _, err = _run(capsys, ["generate", ref_png, "-o", tmp_path, *CHEAP])
    _assert_user_error(code, err, "is a folder", "out.png")


def test_scale_help_says_what_2x1_means(capsys):
    code, out, _ = _run(capsys, ["generate", "--help"])
    text = " ".join(out.split())
    assert "2x1 doubles the width and keeps the height" in text


# ------------------------------------------------- bad-input corpus through the CLI

def _exif_rotated(p: Path) -> Path:
    a = RNG.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    ex = im.getexif()
    ex[0x0112] = 6  # phone held upright: stored sideways, shown rotated 90 clockwise
    im.save(p, "JPEG", exif=ex.tobytes(), quality=95)
    return p


def _corpus(tmp_path: Path, case: str) -> Path:
    p = tmp_path / f"{case}.tif"
    if case == "exif_rotated":
        return _exif_rotated(tmp_path / "phone.jpg")
    if case == "multipage":
        with tifffile.TiffWriter(p) as tw:
            for _ in range(3):
                tw.write(RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8), photometric="rgb")
    elif case == "zstd":
        tifffile.imwrite(p, RNG.integers(0, 65536, (32, 32, 3), dtype=np.uint16),
                         photometric="rgb", compression="zstd", tile=(16, 16))
    elif case == "palette":
        p = tmp_path / "palette.png"
        im = Image.fromarray(RNG.integers(0, 8, (20, 24), dtype=np.uint8), "P")
        im.putpalette(RNG.integers(0, 256, 24).tolist())
        im.save(p)
    elif case == "cmyk":
        tifffile.imwrite(p, RNG.integers(0, 256, (20, 24, 4), dtype=np.uint8),
                         photometric="separated")
    elif case == "alpha16":
        p = tmp_path / "alpha16.png"
        pyvips.Image.new_from_array(RNG.integers(0, 65536, (20, 24, 4), dtype=np.uint16)) \
            .copy(interpretation="rgb16").pngsave(str(p))
    elif case == "float_nan":
        a = RNG.random((20, 24, 3)).astype(np.float32)
        a[3, 4, 1] = np.nan
        tifffile.imwrite(p, a, photometric="rgb")
    return p


def _oracle(p: Path, case: str) -> np.ndarray:
    """What a viewer shows, decoded by Pillow / tifffile independently of our reader."""
    if case in ("exif_rotated", "palette"):
        im = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        return np.asarray(im).astype(np.float32) / 255
    if case == "alpha16":
        return pyvips.Image.new_from_file(str(p)).numpy()[:, :, :3].astype(np.float32) / 65535
    a = tifffile.imread(p).astype(np.float32)
    if case == "zstd":
        return a / 65535
    c = a / 255  # cmyk
    return (1 - c[:, :, :3]) * (1 - c[:, :, 3:])


@pytest.mark.parametrize("case,readable", [
    ("exif_rotated", True), ("multipage", False), ("zstd", True), ("palette", True),
    ("cmyk", True), ("alpha16", True), ("float_nan", False)])
def test_bad_input_corpus(tmp_path, capsys, case, readable):
    """Each file is read as a viewer shows it (values against an independent decoder, and
    the CLI's output has the shown size), or refused: exit 2, one line, no output."""
    p = _corpus(tmp_path, case)
    out = tmp_path / "out.png"
    code, stdout, err = _run(capsys, ["generate", p, "-o", out, *CHEAP])
    if not readable:
        _assert_user_error(code, err, str(p))
        assert not out.exists() and os.listdir(tmp_path) == [p.name]
        return
    assert code == 0, err
    r, info = read_image(p)
    oracle = _oracle(p, case)
    tol = 2 / 255 if case == "exif_rotated" else 1e-6
    assert r.shape == oracle.shape and np.abs(r - oracle).max() <= tol
    shown_h, shown_w = oracle.shape[:2]
    o, _ = read_image(out)
    assert o.shape == (shown_h, shown_w, 3) and o.max() > 0.2  # not black, not sideways
    notes = [line for line in err.splitlines() if line.startswith("gigapatch: note:")]
    assert len(notes) == len(info.notes)
    if case == "exif_rotated":
        code, _, err = _run(capsys, ["generate", p, "-o", out, "-q", *CHEAP])
        assert code == 0 and "note" not in err  # -q silences notes


def test_cli_page_picks_one_page(tmp_path, capsys):
    p = _corpus(tmp_path, "multipage")
    code, out, err = _run(capsys, ["info", p, "--page", "2", *CHEAP])
    assert code == 0, err
    assert "24x20" in out
    code, _, err = _run(capsys, ["info", p, "--page", "3"])
    _assert_user_error(code, err, "--page 3 is out of range, use 0..2")


def test_multiband_reference_gives_a_multiband_tiff(tmp_path, capsys, ref_u8):
    """RGB + NIR (ExtraSamples unspecified): every band is sampled and written; a PNG output
    is refused before any sampling (no progress bar, no file)."""
    rgbn = np.concatenate([ref_u8, ref_u8[:, :, 1:2] // 2], axis=2).astype(np.uint16) * 257
    p = tmp_path / "rgbn.tif"
    tifffile.imwrite(p, rgbn, photometric="rgb", extrasamples=["unspecified"])
    code, _, err = _run(capsys, ["generate", p, "-o", tmp_path / "o.png", *CHEAP])
    _assert_user_error(code, err, "4 bands", "write a .tif")
    assert not (tmp_path / "o.png").exists()
    code, out, err = _run(capsys, ["generate", p, "-o", tmp_path / "o.tif", "-q", *CHEAP])
    assert code == 0, err
    assert "4-band" in out
    r, info = read_image(tmp_path / "o.tif")
    assert r.shape == (20, 24, 4) and not info.had_alpha


def test_readme_troubleshooting_quotes_are_the_printed_messages(tmp_path, capsys):
    """The README's troubleshooting table quotes these messages (X = the file, N = the
    seed): each is what the CLI prints."""
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    stack = _corpus(tmp_path, "multipage")
    nan = _corpus(tmp_path, "float_nan")
    lab = tmp_path / "lab.tif"
    tifffile.imwrite(lab, np.zeros((20, 24, 3), np.uint8), photometric="cielab")
    i16 = tmp_path / "i16.tif"
    tifffile.imwrite(i16, np.full((20, 24), 7, np.int16))
    cases = [(stack, [], "reference X has 3 pages; pick one with --page N (0..2)"),
             (nan, [], "reference X holds NaN or infinite values"),
             (lab, [], "reference X is a CIELAB TIFF"),
             (i16, [], "has int16 samples"),
             (stack, ["--seed", "-5"], "--seed N: the seed must lie in 0..2**63-1")]
    for path, extra, quoted in cases:
        assert f"`{quoted}`" in readme, quoted
        code, _, err = _run(capsys, ["generate", path, "-o", tmp_path / "o.png", *extra])
        _assert_user_error(code, err)
        printed = err.replace(str(path), "X").replace("-5", "N")
        assert quoted in printed, (quoted, printed)
