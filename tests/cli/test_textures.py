"""`gigapatch generate --tileable / --symmetry`: the flags reach the sampler, the rounded
size is announced, and what cannot wrap is refused in one line."""

from __future__ import annotations

import os

import numpy as np

from gigapatch.storage import read_image

from .runner import CHEAP, assert_user_error, run as _run


def test_tileable_flag_rounds_the_size_and_says_so(tmp_path, capsys, ref24):
    out = tmp_path / "t.png"
    code, stdout, err = _run(capsys, ["generate", ref24, "-o", out, "--size", "33x30",
                                      "--tileable", "xy", "--set", "sampler.levels=2",
                                      *CHEAP])
    assert code == 0, err
    _, info = read_image(out)
    assert (info.width, info.height) == (34, 30)
    assert "34x30 (asked 33x30" in err
    assert stdout.startswith(f"wrote {out} (34x30")
    # the default preset's composition priors do not apply on a torus: said, not refused
    assert "without the composition priors" in err


def test_no_prior_note_without_priors(tmp_path, capsys, ref24):
    out = tmp_path / "t.png"
    code, _, err = _run(capsys, ["generate", ref24, "-o", out, "--size", "32x24",
                                 "--tileable", "x", "--config", "paper",
                                 "--set", "sampler.levels=2", *CHEAP])
    assert code == 0, err
    assert "composition priors" not in err


def test_symmetry_flag(tmp_path, capsys, ref24):
    out = tmp_path / "s.png"
    code, _, err = _run(capsys, ["generate", ref24, "-o", out, "--size", "31x24",
                                 "--symmetry", "x", *CHEAP])
    assert code == 0, err
    a, _ = read_image(out)
    assert np.array_equal(a, a[:, ::-1])


def test_tileable_retarget_is_refused(tmp_path, capsys, ref24):
    out = tmp_path / "r.png"
    code, _, err = _run(capsys, ["generate", ref24, "-o", out, "--tileable", "x",
                                 "--set", "sampler.mode=retarget", *CHEAP])
    assert_user_error(code, err, "sampler.tileable", "retarget")
    assert os.listdir(tmp_path) == []
