"""Every bad input the user can cause: exit code 2, one stderr line, no traceback, no
output file; Ctrl-C exits 130; the real process's exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gigapatch
from gigapatch.storage import write_image

from ..helpers import DATA
from .runner import CHEAP, assert_user_error as _assert_user_error, run as _run


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
