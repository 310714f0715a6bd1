"""What an output file carries besides its pixels: resolution (print DPI or microscopy pixel
size), ICC profile, georeferencing (CRS, geotransform, nodata) and band names.

:func:`read_metadata` takes them from a reference file (TIFF tags through tifffile, PNG
``pHYs``/``iCCP`` and JPEG ``JFIF`` through libvips and a few bytes of parsing, GeoTIFF keys
through rasterio when the ``gis`` extra is installed, else tifffile's GeoKey directory).
:func:`output_metadata` combines them with what the user set (``--dpi``, ``--pixel-size``,
``--crs``, ``--origin``/``--bounds``, ``--nodata``) into one :class:`OutputMetadata` that the
writers take. Nothing is made up: a value nobody knows is ``None`` and is not written (no
25.4 dpi default).

Resolution units: print resolution is written in pixels per inch; a microscopy pixel size in
pixels per centimetre (``--pixel-size 0.25um`` -> 40000 px/cm), which OpenSlide reports as
``openslide.mpp-x``/``mpp-y`` and tiffslide as ``tiffslide.mpp-x``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import GigapatchError

__all__ = ["OutputMetadata", "read_metadata", "output_metadata", "parse_print_size",
           "parse_pixel_size", "parse_crs", "parse_pair", "parse_bounds", "print_size_pixels",
           "gdal_metadata_xml", "geokey_tags", "apply_to_gdal"]

#: inches per unit
_INCH = {"in": 1.0, "inch": 1.0, "cm": 1 / 2.54, "mm": 1 / 25.4}
#: micrometres per unit
_UM = {"um": 1.0, "µm": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3}


@dataclass(frozen=True)
class OutputMetadata:
    """Everything but the pixels; every field optional (``None`` = unknown, not written).

    Attributes
    ----------
    dpi : float or None
        Print resolution in pixels per inch.
    pixel_size_um : float or None
        Microscopy pixel size in micrometres (written as pixels per centimetre).
    icc : bytes or None
        ICC colour profile.
    crs : str or None
        ``"EPSG:n"`` or a WKT string.
    transform : tuple of 6 floats or None
        GDAL geotransform ``(x0, dx, rx, y0, ry, dy)`` of the top-left pixel corner
        (``dy < 0`` for north-up images).
    nodata : float or None
        The GDAL nodata value.
    band_names : tuple of str or None
        One name per band (GDAL band descriptions).
    """

    dpi: float | None = None
    pixel_size_um: float | None = None
    icc: bytes | None = dataclasses.field(default=None, repr=False)
    crs: str | None = None
    transform: tuple[float, float, float, float, float, float] | None = None
    nodata: float | None = None
    band_names: tuple[str, ...] | None = None

    def replace(self, **kw) -> "OutputMetadata":
        return dataclasses.replace(self, **kw)

    @property
    def is_georeferenced(self) -> bool:
        return self.crs is not None or self.transform is not None

    def resolution(self, level: int = 0) -> tuple[float, str] | None:
        """``(pixels per unit, "INCH" | "CENTIMETER")`` of pyramid level ``level`` or None."""
        if self.pixel_size_um:
            return 1e4 / self.pixel_size_um / 2 ** level, "CENTIMETER"
        if self.dpi:
            return self.dpi / 2 ** level, "INCH"
        return None

    def describe(self) -> str:
        """A short phrase for the ``wrote`` line, e.g. ``"300 dpi, ICC profile"``."""
        parts = []
        if self.dpi:
            parts.append(f"{self.dpi:g} dpi")
        if self.pixel_size_um:
            parts.append(f"{self.pixel_size_um:g} um/px")
        if self.icc:
            parts.append("ICC profile")
        if self.crs:
            parts.append(self.crs if len(self.crs) < 24 else "CRS")
        if self.band_names:
            parts.append("bands " + ",".join(self.band_names))
        return ", ".join(parts)


# --------------------------------------------------------------------------------------
# parsing user values
# --------------------------------------------------------------------------------------

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"


def parse_print_size(text: str) -> tuple[float, float]:
    """``"60x40cm"`` / ``"24x16in"`` / ``"600x400mm"`` -> (width, height) in inches."""
    m = re.fullmatch(rf"\s*{_NUM}\s*[xX]\s*{_NUM}\s*(cm|mm|in|inch)\s*", str(text))
    if not m or float(m.group(1)) <= 0 or float(m.group(2)) <= 0:
        raise GigapatchError(f"print size {text!r}: expected WIDTHxHEIGHT with a unit, e.g. "
                             f"60x40cm, 600x400mm or 24x16in")
    f = _INCH[m.group(3)]
    return float(m.group(1)) * f, float(m.group(2)) * f


def print_size_pixels(text: str, dpi: float | None) -> tuple[int, int]:
    """``(width, height)`` in pixels of a print of size ``text`` at ``dpi``."""
    w_in, h_in = parse_print_size(text)
    if not dpi:
        raise GigapatchError(f"print size {text}: the pixel size needs a resolution; add "
                             f"--dpi N (e.g. --dpi 300), or use a reference that has one")
    return max(1, round(w_in * dpi)), max(1, round(h_in * dpi))


def parse_pixel_size(text: str | float) -> float:
    """``"0.25um"`` / ``"250nm"`` / ``0.25`` (micrometres) -> micrometres per pixel."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), "um"
    else:
        m = re.fullmatch(rf"\s*{_NUM}\s*(um|µm|micron|nm|mm)?\s*", str(text))
        if not m:
            value, unit = -1.0, "um"
        else:
            value, unit = float(m.group(1)), m.group(2) or "um"
    if not value > 0:
        raise GigapatchError(f"pixel size {text!r}: expected a positive length per pixel, "
                             f"e.g. 0.25um or 250nm")
    return value * _UM[unit]


def parse_crs(text: str) -> str:
    """``"EPSG:32633"`` (or ``"epsg:4326"``, ``"4326"``) -> ``"EPSG:n"``; WKT kept as is."""
    t = str(text).strip()
    m = re.fullmatch(r"(?:epsg:)?(\d{4,6})", t, flags=re.IGNORECASE)
    if m:
        return f"EPSG:{int(m.group(1))}"
    if t.upper().startswith(("PROJCS[", "GEOGCS[", "PROJCRS[", "GEOGCRS[", "COMPOUNDCRS[")):
        return t
    raise GigapatchError(f"CRS {text!r}: expected EPSG:CODE, e.g. EPSG:32633, or a WKT string")


def parse_pair(text: str | tuple, what: str) -> tuple[float, float]:
    """``"X,Y"`` -> (x, y)."""
    vals = _floats(text, 2, what, "X,Y, e.g. 500000,4649776")
    return vals[0], vals[1]


def parse_bounds(text: str | tuple) -> tuple[float, float, float, float]:
    """``"W,S,E,N"`` (left, bottom, right, top) -> floats, with W < E and S < N."""
    w, s, e, n = _floats(text, 4, "bounds", "WEST,SOUTH,EAST,NORTH, e.g. 0,0,1000,800")
    if not (w < e and s < n):
        raise GigapatchError(f"bounds {text!r}: need WEST < EAST and SOUTH < NORTH "
                             f"(order WEST,SOUTH,EAST,NORTH)")
    return w, s, e, n


def _floats(text, n: int, what: str, expected: str) -> list[float]:
    parts = list(text) if isinstance(text, (tuple, list)) else str(text).split(",")
    try:
        vals = [float(p) for p in parts]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != n or not all(v == v and abs(v) != float("inf") for v in vals):
        raise GigapatchError(f"{what} {text!r}: expected {expected}")
    return vals


# --------------------------------------------------------------------------------------
# reading a reference's metadata
# --------------------------------------------------------------------------------------

def read_metadata(path: str | os.PathLike) -> OutputMetadata:
    """Resolution, ICC profile, georeferencing and band names of an image file.

    Never raises for a readable image: what cannot be found is ``None``. (The pixels are
    read, and bad files refused, by :func:`gigapatch.storage.read_image`.) A resolution of
    exactly 25.4 dpi (1 px/mm) is libvips' placeholder for "unknown" and is not carried.
    """
    p = Path(os.fspath(path))
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError:
        return OutputMetadata()
    try:
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            meta = _read_tiff(p)
        else:
            icc = _vips_icc(p)
            if head[:8] == b"\x89PNG\r\n\x1a\n":
                meta = OutputMetadata(dpi=_png_dpi(p), icc=icc)
            elif head[:2] == b"\xff\xd8":
                meta = OutputMetadata(dpi=_jpeg_dpi(p), icc=icc)
            else:
                meta = OutputMetadata(icc=icc)
    except Exception:  # metadata is a bonus: a file whose pixels read is never refused here
        return OutputMetadata()
    if meta.dpi is not None and abs(meta.dpi - 25.4) < 1e-3:
        # 1 pixel per mm is what libvips writes when it knows nothing: not a resolution
        meta = meta.replace(dpi=None)
    return meta


def _vips_icc(p: Path) -> bytes | None:
    import pyvips

    try:
        im = pyvips.Image.new_from_file(str(p))
        if im.get_typeof("icc-profile-data"):
            return bytes(im.get("icc-profile-data"))
    except pyvips.Error:
        pass
    return None


def _read_tiff(p: Path) -> OutputMetadata:
    import tifffile

    with tifffile.TiffFile(p) as tf:
        page = tf.pages.first
        tags = page.tags
        dpi = um = None
        if 282 in tags and 296 in tags:
            x = tags[282].value
            ppu = x[0] / x[1] if isinstance(x, tuple) else float(x)
            unit = int(tags[296].value)
            if ppu > 0 and unit == 2:
                dpi = ppu
            elif ppu > 0 and unit == 3:
                # pixels per cm: a microscope's pixel size (<= 10 um, >= 1000 px/cm) or a
                # print resolution (<= 2540 dpi; 300 dpi is 118 px/cm)
                if ppu >= 1000:
                    um = 1e4 / ppu
                else:
                    dpi = ppu * 2.54
        icc = bytes(tags[34675].value) if 34675 in tags else None
        names = _gdal_band_names(tags[42112].value) if 42112 in tags else None
        nodata = None
        if 42113 in tags:
            try:
                nodata = float(str(tags[42113].value).strip("\x00 "))
            except ValueError:
                nodata = None
        geo = 34735 in tags or 33922 in tags or 34264 in tags
    meta = OutputMetadata(dpi=dpi, pixel_size_um=um, icc=icc, nodata=nodata, band_names=names)
    if geo:
        meta = meta.replace(**_read_geo(p))
    return meta


def _gdal_band_names(xml: str) -> tuple[str, ...] | None:
    items = re.findall(r'<Item\s+name="DESCRIPTION"\s+sample="(\d+)"\s+role="description"\s*>'
                       r'(.*?)</Item>', str(xml))
    if not items:
        return None
    by = {int(s): _unescape(v) for s, v in items}
    return tuple(by.get(i, "") for i in range(max(by) + 1))


def _unescape(s: str) -> str:
    return s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"') \
        .replace("&amp;", "&")


def _read_geo(p: Path) -> dict:
    """CRS and geotransform: through GDAL when rasterio is installed, else the GeoKeys."""
    try:
        import rasterio
    except ImportError:
        return _read_geo_tifffile(p)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.Env(GTIFF_SRS_SOURCE="EPSG"), rasterio.open(p) as ds:
            crs = None
            if ds.crs is not None:
                epsg = ds.crs.to_epsg()
                crs = f"EPSG:{epsg}" if epsg else ds.crs.to_wkt()
            t = ds.transform
            transform = None if t.is_identity else (t.c, t.a, t.b, t.f, t.d, t.e)
    return {"crs": crs, "transform": transform}


def _read_geo_tifffile(p: Path) -> dict:
    import tifffile

    with tifffile.TiffFile(p) as tf:
        geo = tf.geotiff_metadata or {}
    crs = None
    for key in ("ProjectedCSTypeGeoKey", "GeographicTypeGeoKey"):
        code = geo.get(key)
        code = int(getattr(code, "value", code)) if code is not None else None
        if code and code != 32767:
            crs = f"EPSG:{code}"
            break
    transform = None
    if "ModelTransformation" in geo:
        m = [float(v) for v in list(geo["ModelTransformation"])[:8]]
        transform = (m[3], m[0], m[1], m[7], m[4], m[5])
    elif "ModelPixelScale" in geo and "ModelTiepoint" in geo:
        sx, sy = [float(v) for v in list(geo["ModelPixelScale"])[:2]]
        i, j, _, x, y = [float(v) for v in list(geo["ModelTiepoint"])[:5]]
        transform = (x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy)
    return {"crs": crs, "transform": transform}


def _png_dpi(p: Path) -> float | None:
    """DPI from the PNG ``pHYs`` chunk (unit 1 = metre), if any; chunks before IDAT only."""
    with open(p, "rb") as f:
        f.read(8)
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            n, kind = struct.unpack(">I4s", head)
            if kind == b"pHYs":
                x, _, unit = struct.unpack(">IIB", f.read(9))
                return x * 0.0254 if unit == 1 and x > 0 else None
            if kind in (b"IDAT", b"IEND"):
                return None
            f.seek(n + 4, 1)


def _jpeg_dpi(p: Path) -> float | None:
    """DPI from a JPEG's JFIF header or its EXIF resolution (through libvips)."""
    with open(p, "rb") as f:
        head = f.read(20)
    if head[2:4] == b"\xff\xe0" and head[6:11] == b"JFIF\x00":
        unit, x = head[13], struct.unpack(">H", head[14:16])[0]
        if unit in (1, 2) and x > 1:
            return float(x) if unit == 1 else x * 2.54
    import pyvips

    im = pyvips.Image.new_from_file(str(p))
    if im.get_typeof("exif-ifd0-XResolution") and im.get_typeof("resolution-unit"):
        unit = im.get("resolution-unit")
        return im.xres * 25.4 if unit in ("in", "cm") else None
    return None


# --------------------------------------------------------------------------------------
# the output's metadata
# --------------------------------------------------------------------------------------

def output_metadata(reference: OutputMetadata | None, *, out_hw: tuple[int, int],
                    channels: int, dpi: float | None = None, pixel_size_um: float | None = None,
                    crs: str | None = None, origin: tuple[float, float] | None = None,
                    bounds: tuple[float, float, float, float] | None = None,
                    nodata: float | None = None, keep_reference: bool = True) \
        -> OutputMetadata:
    """The metadata of an output of ``out_hw`` pixels: the reference's, with user overrides.

    The output keeps the reference's pixel size and top-left corner (a new image with the
    same statistics, lying where the reference lay); ``origin`` moves the top-left corner,
    ``bounds`` (W, S, E, N) sets corner and pixel size together. ``dpi`` and
    ``pixel_size_um`` are two spellings of the resolution: giving both is refused.
    Band names are kept only when the output has the reference's band count, the ICC
    profile only when its colour space is the output's (RGB for 3+ bands, GRAY for 1-2).
    """
    ref = reference if (reference is not None and keep_reference) else OutputMetadata()
    if dpi and pixel_size_um:
        raise GigapatchError("--dpi and --pixel-size both set the resolution; give one "
                             "(--dpi for prints, --pixel-size for microscopy)")
    if origin is not None and bounds is not None:
        raise GigapatchError("--origin and --bounds both place the image; give one")
    m = ref
    if dpi:
        m = m.replace(dpi=float(dpi), pixel_size_um=None)
    if pixel_size_um:
        m = m.replace(pixel_size_um=float(pixel_size_um), dpi=None)
    if crs:
        m = m.replace(crs=parse_crs(crs))
    h, w = out_hw
    if bounds is not None:
        west, south, east, north = bounds
        m = m.replace(transform=(west, (east - west) / w, 0.0, north, 0.0,
                                 -(north - south) / h))
    elif origin is not None:
        if m.transform is None:
            raise GigapatchError("--origin needs a pixel size: the reference has no "
                                 "geotransform; give --bounds WEST,SOUTH,EAST,NORTH instead")
        t = m.transform
        m = m.replace(transform=(origin[0], t[1], t[2], origin[1], t[4], t[5]))
    if nodata is not None:
        m = m.replace(nodata=float(nodata))
    if m.band_names is not None and len(m.band_names) != channels:
        m = m.replace(band_names=None)
    if m.icc is not None and icc_colour_space(m.icc) != ("GRAY" if channels < 3 else "RGB"):
        m = m.replace(icc=None)  # e.g. a CMYK reference read as RGB: its profile would lie
    return m


def icc_colour_space(icc: bytes) -> str | None:
    """The data colour space an ICC profile describes (header bytes 16-19): ``"RGB"``,
    ``"GRAY"``, ``"CMYK"``, ... or None for a malformed profile."""
    if len(icc) < 20:
        return None
    return icc[16:20].decode("latin-1").strip() or None


# --------------------------------------------------------------------------------------
# writing helpers
# --------------------------------------------------------------------------------------

def gdal_metadata_xml(meta: OutputMetadata) -> str | None:
    """The GDAL_METADATA TIFF tag (42112) holding the band names, or None."""
    if not meta.band_names:
        return None
    esc = [n.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
           .replace('"', "&quot;") for n in meta.band_names]
    items = "".join(f'<Item name="DESCRIPTION" sample="{i}" role="description">{n}</Item>'
                    for i, n in enumerate(esc))
    return f"<GDALMetadata>{items}</GDALMetadata>"


def _is_geographic(code: int) -> bool:
    """EPSG geographic 2D CRSs are numbered 4001-4999 (e.g. 4326 WGS 84); the rest of
    what we write is projected. With GDAL installed, GDAL decides (``apply_to_gdal``)."""
    try:
        from rasterio.crs import CRS

        return bool(CRS.from_epsg(code).is_geographic)
    except Exception:
        return 4000 < code < 5000


def geokey_tags(meta: OutputMetadata) -> list[tuple]:
    """tifffile ``extratags`` for GeoTIFF: ModelPixelScale, ModelTiepoint (or
    ModelTransformation for rotated grids) and a GeoKeyDirectory for an ``EPSG:n`` CRS.

    A WKT CRS cannot be written without GDAL: write ``--format cog`` (rasterio) instead.
    """
    tags: list[tuple] = []
    t = meta.transform
    if t is not None:
        x0, dx, rx, y0, ry, dy = t
        if rx == 0 and ry == 0:
            tags.append((33550, 12, 3, (dx, -dy, 0.0), True))
            tags.append((33922, 12, 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True))
        else:
            tags.append((34264, 12, 16, (dx, rx, 0.0, x0, ry, dy, 0.0, y0, 0.0, 0.0, 0.0, 0.0,
                                         0.0, 0.0, 0.0, 1.0), True))
    if meta.crs is not None:
        if not meta.crs.upper().startswith("EPSG:"):
            raise GigapatchError("this CRS is not an EPSG code, and writing it needs GDAL: "
                                 "write --format cog (pip install \"gigapatch[gis]\") or give "
                                 "--crs EPSG:CODE")
        code = int(meta.crs.split(":")[1])
        geographic = _is_geographic(code)
        keys = [(1024, 0, 1, 2 if geographic else 1),   # GTModelType
                (1025, 0, 1, 1),                          # GTRasterType: PixelIsArea
                (2048 if geographic else 3072, 0, 1, code)]
        d = [1, 1, 0, len(keys)]
        for k in keys:
            d.extend(k)
        tags.append((34735, 3, len(d), tuple(d), True))
    if meta.nodata is not None:
        tags.append((42113, 2, 0, _nodata_text(meta.nodata), True))
    xml = gdal_metadata_xml(meta)
    if xml:
        tags.append((42112, 2, 0, xml, True))
    return tags


def _nodata_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def apply_to_gdal(ds, meta: OutputMetadata) -> None:
    """Set CRS, geotransform, nodata and band names on an open rasterio dataset (r+)."""
    from affine import Affine
    from rasterio.crs import CRS

    if meta.crs is not None:
        ds.crs = CRS.from_user_input(meta.crs)
    if meta.transform is not None:
        x0, dx, rx, y0, ry, dy = meta.transform
        ds.transform = Affine(dx, rx, x0, ry, dy, y0)
    if meta.nodata is not None:
        ds.nodata = meta.nodata
    if meta.band_names:
        for i, name in enumerate(meta.band_names, start=1):
            ds.set_band_description(i, name)
