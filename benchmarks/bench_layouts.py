"""Pyramid layouts x readers: does each reader see every level, and how long does a
1024 px thumbnail take?

Writes one synthetic RGB pyramid (default 8192 x 8192 = 67 MP, every level drawn directly
at its own resolution, no sampling) with our writers in each layout:

- ``tifffile-chain``  : write_tiff_tifffile(layout="chain")   (the default)
- ``tifffile-subifd`` : write_tiff_tifffile(layout="subifd")
- ``vips-chain``      : write_tiff_vips(layout="chain")
- ``vips-subifd``     : write_tiff_vips(layout="subifd")
- ``cog``             : GDAL's COG driver (rasterio) from the tifffile-chain file with
                        OVERVIEWS=FORCE_USE_EXISTING (what gigapatch.storage.cog does)

then opens each file with tifffile, pyvips, GDAL (rasterio), OpenSlide and tiffslide, and
prints one JSON object: per layout and reader, the levels seen and the seconds to a
thumbnail whose long side is 1024 px (best of ``--repeat``, fresh open each time).

    python benchmarks/bench_layouts.py --size 8192 --out /tmp/layouts > layouts.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from gigapatch.storage.tiff import write_tiff_tifffile, write_tiff_vips

TILE = 256
THUMB = 1024


def level_shapes(h: int, w: int, tile: int = TILE) -> list[tuple[int, int]]:
    shapes = [(h, w)]
    while max(shapes[-1]) > tile:
        hh, ww = shapes[-1]
        shapes.append(((hh + 1) // 2, (ww + 1) // 2))
    return shapes


def synthetic_bands(shape, r: int, band: int):
    """(y0, (3, band, W)) uint8 bands of level ``r``: a smooth colour field with fine stripes,
    evaluated at level-0 coordinates * 2**r (so each level looks like the downsampled one)."""
    h, w = shape
    x = (np.arange(w, dtype=np.float32) + 0.5) * 2 ** r
    for y0 in range(0, h, band):
        y = (np.arange(y0, min(h, y0 + band), dtype=np.float32) + 0.5) * 2 ** r
        yy, xx = y[:, None], x[None, :]
        c = np.stack(np.broadcast_arrays(
            0.5 + 0.5 * np.sin(xx / 700.0 + yy / 1300.0),
            0.5 + 0.5 * np.cos(yy / 500.0) + 0 * xx,
            0.5 + 0.25 * np.sin((xx + yy) / 37.0) + 0.25 * np.sin(xx / 3000.0)))
        yield y0, np.ascontiguousarray((c * 255).round().astype(np.uint8))


def write_all(out: Path, size: int) -> dict[str, Path]:
    shapes = level_shapes(size, size)
    levels = [lambda r=r: synthetic_bands(shapes[r], r, 1024) for r in range(len(shapes))]
    files, seconds = {}, {}
    for layout in ("chain", "subifd"):
        p = out / f"tifffile-{layout}.tif"
        t = time.perf_counter()
        write_tiff_tifffile(p, levels, shapes, channels=3, dtype="uint8", tile=TILE,
                            layout=layout)
        files[f"tifffile-{layout}"], seconds[f"tifffile-{layout}"] = p, time.perf_counter() - t
    for layout in ("chain", "subifd"):
        p = out / f"vips-{layout}.tif"
        t = time.perf_counter()
        write_tiff_vips(p, synthetic_bands(shapes[0], 0, 1024), shapes[0], channels=3,
                        dtype="uint8", tile=TILE, layout=layout)
        files[f"vips-{layout}"], seconds[f"vips-{layout}"] = p, time.perf_counter() - t
    import rasterio
    import rasterio.shutil

    p = out / "cog.tif"
    t = time.perf_counter()
    rasterio.shutil.copy(str(files["tifffile-chain"]), str(p), driver="COG", COMPRESS="DEFLATE",
                         PREDICTOR="YES", BLOCKSIZE=str(TILE), OVERVIEWS="FORCE_USE_EXISTING",
                         BIGTIFF="IF_SAFER")
    files["cog"], seconds["cog"] = p, time.perf_counter() - t
    return files, seconds


# --- readers: each returns (levels seen, thumbnail (H, W, C) array) ---------------------

def r_tifffile(p: Path):
    import tifffile

    with tifffile.TiffFile(p) as tf:
        levels = tf.series[0].levels
        # smallest level whose long side is still >= THUMB, then decimate
        pick = [lv for lv in levels if max(lv.shape[:2]) >= THUMB][-1]
        a = pick.asarray()
        step = math.ceil(max(a.shape[:2]) / THUMB)
        return len(levels), a[::step, ::step]


def r_pyvips(p: Path):
    import pyvips

    im = pyvips.Image.new_from_file(str(p))
    n = int(im.get("n-pages")) if im.get_typeof("n-pages") else 1
    try:
        nsub = int(im.get("n-subifds")) if im.get_typeof("n-subifds") else 0
    except pyvips.Error:
        nsub = 0
    th = pyvips.Image.thumbnail(str(p), THUMB)
    return max(n, nsub + 1), th.numpy()


def r_gdal(p: Path):
    import rasterio

    with rasterio.open(p) as ds:
        n = 1 + len(ds.overviews(1))
        f = max(ds.width, ds.height) / THUMB
        a = ds.read(out_shape=(ds.count, round(ds.height / f), round(ds.width / f)))
        return n, np.moveaxis(a, 0, -1)


def r_openslide(p: Path):
    import openslide

    with openslide.OpenSlide(str(p)) as s:
        return s.level_count, np.asarray(s.get_thumbnail((THUMB, THUMB)))


def r_tiffslide(p: Path):
    import tiffslide

    with tiffslide.TiffSlide(str(p)) as s:
        return s.level_count, np.asarray(s.get_thumbnail((THUMB, THUMB)))


READERS = {"tifffile": r_tifffile, "pyvips": r_pyvips, "gdal": r_gdal,
           "openslide": r_openslide, "tiffslide": r_tiffslide}


def versions() -> dict:
    import openslide
    import pyvips
    import rasterio
    import tifffile
    import tiffslide

    return {"tifffile": tifffile.__version__,
            "libvips": ".".join(str(pyvips.version(i)) for i in range(3)),
            "gdal": rasterio.__gdal_version__, "rasterio": rasterio.__version__,
            "openslide": openslide.__library_version__, "tiffslide": tiffslide.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=8192, help="square output side (px)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/gigapatch-layouts"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files, write_s = write_all(args.out, args.size)
    n_levels = len(level_shapes(args.size, args.size))
    rows = []
    for layout, p in files.items():
        for name, fn in READERS.items():
            row = {"layout": layout, "reader": name, "levels_written": None}
            try:
                best = math.inf
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    n, th = fn(p)
                    best = min(best, time.perf_counter() - t)
                row.update(levels_seen=n, thumb_s=round(best, 3),
                           thumb_shape=list(th.shape), thumb_mean=round(float(th.mean()), 1))
            except Exception as exc:  # a reader that cannot open the layout is a result
                row.update(levels_seen=0, error=f"{type(exc).__name__}: {exc}"[:200])
            rows.append(row)
    import tifffile

    for row in rows:
        with tifffile.TiffFile(files[row["layout"]]) as tf:
            row["levels_written"] = len(tf.series[0].levels)
    print(json.dumps({"benchmark": "layouts", "size": [args.size, args.size],
                      "megapixels": round(args.size ** 2 / 1e6, 1), "tile": TILE,
                      "compression": "deflate+predictor", "write_s": {k: round(v, 2) for k, v
                                                                      in write_s.items()},
                      "file_mb": {k: round(os.path.getsize(v) / 2**20, 1)
                                  for k, v in files.items()},
                      "machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "load": os.getloadavg(),
                      "versions": versions(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
