"""Atomic writes: every file or folder gigapatch writes appears complete or not at all.

:func:`atomic_path` hands out a hidden temporary name beside the destination
(``.NAME.tmp-PID``), the caller writes there, and on a clean exit the result is flushed to
disk (``fsync``) and renamed over the destination in one step. When the body raises (an
error, Ctrl-C, a full disk), the temporary file or folder is removed and the destination is
left as it was. A crash (kill -9, power loss) can leave a hidden ``.NAME.tmp-PID`` behind,
never a file under the final name that looks finished. See
docs/file-formats.md#atomic-writes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_text", "temp_name"]


def temp_name(path: Path) -> Path:
    """The hidden temporary name of ``path`` for this process: ``.NAME.tmp-PID`` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(p)


def _fsync_file(p: Path) -> None:
    with open(p, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(p: Path) -> None:
    # makes the rename itself durable; not every file system lets a folder be opened
    with contextlib.suppress(OSError):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write ``path`` atomically: yield a temporary path to write, then rename it over ``path``.

    Parameters
    ----------
    path : str or PathLike
        The destination, a file or a folder (e.g. an ``.ome.zarr``). Its folder must exist.

    Yields
    ------
    Path
        ``.NAME.tmp-PID`` in the same folder (same file system, so the rename is atomic).
        The body creates it as a file or as a folder; a stale one from an earlier crash of a
        process with the same id is removed first.

    Notes
    -----
    A file is ``fsync``-ed before the rename. A folder replaces an existing destination in
    two renames (the old one is moved aside to ``.NAME.old-PID`` and removed afterwards),
    since a folder cannot be renamed over a non-empty one. If the body raises, the temporary
    file or folder is removed, the destination is untouched and the exception propagates.
    """
    dst = Path(os.fspath(path))
    tmp = temp_name(dst)
    if tmp.exists():
        _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir():
            if dst.exists():
                old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
                os.replace(dst, old)
                os.replace(tmp, dst)
                _remove(old)
            else:
                os.replace(tmp, dst)
        else:
            _fsync_file(tmp)
            os.replace(tmp, dst)
        _fsync_dir(dst.parent)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    dst = Path(os.fspath(path))
    with atomic_path(dst) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return dst
