"""Write small output images (PNG, JPEG, plain TIFF); reading lives in :mod:`.read`.

Every problem a user can fix (an unknown suffix, an unwritable output) raises
:class:`~gigapatch.errors.GigapatchError` with ONE line that names the file and says what
to do; libvips' own warnings are kept off stderr.

Writing is atomic: the image goes to a hidden temporary name in the target folder
(``.out.png.tmp-<pid>``) and is renamed over the final name only once complete, so a crash
or an interrupt never leaves a file that looks finished. Large, pyramidal outputs are the
job of the tiled writers, not of :func:`write_image`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import GigapatchError
from .atomic import atomic_path
from .quantise import quantise
from .read import DEFAULT_MAX_INPUT_PIXELS, ImageInfo, quiet_vips, read_image

__all__ = [
    "ImageInfo",
    "read_image",
    "write_image",
    "check_writable",
    "numbered_path",
    "WRITE_SUFFIXES",
    "DEFAULT_MAX_INPUT_PIXELS",
]

#: Output suffixes :func:`write_image` knows, and the image format each one means.
WRITE_SUFFIXES = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg",
                  ".jpeg": "jpeg"}


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------

def _output_format(path: Path, bit_depth: int, channels: int = 3, alpha: bool = False) -> str:
    fmt = WRITE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        got = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise GigapatchError(f"output {path} has {got}; use .png, .tif/.tiff or .jpg/.jpeg")
    if bit_depth not in (8, 16):
        raise GigapatchError(f"output {path}: bit depth {bit_depth} is not supported; use 8 "
                             f"or 16 (output.bit_depth)")
    if fmt == "jpeg" and bit_depth != 8:
        raise GigapatchError(f"output {path}: JPEG holds 8 bits only; write .png or .tif for "
                             f"16-bit output, or set output.bit_depth=8")
    if alpha:
        if channels not in (2, 4):
            raise ValueError(f"an image with alpha has 2 or 4 channels, got {channels}")
        if fmt == "jpeg":
            raise GigapatchError(f"cannot write output {path}: JPEG has no alpha channel; "
                                 f"write a .png or .tif to keep alpha, or drop --alpha keep")
    elif channels not in (1, 3) and fmt != "tiff":
        raise GigapatchError(f"cannot write output {path}: the image has {channels} bands "
                             f"(like its reference), which {fmt.upper()} cannot hold; write "
                             f"a .tif")
    return fmt


def _folder_problem(folder: Path, path: Path) -> str | None:
    if not folder.exists():
        return f"the folder {folder} does not exist; create it first or choose another path"
    if not folder.is_dir():
        return f"{folder} is not a folder; choose another output path"
    return None


def check_writable(path: str | os.PathLike, *, bit_depth: int = 8, channels: int = 3,
                   alpha: bool = False) -> Path:
    """Check, before any expensive work, that ``path`` can be written by :func:`write_image`.

    Validates the suffix (and bit depth for it), that the folder exists, that ``path`` is
    not a folder, and that a file can be created in the folder (a hidden probe file is
    created and deleted). Returns the path as a :class:`~pathlib.Path`.

    Raises
    ------
    GigapatchError
        Naming the path and what to do.
    """
    p = Path(os.fspath(path))
    if p.is_dir():
        raise GigapatchError(f"cannot write output {p}: it is a folder; give a file name such "
                             f"as {p / 'out.png'}")
    _output_format(p, bit_depth, channels, alpha)
    folder = p.parent
    problem = _folder_problem(folder, p)
    if problem:
        raise GigapatchError(f"cannot write output {p}: {problem}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.check-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise GigapatchError(f"cannot write output {p}: the folder {folder} is not writable "
                             f"({reason}); choose another folder or fix its permissions") \
            from None
    os.close(fd)
    os.unlink(probe)
    return p


def numbered_path(path: str | os.PathLike, i: int, n: int) -> Path:
    """The file name of sample ``i`` of ``n``.

    One sample (``n <= 1``) keeps ``path`` as given. Several samples get a zero-padded
    index before the suffix, at least 3 digits: ``out.png`` -> ``out_000.png``,
    ``out_001.png``, ... (``out_0000.png`` ... for 1001 or more samples).
    """
    p = Path(os.fspath(path))
    if n <= 1:
        return p
    if not 0 <= i < n:
        raise ValueError(f"sample index {i} outside 0..{n - 1}")
    width = max(3, len(str(n - 1)))
    return p.with_name(f"{p.stem}_{i:0{width}d}{p.suffix}")


def _quantise_for_write(array: np.ndarray, bit_depth: int) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or min(a.shape) < 1:
        raise ValueError(f"write_image expects (H, W) or (H, W, C), got {a.shape}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"write_image expects numbers, got {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError("write_image got NaN or infinite values")
    return quantise(a, bit_depth)


def write_image(path: str | os.PathLike, array: np.ndarray, *, bit_depth: int = 8,
                dpi: float | None = None, metadata=None,
                alpha: bool = False) -> Path:
    """Write an image in [0, 1] as PNG, JPEG or plain TIFF (by suffix), atomically.

    Parameters
    ----------
    path : str or PathLike
        ``.png``, ``.tif``/``.tiff`` (deflate, lossless) or ``.jpg``/``.jpeg`` (8-bit,
        quality 95).
    array : np.ndarray
        ``(H, W)`` or ``(H, W, C)``, values in [0, 1] (clipped). C = 1 (grey) or 3 (RGB)
        for every format; other band counts (a multi-band reference's) only as TIFF, with
        the extra samples marked "unspecified" so readers take them as bands, not alpha.
    bit_depth : int
        8 or 16 bits per channel (16 not for JPEG).
    dpi : float, optional
        Resolution for printing (shorthand for ``metadata=OutputMetadata(dpi=dpi)``).
    metadata : OutputMetadata, optional
        Resolution (DPI or microscopy pixel size), ICC profile; in TIFF also GeoTIFF keys,
        nodata and band names. A resolution nobody set is not written (PNG: no ``pHYs``,
        JPEG: no density, TIFF: the required tags say 1/1 with unit NONE).
    alpha : bool
        The last channel of a 2- or 4-channel image is alpha (grey+alpha / RGBA PNG or
        TIFF; JPEG refused), not a band.

    The image is written to ``.<name>.tmp-<pid>`` in the target folder and renamed over
    ``path`` once complete; on any failure the temporary file is removed
    (:func:`~gigapatch.storage.atomic.atomic_path`).

    Raises
    ------
    GigapatchError
        Unknown suffix, missing or unwritable folder, disk full...
    """
    import pyvips

    from .metadata import OutputMetadata

    p = Path(os.fspath(path))
    q = _quantise_for_write(array, bit_depth)
    fmt = _output_format(p, bit_depth, q.shape[2], alpha)
    meta = metadata if metadata is not None else OutputMetadata(dpi=dpi or None)
    problem = _folder_problem(p.parent, p)
    if problem:
        raise GigapatchError(f"cannot write output {p}: {problem}")
    try:
        with atomic_path(p) as tmp:
            if fmt == "tiff" and alpha:
                _write_alpha_tiff(tmp, q)
            elif fmt == "tiff":
                _write_flat_tiff(tmp, q, meta)
            else:
                with quiet_vips():
                    _write_vips(tmp, q, fmt, bit_depth, meta, pyvips)
    except (pyvips.Error, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1:] or \
            [type(exc).__name__]
        reason = reason if isinstance(reason, str) else reason[0].strip()
        raise GigapatchError(f"cannot write output {p} ({reason}); check that the folder "
                             f"is writable and the disk is not full") from None
    return p


def _write_flat_tiff(tmp: Path, q: np.ndarray, meta) -> None:
    """One tiled TIFF page through the pyramid writer (portable deflate, metadata)."""
    from .tiff import write_tiff_tifffile

    h, w, c = q.shape
    tile = 256 if max(h, w) > 256 else 16 * -(-max(h, w) // 16)

    def band():
        yield 0, np.ascontiguousarray(np.moveaxis(q, -1, 0))

    write_tiff_tifffile(tmp, [band], [(h, w)], channels=c, dtype=q.dtype, tile=tile,
                        compression="deflate", metadata=meta, bigtiff=False)


def _write_alpha_tiff(tmp: Path, q: np.ndarray) -> None:
    """Grey+alpha or RGBA as a deflate TIFF whose last sample is unassociated alpha (map
    stacks' ``--alpha keep``; no other metadata)."""
    import tifffile

    tifffile.imwrite(tmp, q, photometric="rgb" if q.shape[2] == 4 else "minisblack",
                     planarconfig="contig", extrasamples=["unassalpha"], compression="zlib",
                     predictor=True, metadata=None)


def _write_vips(tmp: Path, q: np.ndarray, fmt: str, bit_depth: int, meta, pyvips) -> None:
    im = pyvips.Image.new_from_array(q)
    if q.shape[2] in (3, 4):  # 4: RGBA (alpha=True; other 4-band images go to TIFF)
        im = im.copy(interpretation="srgb" if bit_depth == 8 else "rgb16")
    else:
        im = im.copy(interpretation="b-w" if bit_depth == 8 else "grey16")
    res = meta.resolution(0)
    if res:  # libvips: pixels per millimetre
        ppmm = res[0] / (25.4 if res[1] == "INCH" else 10.0)
        im = im.copy(xres=ppmm, yres=ppmm)
    keep = []
    if meta.icc:
        im.set_type(pyvips.GValue.blob_type, "icc-profile-data", meta.icc)
        keep.append("icc")
    if fmt == "png":
        im.pngsave(str(tmp), compression=6, keep=",".join(keep) or "none")
        if not res:
            _drop_png_chunks(tmp, {b"pHYs"})  # libvips always writes one (25.4 dpi)
    else:
        if res:
            keep.append("exif")  # libvips writes the JPEG resolution in EXIF only
        im.jpegsave(str(tmp), Q=95, keep=",".join(keep) or "none")


def _drop_png_chunks(path: Path, kinds: set[bytes]) -> None:
    """Remove the chunks named ``kinds`` from a PNG file, in place."""
    import struct

    data = path.read_bytes()
    out, pos = [data[:8]], 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + n
        if kind not in kinds:
            out.append(data[pos:end])
        pos = end
    path.write_bytes(b"".join(out))
