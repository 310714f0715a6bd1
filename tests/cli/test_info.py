"""`gigapatch info` and `gigapatch --version`."""

from __future__ import annotations

from pathlib import Path

from .runner import CHEAP, run as _run


def test_info_prints_levels(capsys, ref24):
    code, stdout, err = _run(capsys, ["info", ref24, "--scale", "2", *CHEAP])
    assert code == 0, err
    assert "24x24" in stdout and "48x48" in stdout
    assert "level" in stdout and "index" in stdout and "window" in stdout \
        and "peak memory" in stdout
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


def test_info_shows_halo_cost_per_level_and_warns_on_small_tiles(capsys, ref24):
    # CHEAP: P=5, T=3 -> halo 12 + 2*10 = 32 on blended levels
    code, out, err = _run(capsys, ["info", ref24, "--size", "3000x3000", "--tiled", *CHEAP])
    assert code == 0, err
    assert "tile 1024 (auto)" in out  # (1 + 64/1024)^2 = 1.13 <= 1.2; 512 would be 1.27
    assert "halo   32" in out and "computed/output" in out and "warning" not in out
    code, out, err = _run(capsys, ["info", ref24, "--size", "3000x3000", "--tile", "64",
                                   *CHEAP])
    assert code == 0, err
    assert "tile 64;" in out and "tiles  2209" in out  # ceil(3000/64)^2 = 47^2
    assert "warning: tile 64 is under 4x the halo (32 px)" in out


def test_info_shows_each_fast_levels_query_stride(capsys, ref24):
    # 48x48 output, P = 5, fast everywhere: 12x12 and 24x24 are within full_stride_pixels
    # (stride 1), 48x48 (2304 px) is not with the threshold at 1000
    code, stdout, err = _run(capsys, ["info", ref24, "--scale", "2", *CHEAP,
                                      "--set", "denoiser.backend=fast",
                                      "--set", "denoiser.full_stride_pixels=1000"])
    assert code == 0, err
    rows = {line.split()[2]: line for line in stdout.splitlines()
            if line.strip()[:1].isdigit() and "x" in line}
    assert rows["24x24"].endswith("fast, stride 1")
    assert rows["48x48"].endswith("fast, stride 2")


def test_info_says_which_priors_the_run_takes(capsys, ref24):
    """The default's composition priors are listed; the paper preset and a tileable output
    (which drops them) say none. Kills: the line reading the config instead of
    prior_settings (a tileable run would list priors it does not take)."""
    code, stdout, err = _run(capsys, ["info", ref24, *CHEAP])
    assert code == 0, err
    line = next(s for s in stdout.splitlines() if s.startswith("priors:"))
    assert "t0=0.9" in line and "position 30 (y)" in line and "usage 3" in line
    for extra in (["--config", "paper"], ["--tileable", "xy"]):
        code, stdout, err = _run(capsys, ["info", ref24, *extra, *CHEAP])
        assert code == 0, err
        assert "priors:    none (the paper's sampler)" in stdout, extra
