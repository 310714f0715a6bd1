"""Byte-identical output check for refactors: sha256 of fixed-seed outputs, as JSON.

Run it before and after a change that must not change behaviour; every hash must match.

    python benchmarks/golden_outputs.py            # prints {"case": "sha256", ...}
    python benchmarks/golden_outputs.py --out golden.json

Cases (all on tests/data, CPU, a few seconds each on 2 cores):

* ``generate_default``: ``gigapatch.generate`` with the default preset (auto backend).
* ``generate_fast``: the default preset with ``denoiser.backend=fast`` (the fast backend's
  parameter plumbing from the config).
* ``generate_quality``: the ``quality`` preset (exact backend) with 2 steps on a crop.
* ``generate_retarget``: ``sampler.mode=retarget`` at 1.5x1.
* ``cli_tiled_tif`` / ``cli_tiled_level``: ``gigapatch generate --tiled --tile 64`` with the
  ``gigapixel`` preset: the written pyramidal TIFF and the finest stored level.
* ``cli_auto_tiled_png``: a PNG output the CLI tiles by itself (``tiling.global_max_pixels``).
* ``cli_info``: the text of ``gigapatch info``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha_array(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return _sha(f"{a.dtype}{a.shape}".encode() + a.tobytes())


def _cli(argv: list[str]) -> str:
    from gigapatch.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    if rc != 0:
        raise SystemExit(f"gigapatch {' '.join(argv)} exited {rc}: {err.getvalue()}")
    return out.getvalue()


def cases() -> dict[str, str]:
    from gigapatch import generate, load_config
    from gigapatch.pipeline import read_result
    from gigapatch.storage import read_image

    balloons = str(DATA / "balloons.png")
    bush = read_image(DATA / "wild_bush_crop.png")[0]
    res: dict[str, str] = {}
    res["generate_default"] = _sha_array(
        generate(bush, seed=0, config="default", device="cpu"))
    res["generate_fast"] = _sha_array(
        generate(bush, scale=(1.5, 1.0), seed=1, device="cpu",
                 config=load_config("default", ["denoiser.backend=fast"])))
    res["generate_quality"] = _sha_array(
        generate(bush[:40, :48], seed=2, device="cpu",
                 config=load_config("quality", ["sampler.steps=2"])))
    res["generate_retarget"] = _sha_array(
        generate(bush, scale=(1.5, 1.0), seed=3, device="cpu",
                 config=load_config("default", ["sampler.mode=retarget"])))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tiled.tif"
        _cli(["generate", balloons, "-o", str(out), "--tiled", "--tile", "64",
              "--config", "gigapixel", "--size", "200x150", "--seed", "4", "-q",
              "--set", "sampler.eta=0.5", "--device", "cpu", "--keep-run"])
        res["cli_tiled_tif"] = _sha(out.read_bytes())
        res["cli_tiled_level"] = _sha_array(read_result(str(out) + ".gp-run"))
        png = Path(tmp) / "auto.png"
        _cli(["generate", balloons, "-o", str(png), "--config", "gigapixel",
              "--size", "160x120", "--seed", "5", "-q", "--device", "cpu",
              "--set", "tiling.global_max_pixels=5000", "--set", "tiling.tile=64"])
        res["cli_auto_tiled_png"] = _sha(png.read_bytes())
    res["cli_info"] = _sha(_cli(["info", balloons, "--scale", "2"]).encode())
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the JSON here")
    a = ap.parse_args()
    text = json.dumps(cases(), indent=1, sort_keys=True)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
