"""Scoring a reference and its samples in one call, tables and listing image files.

This is the only metrics module (with :mod:`gigapatch.metrics.sheet`) that touches files:
:func:`list_images` finds them (they are read with :func:`gigapatch.storage.read_image`).
:func:`evaluate` itself is pure.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from gigapatch.device import resolve_device
from gigapatch.errors import GigapatchError
from gigapatch.metrics._common import as_image, finite_or_none
from gigapatch.metrics.copyrate import copy_rate
from gigapatch.metrics.diversity import pairwise_swd, pixel_diversity
from gigapatch.metrics.fidelity import fidelity
from gigapatch.metrics.frechet import patch_fd
from gigapatch.metrics.seams import seam_score
from gigapatch.metrics.nn import nn_patch_distances
from gigapatch.metrics.swd import patch_swd

__all__ = [
    "METRICS",
    "DEFAULT_METRICS",
    "IMAGE_SUFFIXES",
    "evaluate",
    "summarize",
    "format_table",
    "list_images",
    "mean_std",
]

#: Per-sample metrics, in table order, with a short description. Lower is better for the
#: first six (for copy rates: lower = more novel); psnr / max_abs_diff / seam need extra
#: inputs (an exact run, a tile size) and are computed only when those are given.
METRICS: dict[str, str] = {
    "swd": "multi-scale patch SWD (mean over levels), lower = closer patch statistics",
    "fd": "multi-scale patch Frechet distance (mean over levels), lower = closer",
    "coherence": "mean RMS distance of sample patches to nearest reference patch (artifacts)",
    "completeness": "mean RMS distance of reference patches to nearest sample patch (coverage)",
    "copy32": "fraction of 32x32 sample windows copied from the reference (< 2/255 MAD)",
    "copy64": "fraction of 64x64 sample windows copied from the reference (< 2/255 MAD)",
    "psnr": "PSNR (dB) of the sample against the exact run (inf = identical)",
    "max_abs_diff": "max abs difference of the sample to the exact run",
    "seam": "worst boundary/interior gradient ratio over Laplacian bands (~1 = no seams)",
}

#: What :func:`evaluate` computes when not told otherwise.
DEFAULT_METRICS: tuple[str, ...] = ("swd", "fd", "coherence", "completeness", "copy32", "copy64")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".ppm", ".pgm")


def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and std (ddof 0) of the finite values: ``{"mean", "std", "n"}``.

    None values are skipped; when every value is the same infinity (PSNR of identical runs)
    that infinity is the mean; with nothing left the mean and std are None.
    """
    given = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    v = [x for x in given if math.isfinite(x)]
    if not v:
        if given and all(x == given[0] for x in given):  # e.g. PSNR inf for every sample
            return {"mean": given[0], "std": 0.0, "n": len(given)}
        return {"mean": None, "std": None, "n": 0}
    a = np.asarray(v, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "n": len(v)}


def evaluate(
    reference: Any,
    samples: Sequence[Any],
    *,
    names: Sequence[str] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    diversity: bool = True,
    exact: Any = None,
    tile_size: int | tuple[int, int] | None = None,
    tile_origin: tuple[int, int] = (0, 0),
    seed: int = 0,
    swd_directions: int = 256,
    max_patches: int | None = 100_000,
    nn_queries: int | None = 2048,
    device: str | torch.device | None = "cpu",
) -> dict[str, Any]:
    """Score samples of one reference with every metric.

    Parameters
    ----------
    reference : numpy.ndarray or torch.Tensor
        The reference, (H, W) or (H, W, C).
    samples : sequence of arrays
        N >= 1 samples, each (H_i, W_i) or (H_i, W_i, C); sizes may differ.
    names : sequence of str, optional
        One label per sample (default ``"sample 0"``, ...).
    metrics : sequence of str
        Subset of :data:`DEFAULT_METRICS` to compute.
    diversity : bool
        Also compute pixel diversity (needs N >= 2 of one size) and pairwise SWD (N >= 2).
    exact : array, optional
        The exact sampler's output for the same seed: adds ``psnr`` and ``max_abs_diff`` of
        every sample against it (samples must have its shape).
    tile_size : int or (int, int), optional
        Tile size of a tiled run: adds ``seam`` (the worst ratio of
        :func:`gigapatch.metrics.seam_score`) and ``seam_bands`` per sample.
    tile_origin : (int, int)
        (y, x) origin of the tile grid.
    seed : int
        Seed of every projection and subsample.
    swd_directions : int
        Directions of the SWD (256).
    max_patches : int or None
        Patch subsample for SWD and FD.
    nn_queries : int or None
        Query subsample of coherence / completeness.
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.

    Returns
    -------
    dict
        ``reference`` (shape), ``n_samples``, ``samples`` (one dict per sample: name, shape,
        each metric; ``swd_levels`` / ``fd_levels`` per level; None where a metric does not
        apply, with the reason under ``notes``), ``summary`` (mean/std/n per metric) and
        ``diversity`` (``pixel``, ``pairwise_swd``, each None where not applicable).
    """
    unknown = [m for m in metrics if m not in DEFAULT_METRICS]
    if unknown:
        raise GigapatchError(
            f"metrics: unknown metric(s) {unknown}; choose from {list(DEFAULT_METRICS)}"
        )
    metrics = list(metrics)
    if len(samples) == 0:
        raise GigapatchError("metrics: no samples to evaluate; pass at least one sample")
    dev = resolve_device(device)
    ref = as_image(reference, name="reference", device=dev).permute(1, 2, 0)
    names = list(names) if names is not None else [f"sample {i}" for i in range(len(samples))]
    if len(names) != len(samples):
        raise GigapatchError(
            f"metrics: {len(names)} names for {len(samples)} samples; pass one name per sample"
        )
    imgs = [as_image(s, name=n, device=dev).permute(1, 2, 0) for s, n in zip(samples, names)]
    exact_img = None
    if exact is not None:
        exact_img = as_image(exact, name="exact run", device=dev).permute(1, 2, 0)
        metrics += ["psnr", "max_abs_diff"]
    if tile_size is not None:
        metrics += ["seam"]
    swd_kw = dict(n_directions=swd_directions, max_patches=max_patches, seed=seed, device=dev)
    cache: dict = {}
    rows = []
    for name, img in zip(names, imgs):
        row: dict[str, Any] = {"name": name, "shape": list(img.shape)}
        notes = []
        if "swd" in metrics:
            s = patch_swd(img, ref, cache=cache, **swd_kw)
            row["swd"], row["swd_levels"] = s.mean, s.levels
        if "fd" in metrics:
            f = patch_fd(img, ref, n_patches=max_patches, seed=seed, device=dev, cache=cache)
            row["fd"], row["fd_levels"] = f.mean, f.levels
        if "coherence" in metrics or "completeness" in metrics:
            nn = nn_patch_distances(img, ref, max_queries=nn_queries, seed=seed, device=dev)
            if "coherence" in metrics:
                row["coherence"] = nn.coherence
            if "completeness" in metrics:
                row["completeness"] = nn.completeness
        for key, win in (("copy32", 32), ("copy64", 64)):
            if key not in metrics:
                continue
            if min(img.shape[:2]) < win or min(ref.shape[:2]) < win:
                row[key] = None
                notes.append(f"{key}: image smaller than {win}x{win}")
            else:
                row[key] = copy_rate(img, ref, window=win, seed=seed, device=dev)
        if exact_img is not None:
            fid = fidelity(img, exact_img, device=dev)
            row["psnr"], row["max_abs_diff"] = fid["psnr"], fid["max_abs_diff"]
        if tile_size is not None:
            sc = seam_score(img, tile_size=tile_size, origin=tile_origin, device=dev)
            row["seam"], row["seam_bands"] = sc.worst, [sc.image, *sc.bands]
        if notes:
            row["notes"] = notes
        rows.append(row)

    div: dict[str, Any] = {"pixel": None, "pairwise_swd": None}
    if diversity and len(imgs) >= 2:
        if len({tuple(i.shape[:2]) for i in imgs}) == 1:
            div["pixel"] = pixel_diversity(imgs, ref, device=dev)
        else:
            div["pixel_note"] = "samples differ in size; pixel diversity needs one size"
        div["pairwise_swd"] = pairwise_swd(imgs, **swd_kw)
    elif diversity:
        div["note"] = "diversity needs at least 2 samples"
    return {
        "reference": {"shape": list(ref.shape)},
        "n_samples": len(imgs),
        "seed": seed,
        "samples": rows,
        "summary": summarize(rows, metrics=metrics),
        "diversity": div,
    }


def summarize(
    rows: Sequence[dict[str, Any]], *, metrics: Sequence[str] = tuple(METRICS)
) -> dict[str, dict[str, Any]]:
    """Mean +- std (ddof 0) over rows of each metric present: ``{metric: {mean, std, n}}``."""
    return {m: mean_std(r.get(m) for r in rows) for m in metrics if any(m in r for r in rows)}


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def format_table(report: dict[str, Any], *, markdown: bool = False) -> str:
    """A text (or markdown) table of an :func:`evaluate` report: one row per sample, then the
    mean +- std row and the diversity line."""
    metrics = [m for m in METRICS if m in report["summary"]]
    header = ["sample", "size"] + metrics
    body = []
    for r in report["samples"]:
        size = f"{r['shape'][1]}x{r['shape'][0]}"
        body.append([r["name"], size] + [_fmt(r.get(m)) for m in metrics])
    summ = report["summary"]
    body.append(
        [f"mean +- std (N={report['n_samples']})", ""]
        + [
            "-" if summ[m]["mean"] is None else f"{_fmt(summ[m]['mean'])} +- {_fmt(summ[m]['std'], 2)}"
            for m in metrics
        ]
    )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
        fmt_row = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths))  # noqa: E731
        lines = [fmt_row(header), "  ".join("-" * w for w in widths)]
        lines += [fmt_row(row) for row in body]
    d = report.get("diversity") or {}
    if d.get("pixel") is not None or d.get("pairwise_swd") is not None:
        lines.append("")
        lines.append(
            f"diversity: pixel {_fmt(d.get('pixel'))}, pairwise SWD {_fmt(d.get('pairwise_swd'))}"
        )
    return "\n".join(lines)


def jsonable(obj: Any) -> Any:
    """Replace NaN by None recursively (JSON has no NaN); inf is kept (Python json writes
    ``Infinity``)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return finite_or_none(obj)
    return obj


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def list_images(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (their image files, natural order) into a list of paths.

    Raises
    ------
    GigapatchError
        A path that does not exist, or a folder without images.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                (q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES),
                key=_natural_key,
            )
            if not found:
                raise GigapatchError(
                    f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                    "pass image files or a folder of them"
                )
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise GigapatchError(f"{p}: no such file or folder; check the path")
    return out
