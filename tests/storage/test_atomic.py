"""storage.atomic: a write appears complete under its final name, or not at all.

Mutants killed: "write in place / rename before the body" (test_raise_leaves_no_final_file,
test_raise_keeps_previous_file), "no cleanup on error" (no hidden temp left), "no fsync
before the rename" (test_fsync_before_rename), "folder rename over an existing folder"
(test_folder_replaces_existing).
"""

from __future__ import annotations

import os

import pytest

from gigapatch.storage import atomic
from gigapatch.storage.atomic import atomic_path, atomic_write_text


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_renames_temp_over_destination(tmp_path):
    dst = tmp_path / "out.bin"
    with atomic_path(dst) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.tmp-")
        tmp.write_bytes(b"payload")
        assert not dst.exists()  # nothing under the final name while writing
    assert dst.read_bytes() == b"payload"
    assert _names(tmp_path) == ["out.bin"]


def test_raise_leaves_no_final_file(tmp_path):
    dst = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(dst) as tmp:
            tmp.write_bytes(b"half of it")
            raise RuntimeError("disk full")
    assert _names(tmp_path) == []  # no final file and no temp file


def test_raise_keeps_previous_file(tmp_path):
    dst = tmp_path / "out.bin"
    dst.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(dst) as tmp:
            tmp.write_bytes(b"new but incomplete")
            raise KeyboardInterrupt
    assert dst.read_bytes() == b"old"
    assert _names(tmp_path) == ["out.bin"]


def test_fsync_before_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(atomic.os, "replace",
                        lambda a, b: (events.append("replace"), real_replace(a, b)))
    atomic_write_text(tmp_path / "a.json", "{}")
    assert events[:2] == ["fsync", "replace"]


def test_folder_replaces_existing(tmp_path):
    dst = tmp_path / "img.ome.zarr"
    (dst / "0").mkdir(parents=True)
    (dst / "0" / "old").write_text("old")
    with atomic_path(dst) as tmp:
        (tmp / "0").mkdir(parents=True)
        (tmp / "0" / "new").write_text("new")
    assert _names(dst / "0") == ["new"]
    assert _names(tmp_path) == ["img.ome.zarr"]  # neither the temp nor the old copy is left


def test_folder_raise_keeps_previous_folder(tmp_path):
    dst = tmp_path / "img.ome.zarr"
    dst.mkdir()
    (dst / "keep").write_text("old")
    with pytest.raises(OSError):
        with atomic_path(dst) as tmp:
            tmp.mkdir()
            (tmp / "part").write_text("half")
            raise OSError("copy failed")
    assert _names(dst) == ["keep"]
    assert _names(tmp_path) == ["img.ome.zarr"]


def test_stale_temp_from_a_crash_is_replaced(tmp_path):
    dst = tmp_path / "out.txt"
    stale = atomic.temp_name(dst)
    stale.mkdir()  # a crashed folder write of a process with our pid
    atomic_write_text(dst, "fresh")
    assert dst.read_text() == "fresh"
    assert _names(tmp_path) == ["out.txt"]
