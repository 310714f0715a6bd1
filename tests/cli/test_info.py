"""`gigapatch info` and `gigapatch --version`."""

from __future__ import annotations

from pathlib import Path

from .runner import CHEAP, run as _run


def test_info_prints_levels(capsys, ref24):
    code, stdout, err = _run(capsys, ["info", ref24, "--scale", "2", *CHEAP])
    assert code == 0, err
    assert "24x24" in stdout and "48x48" in stdout
    assert "level" in stdout and "dictionary" in stdout and "peak memory" in stdout
    # 3 levels at P=5 for a 24 px reference: 6x6, 12x12, 24x24
    assert "6x6" in stdout and "12x12" in stdout
    assert "400" in stdout  # 20*20 reference patches at the finest level


def test_info_example_image(capsys):
    example = Path(__file__).resolve().parents[2] / "examples" / "starry_night.png"
    code, stdout, err = _run(capsys, ["info", example, "--scale", "1.5x1"])
    assert code == 0, err
    assert "256x201" in stdout and "384x201" in stdout and "alpha dropped" in stdout


def test_version(capsys):
    code, stdout, _ = _run(capsys, ["--version"])
    assert code == 0 and stdout.startswith("gigapatch ")
