"""Read a reference image (file, array or PIL image) as float32 ``(H, W, C)`` in [0, 1].

Which library reads what:

- TIFF (by its magic bytes, whatever the suffix) goes through **tifffile + imagecodecs**,
  which decode every TIFF codec (none, packbits, LZW, deflate / Adobe deflate, zstd, JPEG,
  WebP, LERC, ...), tiled or striped, 8/16-bit integer or float. libvips is NOT used for
  TIFF: the libtiff inside the pyvips-binary wheel has no ZSTD codec and returns zeros for
  ZSTD tiles without an error (a silent black output).
- PNG, JPEG, WebP and GIF go through **pyvips** (palette images come out as RGB).

What the reader does for the user, and says in ``ImageInfo.notes`` (the CLI prints them):

- EXIF / TIFF orientation is applied (a phone photo comes out as a viewer shows it).
- Alpha (grey+alpha, RGBA; 8- or 16-bit; associated alpha is un-premultiplied) is dropped,
  or with ``alpha="keep"`` kept as the last channel (``--alpha keep``).
- CMYK is converted to RGB with the plain formula ``R = (1 - C)(1 - K)`` (no ICC profile).
- A TIFF's extra samples that are NOT alpha (ExtraSamples "unspecified", e.g. an RGB + NIR
  GeoTIFF) are kept as bands: the image has C = 4 (or more) channels.

Refused with one line that names the file and what to do (:class:`GigapatchError`):
missing / empty / corrupt / unsupported files, files above the decompression-bomb limit,
multi-page TIFFs and animated WebP/GIF (unless a page is picked), floats with NaN or
outside [0, 1], signed or 32-bit integer samples, Lab and other foreign colour spaces.
A pyramidal TIFF's reduced levels (SubIFDs or reduced-resolution pages) are not pages:
level 0 is read.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import GigapatchError

__all__ = ["ImageInfo", "read_image", "coerce_image", "DEFAULT_MAX_INPUT_PIXELS",
           "apply_orientation", "quiet_vips"]

DEFAULT_MAX_INPUT_PIXELS = 400_000_000

# libvips loader name -> the format name ImageInfo reports.
_LOADERS = {"pngload": "png", "jpegload": "jpeg", "webpload": "webp", "gifload": "gif"}

#: sample types ``native=True`` keeps as stored (``diffusion.model_space.to_model`` and
#: ``coerce_image`` divide them by 255 / 65535 exactly as this module does)
_NATIVE = (np.dtype(np.uint8), np.dtype(np.uint16))

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# libvips interpretations (colour spaces) that are neither grey, RGB nor CMYK: refused.
_FOREIGN_SPACES = {"lab", "labq", "labs", "lch", "cmc", "xyz", "yxy", "hsv", "fourier",
                   "histogram", "matrix"}

# How messages name an option: the CLI's flags, or the Python API's parameters.
_WORDS = {
    "cli": {"page": "--page N", "max_pixels": "--max-input-pixels N (or "
                                              "output.max_input_pixels)"},
    "api": {"page": "page=N", "max_pixels": "the config key output.max_input_pixels"},
}


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image` found in a file.

    ``channels`` is the number of channels of the returned array (1 = grey, 3 = RGB, other
    counts = bands of a multi-band image) after any alpha channel was dropped;
    ``had_alpha`` says whether there was one. ``bit_depth`` is the depth of the stored
    samples (8, 16, or 16/32/64 for float). ``notes`` are one-line remarks on what the
    reader changed (orientation applied, alpha dropped, CMYK converted).
    """

    path: str
    width: int
    height: int
    channels: int
    bit_depth: int
    had_alpha: bool
    format: str
    notes: tuple[str, ...] = ()
    alpha_kept: bool = False  # read with alpha="keep": the last channel is alpha
    signed: bool = False  # read with signed=True: float samples in [-1, 1], kept so

    @property
    def mode(self) -> str:
        """``"RGB"``, ``"grey"`` or ``"C-band"``."""
        return channel_mode(self.channels)

    def describe(self) -> str:
        """One short phrase, e.g. ``"256x201, RGB, 8-bit PNG, alpha dropped"``."""
        alpha = ", alpha dropped" if self.had_alpha else ", alpha kept" if self.alpha_kept \
            else ""
        return (f"{self.width}x{self.height}, {self.mode}, {self.bit_depth}-bit "
                f"{self.format.upper()}{alpha}")


def channel_mode(channels: int) -> str:
    """``"grey"`` (1), ``"RGB"`` (3) or ``"4-band"`` ... for other channel counts."""
    return {1: "grey", 3: "RGB"}.get(channels, f"{channels}-band")


# --------------------------------------------------------------------------------------
# shared steps
# --------------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_vips() -> Iterator[None]:
    """Keep libvips' GLib warnings off stderr for the duration (our error says it all)."""
    old = os.environ.get("VIPS_WARNING")
    os.environ["VIPS_WARNING"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("VIPS_WARNING", None)
        else:
            os.environ["VIPS_WARNING"] = old


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    log = logging.getLogger("tifffile")  # it logs broken structures; our error says it all
    was, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = was


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        hint = "check the path" if path.parent.is_dir() else \
            f"the folder {path.parent} does not exist either; check the path"
        raise GigapatchError(f"{what} {path} does not exist; {hint}")
    if path.is_dir():
        raise GigapatchError(f"{what} {path} is a folder, not an image; give a PNG, JPEG, "
                             f"WebP or TIFF file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise GigapatchError(f"{what} {path} cannot be read ({exc.strerror}); check its "
                             f"permissions") from None
    if size == 0:
        raise GigapatchError(f"{what} {path} is empty (0 bytes); give a PNG, JPEG, WebP or "
                             f"TIFF file")
    if not os.access(path, os.R_OK):
        raise GigapatchError(f"{what} {path} cannot be read (permission denied); check its "
                             f"permissions")


def _bomb_guard(path: Path, width: int, height: int, max_pixels: int, what: str,
                words: dict) -> None:
    if width * height > max_pixels:
        raise GigapatchError(
            f"{what} {path} is {width}x{height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,} (a guard against decompression bombs); if you trust the "
            f"file, raise the limit with {words['max_pixels']}")


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) in _TIFF_MAGIC
    except OSError:
        return False


def _signed_floats(a: np.ndarray) -> bool:
    """Float samples with a value below 0 (beyond the 1e-3 slack): a signed map."""
    return a.dtype.kind == "f" and a.size > 0 and float(np.nanmin(a)) < -1e-3


def _to_unit_float(a: np.ndarray, name: str, *, any_int: bool = False,
                   signed: bool = False) -> tuple[np.ndarray, int]:
    """Samples -> float32 in [0, 1], plus the bit depth they had.

    uint8 / uint16 are scaled by 255 / 65535; with ``any_int`` (in-memory arrays) other
    non-negative integers are taken as 8-bit when their maximum is <= 255, else as 16-bit
    when <= 65535 (files with signed or 32-bit samples are refused: their range is not an
    image's); floats must be finite and lie in [0, 1] (a 1e-3 slack is clipped). With
    ``signed`` floats with a value below 0 must lie in [-1, 1] and are kept there.
    """
    # conversions divide in place: one float32 copy of the image, never two (the same
    # float32 division, so the same bits)
    if a.dtype == np.uint8:
        return _divided(a, 255), 8
    if a.dtype == np.uint16:
        return _divided(a, 65535), 16
    if a.dtype == np.bool_:
        return a.astype(np.float32), 1
    if a.dtype.kind in "iu" and any_int:
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise GigapatchError(f"{name} has {a.dtype.name} values in [{lo}, {hi}]; integer "
                                 f"samples must lie in 0..255 (8-bit) or 0..65535 (16-bit), "
                                 f"so rescale it or give floats in [0, 1]")
        top, depth = (255, 8) if hi <= 255 else (65535, 16)
        return _divided(a, top), depth
    if a.dtype.kind == "f":
        # no copy of a float32 array already in range (the caller's array is returned:
        # nothing downstream writes into a reference); min/max propagate NaN, so they
        # also find NaN and infinities without a full-size temporary
        f = np.asarray(a, dtype=np.float32)
        lo, hi = (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise GigapatchError(f"{name} holds NaN or infinite values; fill them (e.g. with "
                                 f"0) and give values in [0, 1]")
        if signed and lo < -1e-3:
            if lo < -1 - 1e-3 or hi > 1 + 1e-3:
                raise GigapatchError(f"{name} has float values in [{lo:.4g}, {hi:.4g}]; a "
                                     f"signed map (a normal map's x, y, z) must lie in "
                                     f"[-1, 1], so rescale it")
            return np.clip(f, -1.0, 1.0), 8 * a.dtype.itemsize
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise GigapatchError(f"{name} has float values in [{lo:.4g}, {hi:.4g}]; only "
                                 f"[0, 1] is accepted, so rescale it or save it as 8- or "
                                 f"16-bit")
        if lo < 0.0 or hi > 1.0:  # the slack: clipped into a new array
            f = np.clip(f, 0.0, 1.0)
        return f, 8 * a.dtype.itemsize
    raise GigapatchError(f"{name} has {a.dtype.name} samples; only 8- and 16-bit unsigned "
                         f"integers or floats in [0, 1] are supported, so convert it to an "
                         f"8- or 16-bit PNG or TIFF")


def _divided(a: np.ndarray, top: int) -> np.ndarray:
    """``a.astype(float32) / float32(top)``, divided in place (no second float copy)."""
    f = a.astype(np.float32)
    f /= np.float32(top)
    return f


def _cmyk_to_rgb(a: np.ndarray) -> np.ndarray:
    """(H, W, 4) CMYK in [0, 1] (1 = full ink) -> RGB: R = (1 - C)(1 - K), ..."""
    k = 1 - a[:, :, 3:4]
    return (1 - a[:, :, :3]) * k


def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF / TIFF orientation (1..8) to ``(H, W, ...)``: the image as shown.

    1 as stored, 2 mirrored left-right, 3 rotated 180, 4 mirrored top-bottom, 5 transposed,
    6 rotated 90 clockwise, 7 transversed, 8 rotated 90 counter-clockwise (what Pillow's
    ``ImageOps.exif_transpose`` does).
    """
    o = int(orientation)
    if o == 2:
        return a[:, ::-1]
    if o == 3:
        return a[::-1, ::-1]
    if o == 4:
        return a[::-1]
    if o == 5:
        return np.swapaxes(a, 0, 1)
    if o == 6:
        return np.swapaxes(a, 0, 1)[:, ::-1]
    if o == 7:
        return np.swapaxes(a, 0, 1)[::-1, ::-1]
    if o == 8:
        return np.swapaxes(a, 0, 1)[::-1]
    return a


_ORIENTATION_WORDS = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down",
                      5: "transposed", 6: "rotated 90 degrees clockwise",
                      7: "transversed", 8: "rotated 90 degrees counter-clockwise"}


def _orientation_note(path: Path, o: int) -> str:
    return (f"note: {path} carries orientation {o}; it was {_ORIENTATION_WORDS[o]} to read "
            f"it as viewers show it")


def _alpha_note(path: Path, channels: int) -> str:
    return (f"note: {path} has an alpha channel; it is ignored (only the "
            f"{channel_mode(channels)} channels are used)")


def _pages_error(path: Path, what: str, n: int, kind: str, words: dict) -> GigapatchError:
    return GigapatchError(f"{what} {path} has {n} {kind}; pick one with {words['page']} "
                          f"(0..{n - 1})")


def _check_page(path: Path, what: str, page: int | None, n: int, kind: str,
                words: dict) -> int:
    if page is None:
        if n > 1:
            raise _pages_error(path, what, n, kind, words)
        return 0
    if not 0 <= page < n:
        raise GigapatchError(f"{what} {path} has {n} {kind if n != 1 else kind[:-1]}; "
                             f"{words['page'].split('N')[0]}{page} is out of range, use "
                             f"0..{n - 1}")
    return page


# --------------------------------------------------------------------------------------
# TIFF: tifffile + imagecodecs
# --------------------------------------------------------------------------------------

def _tiff_pages(tif) -> list:
    """The main IFD chain's full-resolution images (reduced levels and masks are not pages).
    """
    return [p for p in tif.pages if not (p.subfiletype & 0b101)]


def _read_tiff(path: Path, max_pixels: int, what: str, page: int | None, words: dict,
               keep_alpha: bool = False, signed: bool = False, native: bool = False) \
        -> tuple[np.ndarray, ImageInfo]:
    import tifffile

    P = tifffile.PHOTOMETRIC
    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            pages = _tiff_pages(tif)
            if not pages:
                raise GigapatchError(f"{what} {path} is a TIFF without a full-resolution "
                                     f"image; re-export it as a plain TIFF")
            pg = pages[_check_page(path, what, page, len(pages), "pages", words)]
            axes = pg.axes
            if set(axes) - set("YXS") or "Y" not in axes or "X" not in axes:
                raise GigapatchError(f"{what} {path} is a TIFF image with axes {axes} "
                                     f"{pg.shape}; only 2D images (grey, RGB, bands) are "
                                     f"read, so export one plane")
            _bomb_guard(path, pg.imagewidth, pg.imagelength, max_pixels, what, words)
            photometric = P(pg.photometric)
            extras = tuple(int(e) for e in (pg.extrasamples or ()))
            orientation = int(pg.tags.valueof(274, 1) or 1)
            colormap = pg.colormap
            if photometric == P.YCBCR and int(pg.compression) in (7, 34892):
                photometric = P.RGB  # JPEG tiles: the JPEG decoder returns RGB
            a = pg.asarray()
    except GigapatchError:
        raise
    except Exception as exc:  # tifffile/imagecodecs raise many types; all mean unreadable
        detail = f" ({type(exc).__name__}: {_one_line(exc)})" if str(exc) else ""
        raise GigapatchError(f"{what} {path} is a corrupt or unsupported TIFF{detail}; "
                             f"re-export it as an 8- or 16-bit RGB or greyscale TIFF or "
                             f"PNG") from None
    if axes.startswith("S"):  # planar configuration "separate"
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[:, :, None]
    notes: list[str] = []
    name = f"{what} {path}"
    if photometric in (P.CIELAB, P.ICCLAB, P.ITULAB, P.LOGL, P.LOGLUV, P.CFA, P.YCBCR):
        raise GigapatchError(f"{name} is a {photometric.name} TIFF; convert it to RGB or "
                             f"greyscale first (e.g. `vips colourspace {path.name} out.tif "
                             f"srgb`)")
    if photometric == P.PALETTE:
        if colormap is None:
            raise GigapatchError(f"{name} is a palette TIFF without a colour map; re-export "
                                 f"it as RGB")
        cm = np.asarray(colormap)
        a = np.moveaxis(cm[:, a[:, :, 0].astype(np.intp)], 0, -1)  # (H, W, 3) uint16
        if (cm % 257 == 0).all():
            a = (a // 257).astype(np.uint8)
        photometric, extras = P.RGB, ()
    colours = {P.RGB: 3, P.SEPARATED: 4}.get(photometric, 1)
    if a.shape[2] < colours:
        raise GigapatchError(f"{name} is a {photometric.name} TIFF with {a.shape[2]} "
                             f"samples per pixel; re-export it")
    n_extra = a.shape[2] - colours
    extras = (extras + (0,) * n_extra)[:n_extra]
    if a.dtype == np.bool_ or photometric == P.MINISWHITE:
        if photometric == P.MINISWHITE:
            a = ~a if a.dtype == np.bool_ else (
                (1 - a) if a.dtype.kind == "f" else np.iinfo(a.dtype).max - a)
    signed = signed and _signed_floats(a)
    alpha_idx = [colours + i for i, e in enumerate(extras) if e in (1, 2)]
    # native: 8/16-bit samples stay integers unless a step below computes in floats
    as_stored = native and a.dtype in _NATIVE and photometric != P.SEPARATED and not (
        alpha_idx and extras[alpha_idx[0] - colours] == 1)
    if as_stored:
        depth = 8 * a.dtype.itemsize
    else:
        a, depth = _to_unit_float(a, name, signed=signed)
    keep = list(range(colours)) + [colours + i for i, e in enumerate(extras) if e not in (1, 2)]
    if alpha_idx:
        if extras[alpha_idx[0] - colours] == 1:  # associated (premultiplied) alpha
            al = a[:, :, alpha_idx[0]:alpha_idx[0] + 1]
            col = a[:, :, :colours]
            a = a.copy()
            a[:, :, :colours] = np.where(al > 0, np.clip(col / np.maximum(al, 1e-12), 0, 1),
                                         0)
        a = a[:, :, keep + (alpha_idx[:1] if keep_alpha else [])]
    if photometric == P.SEPARATED:
        a = np.concatenate([_cmyk_to_rgb(a[:, :, :4]), a[:, :, 4:]], axis=2)
        notes.append(f"note: {path} is CMYK; it was converted to RGB with the plain formula "
                     f"(no colour profile), so colours may differ from a print preview")
    if alpha_idx and not keep_alpha:
        notes.append(_alpha_note(path, a.shape[2]))
    if orientation in _ORIENTATION_WORDS:
        a = apply_orientation(a, orientation)
        notes.append(_orientation_note(path, orientation))
    a = np.ascontiguousarray(a, dtype=a.dtype if as_stored else np.float32)
    info = ImageInfo(str(path), a.shape[1], a.shape[0], a.shape[2], depth,
                     bool(alpha_idx) and not keep_alpha, "tiff", tuple(notes),
                     bool(alpha_idx) and keep_alpha, signed)
    return a, info


# --------------------------------------------------------------------------------------
# PNG / JPEG / WebP / GIF: pyvips
# --------------------------------------------------------------------------------------

def _read_vips(path: Path, max_pixels: int, what: str, page: int | None, words: dict,
               keep_alpha: bool = False, signed: bool = False, native: bool = False) \
        -> tuple[np.ndarray, ImageInfo] | None:
    """Read with pyvips; None when libvips cannot open the file at all."""
    import pyvips

    try:
        im = pyvips.Image.new_from_file(str(path), fail_on="error")
    except pyvips.Error:
        return None
    fields = im.get_fields()
    loader = im.get("vips-loader") if "vips-loader" in fields else ""
    fmt = _LOADERS.get(loader)
    if fmt is None:
        kind = loader.removesuffix("_source").removesuffix("load") or "this"
        raise GigapatchError(f"{what} {path} is a {kind.upper()} file, which gigapatch does not "
                             f"read; convert it to PNG, JPEG, WebP or TIFF")
    n_pages = int(im.get("n-pages")) if "n-pages" in fields else 1
    kind = "frames (an animation)" if fmt in ("webp", "gif") else "pages"
    k = _check_page(path, what, page, n_pages, kind if n_pages > 1 else "pages", words)
    if n_pages > 1:
        try:
            im = pyvips.Image.new_from_file(str(path), fail_on="error", page=k)
        except pyvips.Error:
            return None
        fields = im.get_fields()
    if im.coding != "none":
        raise GigapatchError(f"{what} {path} uses {im.coding} coding; convert it to an RGB "
                             f"PNG or TIFF")
    _bomb_guard(path, im.width, im.height, max_pixels, what, words)
    interpretation = str(im.interpretation)
    name = f"{what} {path}"
    if interpretation in _FOREIGN_SPACES:
        raise GigapatchError(f"{name} is a {interpretation.upper()} image; convert it to RGB "
                             f"or greyscale first (e.g. `vips colourspace {path.name} out.png "
                             f"srgb`)")
    orientation = int(im.get("orientation")) if "orientation" in fields else 1
    try:
        a = im.numpy()
    except pyvips.Error:
        raise GigapatchError(f"{name} is corrupt or truncated ({fmt.upper()} decoding "
                             f"failed); re-export or re-download it") from None
    if a.ndim == 2:
        a = a[:, :, None]
    notes: list[str] = []
    signed = signed and _signed_floats(a)
    as_stored = native and a.dtype in _NATIVE and interpretation != "cmyk"
    if as_stored:  # 8/16-bit samples as stored (alpha and orientation are slices)
        depth = 8 * a.dtype.itemsize
    else:
        a, depth = _to_unit_float(a, name, signed=signed)
    c = a.shape[2]
    had_alpha = False
    if interpretation == "cmyk" and c >= 4:
        had_alpha = c > 4
        a = _cmyk_to_rgb(a[:, :, :4])
        notes.append(f"note: {path} is CMYK; it was converted to RGB with the plain formula "
                     f"(no colour profile), so colours may differ from a print preview")
    elif c in (2, 4):
        if not keep_alpha:
            a, had_alpha = a[:, :, :c - 1], True
    elif c != 1 and c != 3:
        raise GigapatchError(f"{name} has {c} channels; only grey, grey+alpha, RGB and RGBA "
                             f"are read from {fmt.upper()}, so save bands as a TIFF")
    if had_alpha:
        notes.append(_alpha_note(path, a.shape[2]))
    if orientation in _ORIENTATION_WORDS:
        a = apply_orientation(a, orientation)
        notes.append(_orientation_note(path, orientation))
    a = np.ascontiguousarray(a, dtype=a.dtype if as_stored else np.float32)
    info = ImageInfo(str(path), a.shape[1], a.shape[0], a.shape[2], depth, had_alpha, fmt,
                     tuple(notes), keep_alpha and c in (2, 4) and interpretation != "cmyk",
                     signed)
    return a, info


def _one_line(exc: Any) -> str:
    return " ".join(str(exc).split())[:120]


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
               what: str = "image", page: int | None = None, words: str = "cli",
               alpha: str = "drop", signed: bool = False,
               native: bool = False) -> tuple[np.ndarray, ImageInfo]:
    """Read a TIFF, PNG, JPEG, WebP or GIF image as float32 ``(H, W, C)`` in ``[0, 1]``.

    Parameters
    ----------
    path : str or PathLike
        The image file. TIFFs (any codec, tiled or striped, 8/16-bit or float in [0, 1],
        grey, RGB, CMYK, palette or multi-band) are read with tifffile; PNG, JPEG, WebP and
        GIF with pyvips. Orientation tags are applied, alpha is dropped, CMYK becomes RGB
        (see the module docstring).
    max_pixels : int
        Decompression-bomb guard: files whose header announces more pixels are refused
        before any pixel is decoded (``--max-input-pixels`` / ``output.max_input_pixels``).
    what : str
        How error messages name the file, e.g. ``"reference"``.
    page : int, optional
        Which page of a multi-page TIFF or frame of an animated WebP/GIF to read. Without
        it such files are refused (a pyramid's reduced levels do not count as pages).
    words : {"cli", "api"}
        Whether messages name options as CLI flags (``--page N``) or API parameters
        (``page=N``).
    alpha : {"drop", "keep"}
        ``keep``: an alpha channel stays, as the last channel (RGBA -> 4, grey+alpha -> 2;
        associated TIFF alpha is un-premultiplied first); ``had_alpha`` is then False.
    signed : bool
        Float samples with a value below 0 are a signed map (a normal map stored as x, y, z
        in [-1, 1]): they must lie in [-1, 1], are returned in that range and
        ``info.signed`` is True (map stacks, ``gigapatch.stacks``). Without it they are
        refused.
    native : bool
        Keep 8- and 16-bit samples as stored (uint8 / uint16: a quarter / half of the
        float32 array's memory) unless a conversion computes in floats (CMYK, associated
        alpha); ``coerce_image`` and ``diffusion.model_space.to_model`` turn them into the
        same float32 values this function would return without it.

    Returns
    -------
    array : np.ndarray
        float32, shape ``(H, W, C)``: C = 1 (grey), 3 (RGB) or the band count of a
        multi-band TIFF; alpha dropped.
    info : ImageInfo
        Size, channels, stored bit depth, whether alpha was dropped, format, notes.

    Raises
    ------
    GigapatchError
        Missing, empty, corrupt, unsupported, multi-page file, or one above ``max_pixels``.
    """
    p = Path(os.fspath(path))
    w = _WORDS[words]
    _check_file(p, what)
    if page is not None:
        page = _check_index(page, w["page"].split("N")[0].rstrip(" ="), words)
    if alpha not in ("drop", "keep"):
        raise ValueError(f"alpha must be 'drop' or 'keep', got {alpha!r}")
    keep = alpha == "keep"
    if _is_tiff(p):
        return _read_tiff(p, max_pixels, what, page, w, keep, signed, native)
    with quiet_vips():
        result = _read_vips(p, max_pixels, what, page, w, keep, signed, native)
    if result is not None:
        return result
    raise GigapatchError(f"{what} {p} is not a readable image (unknown format or corrupt "
                         f"file); give a PNG, JPEG, WebP or TIFF")


def _check_index(page: Any, option: str, words: str) -> int:
    if isinstance(page, bool):
        page = None
    try:
        v = operator.index(page)
    except TypeError:
        v = -1
    if v < 0:
        shown = f"{option} {page}" if words == "cli" else f"{option}={page!r}"
        raise GigapatchError(f"{shown}: expected a page number >= 0")
    return v


# --------------------------------------------------------------------------------------
# arrays and PIL images (the Python API)
# --------------------------------------------------------------------------------------

def _from_pil(img: Any, name: str) -> tuple[np.ndarray, list[str]]:
    """A PIL image -> an array as a viewer shows it (palette expanded, alpha dropped)."""
    notes: list[str] = []
    n_frames = int(getattr(img, "n_frames", 1) or 1)
    if n_frames > 1:
        raise GigapatchError(f"{name} is a PIL image with {n_frames} frames; pick one with "
                             f"img.seek(N) and pass img.copy()")
    mode = img.mode
    if mode == "P":
        mode_to = "RGBA" if "transparency" in img.info else "RGB"
        img, mode = img.convert(mode_to), mode_to
    elif mode == "PA":
        img, mode = img.convert("RGBA"), "RGBA"
    elif mode == "CMYK":
        img, mode = img.convert("RGB"), "RGB"
        notes.append(f"note: {name} is CMYK; it was converted to RGB (no colour profile)")
    elif mode in ("1",):
        img, mode = img.convert("L"), "L"
    elif mode in ("YCbCr", "LAB", "HSV"):
        img, mode = img.convert("RGB"), "RGB"
    a = np.asarray(img)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        a = a.astype(np.uint16)
    if a.ndim == 2:
        a = a[:, :, None]
    if mode in ("LA", "La", "RGBA", "RGBa"):
        a = a[:, :, :-1]
        notes.append(f"note: {name} has an alpha channel; it is ignored")
    return a, notes


def coerce_image(image: Any, *, name: str = "reference",
                 native: bool = False) -> tuple[np.ndarray, tuple[str, ...]]:
    """An in-memory image (NumPy array, torch tensor or PIL image) as float32 (H, W, C).

    Parameters
    ----------
    image : ndarray, Tensor or PIL.Image.Image
        Arrays and tensors are ``(H, W)`` or ``(H, W, C)`` with any C >= 1 (every channel is
        kept: pass ``rgba[..., :3]`` to drop an alpha channel). Values: uint8 (0..255),
        uint16 (0..65535), other integer types with values in 0..255 (taken as 8-bit) or,
        when the maximum is above 255, 0..65535 (16-bit); floats in [0, 1]. PIL images in
        any common mode: palette images are converted to RGB, alpha (LA, RGBA) dropped,
        CMYK converted to RGB, 16-bit grey kept at 16 bits.
    name : str
        How messages name the input.
    native : bool
        Return uint8 / uint16 samples as they are (no float32 copy; see ``read_image``).

    Returns
    -------
    array : ndarray, shape (H, W, C), float32 in [0, 1] (or with ``native`` uint8 / uint16)
    notes : tuple of str

    Raises
    ------
    GigapatchError
        Wrong type, shape or values.
    """
    notes: list[str] = []
    mod = type(image).__module__ or ""
    if mod.startswith("PIL.") and hasattr(image, "mode") and hasattr(image, "convert"):
        arr, notes = _from_pil(image, name)
    elif mod.startswith("torch") and hasattr(image, "detach"):
        arr = image.detach().cpu().numpy()
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise GigapatchError(f"{name} of type {type(image).__name__}: expected an image file "
                             f"path, a NumPy array (H, W) or (H, W, C), a torch tensor or a "
                             f"PIL image")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise GigapatchError(f"{name} array of shape {tuple(arr.shape)}: expected (H, W) or "
                             f"(H, W, C) with C >= 1 channels last")
    if native and arr.dtype in _NATIVE:
        return np.ascontiguousarray(arr), tuple(notes)
    a, _ = _to_unit_float(arr, f"{name} array", any_int=True)
    return np.ascontiguousarray(a, dtype=np.float32), tuple(notes)
