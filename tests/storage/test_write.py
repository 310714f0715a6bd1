"""Writing images: round trips, dpi, atomic writes that leave nothing behind on failure,
the writability check before any work, numbered sample names."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile

from gigapatch.errors import GigapatchError
from gigapatch.storage import check_writable, numbered_path, read_image, write_image


RNG = np.random.default_rng(1234)


def _leftovers(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


@pytest.mark.parametrize("suffix,bit_depth,tol", [(".png", 8, 0.5 / 255), (".png", 16, 0.5 / 65535),
                                                  (".tif", 16, 0.5 / 65535),
                                                  (".tiff", 8, 0.5 / 255), (".jpg", 8, 0.15)])
@pytest.mark.parametrize("channels", [1, 3])
def test_write_read_roundtrip(tmp_path, suffix, bit_depth, tol, channels):
    x = RNG.random((11, 13, channels), dtype=np.float32)
    path = write_image(tmp_path / f"out{suffix}", x, bit_depth=bit_depth, dpi=300)
    a, info = read_image(path)
    assert a.shape == x.shape and info.bit_depth == bit_depth
    assert np.abs(a - x).max() <= tol + 1e-7
    assert _leftovers(tmp_path) == []


def test_write_dpi_and_clipping(tmp_path):
    x = np.linspace(-1, 2, 5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    write_image(tmp_path / "d.tif", x, dpi=300)
    with tifffile.TiffFile(tmp_path / "d.tif") as tif:
        page = tif.pages[0]
        assert page.resolution == pytest.approx((300, 300), rel=1e-3)
        assert page.tags["ResolutionUnit"].value == 2  # inch
        a = page.asarray()
    assert a.min() == 0 and a.max() == 255


def test_write_replaces_existing_file_atomically(tmp_path):
    path = tmp_path / "o.png"
    path.write_bytes(b"old")
    write_image(path, np.zeros((4, 4, 3), np.float32))
    assert read_image(path)[0].shape == (4, 4, 3)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["out.bmp", "out", "out.jpg"])
def test_write_bad_suffix_or_depth(tmp_path, name):
    with pytest.raises(GigapatchError) as exc:
        write_image(tmp_path / name, np.zeros((4, 4, 3)), bit_depth=16)
    assert name in str(exc.value)
    assert os.listdir(tmp_path) == []


def test_write_missing_folder(tmp_path):
    with pytest.raises(GigapatchError, match="does not exist"):
        write_image(tmp_path / "no" / "o.png", np.zeros((4, 4, 3)))


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    """A saver that dies half-way (disk full, Ctrl-C) leaves neither temp nor final file."""
    def broken_save(self, filename, **kw):
        Path(filename).write_bytes(b"\x89PNG half")
        raise pyvips.Error("write failed", "No space left on device")

    monkeypatch.setattr(pyvips.Image, "pngsave", broken_save)
    with pytest.raises(GigapatchError) as exc:
        write_image(tmp_path / "o.png", np.zeros((4, 4, 3)))
    assert "o.png" in str(exc.value) and "\n" not in str(exc.value)
    assert os.listdir(tmp_path) == []

    def interrupted_save(self, filename, **kw):
        Path(filename).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(pyvips.Image, "pngsave", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "o.png", np.zeros((4, 4, 3)))
    assert os.listdir(tmp_path) == []


def test_check_writable(tmp_path, monkeypatch):
    assert check_writable(tmp_path / "a.png") == tmp_path / "a.png"
    assert os.listdir(tmp_path) == []  # the probe is removed
    for bad, words in [(tmp_path / "a.gif", "suffix"), (tmp_path / "no" / "a.png", "does not exist"),
                       (tmp_path, "it is a folder")]:
        with pytest.raises(GigapatchError, match=words):
            check_writable(bad)
    (tmp_path / "file").write_text("x")
    with pytest.raises(GigapatchError, match="not a folder"):
        check_writable(tmp_path / "file" / "a.png")
    with pytest.raises(GigapatchError, match="JPEG"):
        check_writable(tmp_path / "a.jpg", bit_depth=16)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(GigapatchError, match="not writable"):
        check_writable(tmp_path / "a.png")


def test_check_writable_read_only_folder():
    # a folder the kernel refuses to create files in for every user, root included (a
    # chmod 0o500 folder does not stop root, who runs CI containers): Linux's /proc
    ro = Path("/proc")
    assert ro.is_dir()
    with pytest.raises(GigapatchError, match="not writable"):
        check_writable(ro / "a.png")
    assert not (ro / "a.png").exists()


def test_numbered_path():
    assert numbered_path("out.png", 0, 1) == Path("out.png")
    assert [numbered_path("d/out.png", i, 3).as_posix() for i in range(3)] == \
        ["d/out_000.png", "d/out_001.png", "d/out_002.png"]
    assert numbered_path("out.tif", 5, 1001) == Path("out_0005.tif")
    with pytest.raises(ValueError):
        numbered_path("out.png", 3, 3)
