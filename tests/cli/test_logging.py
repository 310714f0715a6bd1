"""Logging of the automatic choices: ``-v`` shows them, the default and ``-q`` do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from gigapatch.cli import main

DATA = Path(__file__).parents[1] / "data"
CHEAP = ["--set", "sampler.patch_size=5", "--set", "sampler.steps=2", "--set",
         "sampler.levels=2"]


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> str:
    from gigapatch.storage import read_image, write_image

    a, _ = read_image(DATA / "balloons.png")
    p = tmp_path_factory.mktemp("ref") / "ref.png"
    write_image(p, a[:24, :28])
    return str(p)


def test_verbose_logs_every_automatic_choice(tmp_path, capsys, ref):
    assert main(["generate", ref, "-o", str(tmp_path / "a.png"), "-v", *CHEAP]) == 0
    err = capsys.readouterr().err
    for words in ("gigapatch: device: cpu", "gigapatch: whole image in memory",
                  "gigapatch: 2 pyramid levels", "level 0: ", "level 1: ",
                  "backend (denoiser.backend=auto)"):
        assert words in err, (words, err)
    assert main(["generate", ref, "-o", str(tmp_path / "b.tif"), "-v", "--tiled",
                 "--tile", "64", *CHEAP]) == 0
    err = capsys.readouterr().err
    for words in ("gigapatch: tiled pipeline (--tiled, --tile)", "tiled, ",
                  "halo ", "tiles run on 1 local thread on cpu"):
        assert words in err, (words, err)


@pytest.mark.parametrize("flag", [[], ["-q"]])
def test_no_choices_logged_without_verbose(tmp_path, capsys, ref, flag):
    assert main(["generate", ref, "-o", str(tmp_path / "a.png"), *flag, *CHEAP]) == 0
    err = capsys.readouterr().err
    assert "pyramid level" not in err and "backend" not in err and "device" not in err
