"""Read a reference image and write small output images (PNG, JPEG, plain TIFF).

Reading goes through pyvips (libvips ships as a wheel with ``pyvips-binary``), with tifffile
as a fallback for TIFFs libvips cannot decode. Every problem a user can fix (missing, empty,
corrupt or unsupported file, an image above the decompression-bomb limit, an unwritable
output) raises :class:`~gigapatch.errors.GigapatchError` with ONE line that names the file
and says what to do; libvips' own warnings are kept off stderr.

Writing is atomic: the image goes to a hidden temporary name in the target folder
(``.out.png.tmp-<pid>``) and is renamed over the final name only once complete, so a crash
or an interrupt never leaves a file that looks finished. Large, pyramidal outputs are the
job of the tiled writers, not of :func:`write_image`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import GigapatchError
from .atomic import atomic_path
from .quantise import quantise

__all__ = [
    "ImageInfo",
    "read_image",
    "write_image",
    "check_writable",
    "numbered_path",
    "WRITE_SUFFIXES",
    "DEFAULT_MAX_INPUT_PIXELS",
]

DEFAULT_MAX_INPUT_PIXELS = 400_000_000

#: Output suffixes :func:`write_image` knows, and the image format each one means.
WRITE_SUFFIXES = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg",
                  ".jpeg": "jpeg"}

# libvips loader name -> the format name ImageInfo reports.
_LOADERS = {"pngload": "png", "jpegload": "jpeg", "tiffload": "tiff", "webpload": "webp"}

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# Interpretations (colour spaces) that are not grey or RGB: refused with a hint.
# (scrgb is what libvips calls float RGB; its values are taken as they are.)
_FOREIGN_SPACES = {"cmyk", "lab", "labq", "labs", "lch", "cmc", "xyz", "yxy", "hsv",
                   "fourier", "histogram", "matrix"}


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image` found in a file.

    ``channels`` is the number of channels of the returned array (1 = grey, 3 = RGB), after
    the alpha channel, if any, was dropped; ``had_alpha`` says whether there was one.
    ``bit_depth`` is the depth of the stored samples (8, 16, 32 for float TIFF).
    """

    path: str
    width: int
    height: int
    channels: int
    bit_depth: int
    had_alpha: bool
    format: str

    @property
    def mode(self) -> str:
        """``"RGB"`` or ``"grey"``."""
        return "RGB" if self.channels == 3 else "grey"

    def describe(self) -> str:
        """One short phrase, e.g. ``"256x201, RGB, 8-bit PNG, alpha dropped"``."""
        alpha = ", alpha dropped" if self.had_alpha else ""
        return (f"{self.width}x{self.height}, {self.mode}, {self.bit_depth}-bit "
                f"{self.format.upper()}{alpha}")


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_vips() -> Iterator[None]:
    """Keep libvips' GLib warnings off stderr for the duration (our error says it all).

    libvips reads ``VIPS_WARNING`` each time it would warn, so setting it temporarily is
    enough; the previous value is restored afterwards.
    """
    old = os.environ.get("VIPS_WARNING")
    os.environ["VIPS_WARNING"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("VIPS_WARNING", None)
        else:
            os.environ["VIPS_WARNING"] = old


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        hint = "check the path" if path.parent.is_dir() else \
            f"the folder {path.parent} does not exist either; check the path"
        raise GigapatchError(f"{what} {path} does not exist; {hint}")
    if path.is_dir():
        raise GigapatchError(f"{what} {path} is a folder, not an image; give a PNG, JPEG or "
                             f"TIFF file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise GigapatchError(f"{what} {path} cannot be read ({exc.strerror}); check its "
                             f"permissions") from None
    if size == 0:
        raise GigapatchError(f"{what} {path} is empty (0 bytes); give a PNG, JPEG or TIFF file")
    if not os.access(path, os.R_OK):
        raise GigapatchError(f"{what} {path} cannot be read (permission denied); check its "
                             f"permissions")


def _bomb_guard(path: Path, width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise GigapatchError(
            f"{what} {path} is {width}x{height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,} (a guard against decompression bombs); if you trust the "
            f"file, raise the limit with --max-input-pixels or output.max_input_pixels")


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) in _TIFF_MAGIC
    except OSError:
        return False


def _to_unit_float(a: np.ndarray, path: Path, what: str) -> tuple[np.ndarray, int]:
    """Samples of any supported dtype -> float32 in [0, 1], plus the stored bit depth."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255), 8
    if a.dtype == np.uint16:
        return a.astype(np.float32) / np.float32(65535), 16
    if a.dtype == np.bool_:
        return a.astype(np.float32), 1
    if a.dtype.kind == "f":
        f = a.astype(np.float32)
        if not np.isfinite(f).all():
            raise GigapatchError(f"{what} {path} holds NaN or infinite values; give an image "
                                 f"with values in [0, 1]")
        lo, hi = (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise GigapatchError(f"{what} {path} is a floating-point image with values in "
                                 f"[{lo:.4g}, {hi:.4g}]; only [0, 1] is accepted, so rescale "
                                 f"it or save it as 8- or 16-bit")
        return np.clip(f, 0.0, 1.0), 8 * a.dtype.itemsize
    raise GigapatchError(f"{what} {path} has {a.dtype.name} samples; only 8- and 16-bit "
                         f"unsigned integers or floats in [0, 1] are supported, so convert it "
                         f"to an 8- or 16-bit PNG or TIFF")


def _split_alpha(a: np.ndarray, path: Path, what: str, interpretation: str = "") -> \
        tuple[np.ndarray, bool]:
    """(H, W, C) with C in 1..4 -> (grey or RGB array, had_alpha)."""
    c = a.shape[2]
    if interpretation in _FOREIGN_SPACES or (interpretation == "multiband" and c > 2):
        name = interpretation.upper() if interpretation != "multiband" else f"{c}-channel"
        raise GigapatchError(f"{what} {path} is a {name} image; convert it to RGB or "
                             f"greyscale first (e.g. `vips colourspace {path.name} out.png "
                             f"srgb`)")
    if c == 1 or c == 3:
        return a, False
    if c == 2 or c == 4:
        return a[:, :, : c - 1], True
    raise GigapatchError(f"{what} {path} has {c} channels; only greyscale, grey+alpha, RGB and "
                         f"RGBA are supported, so save it as an RGB or greyscale PNG or TIFF")


def _read_vips(path: Path, max_pixels: int, what: str) -> tuple[np.ndarray, ImageInfo] | None:
    """Read with pyvips; None when libvips cannot open the file at all."""
    import pyvips

    try:
        im = pyvips.Image.new_from_file(str(path), access="sequential", fail_on="error")
    except pyvips.Error:
        return None
    loader = im.get("vips-loader") if "vips-loader" in im.get_fields() else ""
    fmt = _LOADERS.get(loader)
    if fmt is None:
        kind = loader.removesuffix("load").removesuffix("_source") or "this"
        raise GigapatchError(f"{what} {path} is a {kind.upper()} file, which gigapatch does not "
                             f"read; convert it to PNG, JPEG or TIFF")
    if im.coding != "none":
        raise GigapatchError(f"{what} {path} uses {im.coding} coding; convert it to an RGB "
                             f"PNG or TIFF")
    _bomb_guard(path, im.width, im.height, max_pixels, what)
    interpretation = str(im.interpretation)
    if interpretation in _FOREIGN_SPACES:
        _split_alpha(np.zeros((1, 1, im.bands), np.uint8), path, what, interpretation)
    if im.bands > 4:
        _split_alpha(np.zeros((1, 1, im.bands), np.uint8), path, what)
    try:
        a = im.numpy()
    except pyvips.Error:
        if fmt == "tiff":
            return None  # a codec libvips lacks (zstd, JPEG XL...): tifffile may know it
        raise GigapatchError(f"{what} {path} is corrupt or truncated ({fmt.upper()} decoding "
                             f"failed); re-export or re-download it") from None
    if a.ndim == 2:
        a = a[:, :, None]
    a, had_alpha = _split_alpha(a, path, what, interpretation)
    a, depth = _to_unit_float(a, path, what)
    info = ImageInfo(str(path), im.width, im.height, a.shape[2], depth, had_alpha, fmt)
    return np.ascontiguousarray(a, dtype=np.float32), info


def _read_tifffile(path: Path, max_pixels: int, what: str) -> tuple[np.ndarray, ImageInfo]:
    """Fallback for TIFFs libvips refuses (exotic codecs or sample formats)."""
    import tifffile

    log = logging.getLogger("tifffile")  # it logs broken structures; our error says it all
    was_disabled, log.disabled = log.disabled, True
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, series.shape
            keep = {ax: n for ax, n in zip(axes, shape) if n > 1 or ax in "YX"}
            if set(keep) - set("YXS") or "Y" not in keep or "X" not in keep:
                raise GigapatchError(f"{what} {path} is a TIFF with axes {axes} {shape}; only "
                                     f"single 2D images (grey, RGB, RGBA) are supported")
            _bomb_guard(path, keep["X"], keep["Y"], max_pixels, what)
            page = series.pages[0] if series.pages else None
            photometric = getattr(getattr(page, "photometric", None), "name", "")
            a = series.asarray()
    except GigapatchError:
        raise
    except Exception:  # tifffile raises many types for broken files; all mean "unreadable"
        raise GigapatchError(f"{what} {path} is a corrupt or unsupported TIFF; re-export it "
                             f"as an 8- or 16-bit RGB or greyscale TIFF or PNG") from None
    finally:
        log.disabled = was_disabled
    a = np.squeeze(a)
    sq_axes = "".join(ax for ax, n in zip(axes, shape) if n > 1 or ax in "YX")
    if sq_axes == "SYX":
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[:, :, None]
    interp = {"SEPARATED": "cmyk", "CIELAB": "lab", "ICCLAB": "lab", "ITULAB": "lab"}.get(
        photometric, "")
    a, had_alpha = _split_alpha(a, path, what, interp)
    a, depth = _to_unit_float(a, path, what)
    info = ImageInfo(str(path), a.shape[1], a.shape[0], a.shape[2], depth, had_alpha, "tiff")
    return np.ascontiguousarray(a, dtype=np.float32), info


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
               what: str = "image") -> tuple[np.ndarray, ImageInfo]:
    """Read a PNG, JPEG, WebP or TIFF image as float32 ``(H, W, C)`` in ``[0, 1]``.

    Parameters
    ----------
    path : str or PathLike
        The image file. 8- and 16-bit grey, grey+alpha, RGB and RGBA are read; TIFFs with
        float samples are accepted when their values lie in [0, 1].
    max_pixels : int
        Decompression-bomb guard: files whose header announces more pixels are refused
        before any pixel is decoded (``--max-input-pixels`` / ``output.max_input_pixels``).
    what : str
        How error messages name the file, e.g. ``"reference"``.

    Returns
    -------
    array : np.ndarray
        float32, shape ``(H, W, C)``, C = 1 (grey) or 3 (RGB); an alpha channel is dropped.
    info : ImageInfo
        Size, channels, stored bit depth, whether an alpha channel was dropped, format.

    Raises
    ------
    GigapatchError
        Missing, empty, corrupt or unsupported file, or one above ``max_pixels``.
    """
    p = Path(os.fspath(path))
    _check_file(p, what)
    with _quiet_vips():
        result = _read_vips(p, max_pixels, what)
    if result is not None:
        return result
    if _is_tiff(p):
        return _read_tifffile(p, max_pixels, what)
    raise GigapatchError(f"{what} {p} is not a readable image (unknown format or corrupt "
                         f"file); give a PNG, JPEG or TIFF")


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------

def _output_format(path: Path, bit_depth: int) -> str:
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
    return fmt


def _folder_problem(folder: Path, path: Path) -> str | None:
    if not folder.exists():
        return f"the folder {folder} does not exist; create it first or choose another path"
    if not folder.is_dir():
        return f"{folder} is not a folder; choose another output path"
    return None


def check_writable(path: str | os.PathLike, *, bit_depth: int = 8) -> Path:
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
    _output_format(p, bit_depth)
    folder = p.parent
    problem = _folder_problem(folder, p)
    if problem:
        raise GigapatchError(f"cannot write output {p}: {problem}")
    if p.is_dir():
        raise GigapatchError(f"cannot write output {p}: it is a folder; give a file name such "
                             f"as {p / 'out.png'}")
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
    if a.ndim != 3 or a.shape[2] not in (1, 3) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"write_image expects (H, W), (H, W, 1) or (H, W, 3), got {a.shape}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"write_image expects numbers, got {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError("write_image got NaN or infinite values")
    return quantise(a, bit_depth)


def write_image(path: str | os.PathLike, array: np.ndarray, *, bit_depth: int = 8,
                dpi: float | None = None) -> Path:
    """Write an image in [0, 1] as PNG, JPEG or plain TIFF (by suffix), atomically.

    Parameters
    ----------
    path : str or PathLike
        ``.png``, ``.tif``/``.tiff`` (deflate, lossless) or ``.jpg``/``.jpeg`` (8-bit,
        quality 95).
    array : np.ndarray
        ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``, values in [0, 1] (clipped).
    bit_depth : int
        8 or 16 bits per channel (16 not for JPEG).
    dpi : float, optional
        Resolution tag for printing.

    The image is written to ``.<name>.tmp-<pid>`` in the target folder and renamed over
    ``path`` once complete; on any failure the temporary file is removed
    (:func:`~gigapatch.storage.atomic.atomic_path`).

    Raises
    ------
    GigapatchError
        Unknown suffix, missing or unwritable folder, disk full...
    """
    import pyvips

    p = Path(os.fspath(path))
    fmt = _output_format(p, bit_depth)
    q = _quantise_for_write(array, bit_depth)
    problem = _folder_problem(p.parent, p)
    if problem:
        raise GigapatchError(f"cannot write output {p}: {problem}")
    im = pyvips.Image.new_from_array(q)
    if q.shape[2] == 3:
        im = im.copy(interpretation="srgb" if bit_depth == 8 else "rgb16")
    else:
        im = im.copy(interpretation="b-w" if bit_depth == 8 else "grey16")
    if dpi:
        im = im.copy(xres=dpi / 25.4, yres=dpi / 25.4)  # libvips: pixels per millimetre
    try:
        with atomic_path(p) as tmp, _quiet_vips():
            if fmt == "png":
                im.pngsave(str(tmp), compression=6)
            elif fmt == "jpeg":
                im.jpegsave(str(tmp), Q=95)
            else:
                im.tiffsave(str(tmp), compression="deflate", predictor="horizontal",
                            resunit="inch")
    except (pyvips.Error, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1:] or \
            [type(exc).__name__]
        reason = reason if isinstance(reason, str) else reason[0].strip()
        raise GigapatchError(f"cannot write output {p} ({reason}); check that the folder "
                             f"is writable and the disk is not full") from None
    return p
