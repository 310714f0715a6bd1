"""The command line end to end: generate, info, and every bad input the user can cause
(exit code 2, one stderr line, no traceback, no output file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gigapatch
from gigapatch.cli import main
from gigapatch.storage import read_image, write_image

DATA = Path(__file__).parent / "data"
CHEAP = ["--set", "sampler.patch_size=5", "--set", "sampler.steps=3"]


@pytest.fixture(scope="module")
def ref24(tmp_path_factory) -> Path:
    """A 24x24 RGB crop of a real reference: enough texture, fast to sample."""
    a, _ = read_image(DATA / "balloons.png")
    path = tmp_path_factory.mktemp("ref") / "ref24.png"
    write_image(path, a[40:64, 60:84])
    return path


def _run(capsys, argv) -> tuple[int, str, str]:
    try:
        code = main([str(x) for x in argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _assert_user_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gigapatch: error: ")
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


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


def test_info_prints_levels(capsys, ref24):
    code, stdout, err = _run(capsys, ["info", ref24, "--scale", "2", *CHEAP])
    assert code == 0, err
    assert "24x24" in stdout and "48x48" in stdout
    assert "level" in stdout and "dictionary" in stdout and "peak memory" in stdout
    # 3 levels at P=5 for a 24 px reference: 6x6, 12x12, 24x24
    assert "6x6" in stdout and "12x12" in stdout
    assert "400" in stdout  # 20*20 reference patches at the finest level


def test_info_example_image(capsys):
    example = Path(__file__).parent.parent / "examples" / "starry_night.png"
    if not example.exists():
        pytest.skip("examples/ not present")
    code, stdout, err = _run(capsys, ["info", example, "--scale", "1.5x1"])
    assert code == 0, err
    assert "256x201" in stdout and "384x201" in stdout and "alpha dropped" in stdout


def test_version(capsys):
    code, stdout, _ = _run(capsys, ["--version"])
    assert code == 0 and stdout.startswith("gigapatch ")


def _bad_cases(tmp_path: Path, ref24: Path) -> dict[str, tuple[list, tuple[str, ...]]]:
    text = tmp_path / "notes.png"
    text.write_text("this is text, not an image\n")
    corrupt = tmp_path / "corrupt.png"
    data = (DATA / "balloons.png").read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    tiny = tmp_path / "tiny.png"
    write_image(tiny, np.full((10, 10, 3), 0.5, np.float32))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    o = tmp_path / "out" / "o.png"
    return {
        "missing file": (["generate", tmp_path / "nope.png", "-o", o], ("nope.png", "does not exist")),
        "corrupt file": (["generate", corrupt, "-o", o], ("corrupt.png",)),
        "text file": (["generate", text, "-o", o], ("notes.png",)),
        "too small for patch": (["generate", tiny, "-o", o], ("patch size",)),
        "size 0x10": (["generate", ref24, "-o", o, "--size", "0x10"], ("--size",)),
        "size abc": (["generate", ref24, "-o", o, "--size", "abc"], ("--size", "abc")),
        "size negative": (["generate", ref24, "-o", o, "--size=-4x10"], ("--size",)),
        "scale zero": (["generate", ref24, "-o", o, "--scale", "0"], ("--scale",)),
        "absurd size": (["generate", ref24, "-o", o, "--size", "100000x100000", *CHEAP],
                        ("100000x100000",)),
        "output smaller than patch": (["generate", ref24, "-o", o, "--size", "3x3", *CHEAP],
                                      ("3x3",)),
        "unknown config key": (["generate", ref24, "-o", o, "--set", "sampler.nope=1"],
                               ("sampler.nope",)),
        "bad config value": (["generate", ref24, "-o", o, "--set", "sampler.steps=0"],
                             ("sampler.steps",)),
        "malformed --set": (["generate", ref24, "-o", o, "--set", "steps"], ("steps",)),
        "missing config file": (["generate", ref24, "-o", o, "--config", tmp_path / "c.yaml"],
                                ("c.yaml",)),
        "missing output dir": (["generate", ref24, "-o", tmp_path / "nodir" / "o.png", *CHEAP],
                               ("nodir",)),
        "output dir is a file": (["generate", ref24, "-o", blocker / "o.png", *CHEAP],
                                 ("a_file",)),
        "bad output suffix": (["generate", ref24, "-o", tmp_path / "out" / "o.bmp", *CHEAP],
                              (".bmp",)),
        "16-bit jpeg": (["generate", ref24, "-o", tmp_path / "out" / "o.jpg", "--set",
                         "output.bit_depth=16", *CHEAP], ("JPEG",)),
        "bomb guard": (["generate", ref24, "-o", o, "--max-input-pixels", "100"],
                       ("--max-input-pixels",)),
        "bad seed": (["generate", ref24, "-o", o, "--seed", "x"], ("--seed",)),
        "zero samples": (["generate", ref24, "-o", o, "-n", "0"], ("-n",)),
        "info too small": (["info", tiny], ("patch size",)),
        "no command": ([], ("COMMAND",)),
    }


CASES = ["missing file", "corrupt file", "text file", "too small for patch", "size 0x10",
         "size abc", "size negative", "scale zero", "absurd size", "output smaller than patch",
         "unknown config key", "bad config value", "malformed --set", "missing config file",
         "missing output dir", "output dir is a file", "bad output suffix", "16-bit jpeg",
         "bomb guard", "bad seed", "zero samples", "info too small", "no command"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, ref24, case):
    (tmp_path / "out").mkdir()
    argv, words = _bad_cases(tmp_path, ref24)[case]
    code, stdout, err = _run(capsys, argv)
    _assert_user_error(code, err, *words)
    assert os.listdir(tmp_path / "out") == []  # nothing written, not even a temp file


def test_unwritable_output_is_refused_before_generating(tmp_path, capsys, ref24, monkeypatch):
    import gigapatch.api as api

    def must_not_run(*a, **k):
        raise AssertionError("generate ran although the output cannot be written")

    monkeypatch.setattr(api, "generate", must_not_run)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", denied)
    code, _, err = _run(capsys, ["generate", ref24, "-o", tmp_path / "o.png", *CHEAP])
    _assert_user_error(code, err, "o.png", "not writable")
    assert os.listdir(tmp_path) == []


def test_interrupt_exits_130_without_output(tmp_path, capsys, ref24, monkeypatch):
    import gigapatch.api as api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "generate", interrupted)
    code, _, err = _run(capsys, ["generate", ref24, "-o", tmp_path / "o.png", *CHEAP])
    assert code == 130 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_subprocess_exit_code_and_one_stderr_line(tmp_path):
    src = str(Path(gigapatch.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [src] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = tmp_path / "o.png"
    proc = subprocess.run([sys.executable, "-m", "gigapatch", "generate",
                           str(tmp_path / "missing.png"), "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gigapatch: error: "), proc.stderr
    assert "missing.png" in lines[0]
    assert proc.stdout == "" and not out.exists()
