"""Disk space: what a tiled run will write, and refusing early when it cannot fit.

Estimates are upper bounds of the bytes on disk, from plain shapes (no config here):

* the run store (:func:`scratch_bytes`): the reference (its 8/16-bit samples, or float32),
  every level but the finest in float32, the quantised output pyramid, one done-marker
  file per task (a filesystem block each). Chunks are compressed (see ``runstore.store_codecs``), so the real store is
  smaller; noise-like content compresses little, so no compression is assumed.
* the output file (:func:`output_bytes`): the uncompressed pyramid (or level 0 alone for
  a PNG/JPEG), plus 1% for headers and tile tables.

:func:`check_free_space` compares them with ``shutil.disk_usage`` of the folders they go
to (summed when both are on one filesystem) before any work, and raises a one-line
:class:`~gigapatch.errors.GigapatchError` naming what to do. :func:`is_out_of_space` tells
a write that failed for lack of space (ENOSPC, EDQUOT, EFBIG) from other errors.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
from pathlib import Path
from typing import Sequence

from ..errors import GigapatchError

__all__ = ["scratch_bytes", "output_bytes", "check_free_space", "is_out_of_space",
           "used_bytes", "FS_BLOCK"]

#: bytes a small file takes on a typical filesystem (ext4, xfs: one 4 KiB block)
FS_BLOCK = 4096

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _area(hw: Sequence[int]) -> int:
    return int(hw[0]) * int(hw[1])


def scratch_bytes(*, ref_hw: Sequence[int], level_shapes: Sequence[Sequence[int]],
                  grid_shapes: Sequence[Sequence[int]], output_shapes: Sequence[Sequence[int]],
                  chunk: int, channels: int, out_itemsize: int, ref_itemsize: int = 4) -> int:
    """Peak bytes of a run store (an upper bound: uncompressed, a block per marker).

    Parameters
    ----------
    ref_hw : (h, w) of the reference
    level_shapes : (H_L, W_L) per level, coarsest first (the finest is not stored in float)
    grid_shapes : (ny_L, nx_L) tasks per level
    output_shapes : (h_r, w_r) per output pyramid level, full size first
    chunk : int
        Chunk side of the output pyramid (the tile core side).
    channels : int
    out_itemsize : {1, 2}
        Bytes per output sample (8- or 16-bit).
    ref_itemsize : {1, 2, 4}
        Bytes per stored reference sample (``model_space.exact_samples``: 1 for an 8-bit
        reference, 2 for 16-bit, 4 for float32 in model space).
    """
    c = int(channels)
    total = c * _area(ref_hw) * int(ref_itemsize)
    total += sum(c * _area(hw) * 4 for hw in level_shapes[:-1])
    total += sum(c * _area(hw) * out_itemsize for hw in output_shapes)
    markers = sum(_area(g) for g in grid_shapes)
    markers += sum(math.ceil(h / chunk) * math.ceil(w / chunk) for h, w in output_shapes[1:])
    return total + markers * FS_BLOCK


def output_bytes(output_shapes: Sequence[Sequence[int]], *, channels: int, out_itemsize: int,
                 pyramid: bool = True) -> int:
    """Upper bound of the output file: the uncompressed pyramid (level 0 alone when
    ``pyramid`` is False), plus 1% for headers and tile tables."""
    shapes = output_shapes if pyramid else output_shapes[:1]
    raw = sum(int(channels) * _area(hw) * out_itemsize for hw in shapes)
    return raw + raw // 100 + 64 * 1024


def used_bytes(path: str | os.PathLike) -> int:
    """Bytes already on disk under ``path`` (0 when it does not exist)."""
    p = Path(path)
    if not p.exists():
        return 0
    if p.is_file():
        return p.stat().st_blocks * 512
    return sum(f.stat().st_blocks * 512 for f in p.rglob("*") if f.is_file())


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (the filesystem it will be written on)."""
    p = Path(path).absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def check_free_space(needs: Sequence[tuple[str, str | os.PathLike, int]]) -> None:
    """Refuse a run whose writes cannot fit on disk, before any work.

    Parameters
    ----------
    needs : sequence of (what, path, bytes)
        E.g. ``("run store", RUN_DIR, scratch)``, ``("output", OUT, size)``: the bytes that
        will still be written under each path. Paths on one filesystem are summed.

    Raises
    ------
    GigapatchError
        One line: how much is needed where, how much is free, and what to do.
    """
    by_dev: dict[int, list[tuple[str, Path, int]]] = {}
    where: dict[int, Path] = {}
    for what, path, nbytes in needs:
        base = _existing(Path(path))
        dev = base.stat().st_dev
        by_dev.setdefault(dev, []).append((what, Path(path), max(0, int(nbytes))))
        where.setdefault(dev, base)
    for dev, items in by_dev.items():
        need = sum(n for _, _, n in items)
        free = shutil.disk_usage(where[dev]).free
        if need > free:
            parts = ", ".join(f"{what} {path} ~{_fmt(n)}" for what, path, n in items)
            raise GigapatchError(
                f"not enough free disk space: this run writes ~{_fmt(need)} ({parts}) but "
                f"{where[dev]} has {_fmt(free)} free; free some space, put the run store on "
                f"a larger disk (--run-dir) or make a smaller image")


def is_out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that failed for lack of space (or a file size limit)."""
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE
