"""`gigapatch eval`: JSON report and contact sheet, refusals, registration in the main CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from gigapatch.cli import main
from gigapatch.errors import GigapatchError


def _write_png(path: Path, arr: np.ndarray) -> None:
    import pyvips

    u8 = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    pyvips.Image.new_from_array(u8, interpretation="srgb").pngsave(str(path))


def _eval_parser() -> argparse.ArgumentParser:
    from gigapatch.cli_eval import add_eval_parser

    parser = argparse.ArgumentParser(prog="gigapatch")
    sub = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(sub)
    return parser


def test_eval_cli_writes_json_and_sheet(tmp_path, ref, shifted, noise, capsys):
    _write_png(tmp_path / "ref.png", ref)
    samples = tmp_path / "samples"
    samples.mkdir()
    _write_png(samples / "s_2.png", noise)
    _write_png(samples / "s_10.png", shifted)
    args = _eval_parser().parse_args([
        "eval", str(tmp_path / "ref.png"), str(samples), "--json", str(tmp_path / "r.json"),
        "--sheet", str(tmp_path / "sheet.png"), "--metrics", "swd,copy32", "-q",
    ])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "s_2.png" in out and "mean +- std" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert [r["name"] for r in rep["samples"]] == ["s_2.png", "s_10.png"]  # natural order
    assert rep["samples"][0]["swd"] > rep["samples"][1]["swd"]
    assert (tmp_path / "sheet.png").stat().st_size > 0


def test_eval_cli_refuses_missing_files(tmp_path, ref):
    _write_png(tmp_path / "ref.png", ref)
    args = _eval_parser().parse_args(["eval", str(tmp_path / "ref.png"), str(tmp_path / "nope")])
    with pytest.raises(GigapatchError, match="nope"):
        args.func(args)
    empty = tmp_path / "empty"
    empty.mkdir()
    args = _eval_parser().parse_args(["eval", str(tmp_path / "ref.png"), str(empty)])
    with pytest.raises(GigapatchError, match="no images"):
        args.func(args)


def test_eval_is_registered_in_main_cli(tmp_path, ref, capsys):
    _write_png(tmp_path / "ref.png", ref)
    rc = main(["eval", str(tmp_path / "ref.png"), str(tmp_path / "ref.png"),
                   str(tmp_path / "missing.png"), "-q"])
    assert rc == 2  # GigapatchError -> exit status 2 with a one-line message
    assert "missing.png" in capsys.readouterr().err
