"""The ``gigapatch`` command line.

    gigapatch generate REF -o OUT [--size WxH | --scale F | --scale FXxFY] [--seed N] [-n N]
                       [--config YAML|PRESET] [--set section.key=value ...]
                       [--device auto|cpu|cuda] [--max-input-pixels N] [-q | -v]
    gigapatch info REF [--size WxH | --scale ...] [--config ...] [--set ...] [-v]
    gigapatch eval ...            (gigapatch.cli_eval)
    gigapatch --version

``-v`` logs every automatic choice (level count, backend per level, tiled or not, worker
threads, device) on stderr through the ``gigapatch`` loggers; ``-q`` silences the notes.

Exit status: 0 success; 2 a problem the user can fix (bad input, option, config or output
path), reported as ONE line ``gigapatch: error: ...`` on stderr with no traceback; 130
interrupted (Ctrl-C). Any other exception is a bug and propagates with its traceback.

The sampler (torch) is imported inside the commands that need it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import time
from typing import Sequence

from .cli_batch import add_batch_parser
from .cli_eval import add_eval_parser
from .errors import GigapatchError

__all__ = ["main", "build_parser", "parse_size", "parse_scale"]

log = logging.getLogger(__package__)

PROG = "gigapatch"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage block), like our other errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{PROG}: error: {_one_line(message)} "
                              f"(see `{self.prog} --help`)\n")


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


# --------------------------------------------------------------------------------------
# option types
# --------------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)`` (width, height); each side >= 1."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT in pixels such as 640x480, got {text!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(
            f"width and height must be at least 1 pixel, got {text!r}")
    return w, h


def _factor(text: str, whole: str) -> float:
    try:
        f = float(text)
    except ValueError:
        f = math.nan
    if not (math.isfinite(f) and f > 0):
        raise argparse.ArgumentTypeError(
            f"expected a factor > 0 such as 1.5, or FXxFY such as 2x1, got {whole!r}")
    return f


def parse_scale(text: str) -> float | tuple[float, float]:
    """``"1.5"`` -> ``1.5``; ``"2x1"`` -> ``(2.0, 1.0)`` (x factor, y factor)."""
    parts = re.split(r"[xX]", text.strip())
    if len(parts) == 1:
        return _factor(parts[0], text)
    if len(parts) == 2:
        return _factor(parts[0], text), _factor(parts[1], text)
    raise argparse.ArgumentTypeError(
        f"expected a factor such as 1.5, or FXxFY such as 2x1, got {text!r}")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") \
            from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return v


def _tile_side(text: str) -> int:
    v = _positive_int(text)
    if v % 64:
        raise argparse.ArgumentTypeError(
            f"the tile side must be a multiple of 64 such as {max(64, round(v / 64) * 64)}, "
            f"got {text!r}")
    return v


def _page(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a page number >= 0, got {text!r}")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


# --------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------

def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("gigapatch")
    except (ImportError, PackageNotFoundError):
        return "unknown (not installed)"


def _add_size_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--size", type=parse_size, metavar="WxH",
                   help="output size in pixels, e.g. 640x480 (default: the reference's)")
    g.add_argument("--scale", type=parse_scale, metavar="F|FXxFY",
                   help="output size as a factor of the reference's: 1.5 for both sides, "
                        "or FXxFY for width and height apart: 2x1 doubles the width and "
                        "keeps the height")
    g.add_argument("--print-size", metavar="WxH{cm,mm,in}",
                   help="output size as a print, e.g. 60x40cm, at --dpi (or the "
                        "reference's resolution): 60x40cm at 300 dpi is 7087x4724 px")


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="YAML|PRESET",
                   help="a YAML config file or a bundled preset name such as 'default' "
                        "(every key is documented in configs/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE",
                   help="override one config key, e.g. --set sampler.steps=20 (repeatable)")
    p.add_argument("--page", type=_page, metavar="N",
                   help="the page of a multi-page TIFF or the frame of an animated WebP/GIF "
                        "reference to use, from 0 (such files are refused without it)")
    p.add_argument("--tileable", choices=("x", "y", "xy"),
                   help="a seamless texture: left/right (x), top/bottom (y) or all edges (xy) "
                        "meet when copies are laid side by side (sampler.tileable; wrapped "
                        "sides are rounded up to a multiple of 2**(levels-1))")
    p.add_argument("--symmetry", choices=("x", "y", "xy"),
                   help="a mirror-symmetric output about the vertical (x) and/or horizontal "
                        "(y) axis (sampler.symmetry; whole-image path only)")
    p.add_argument("--max-input-pixels", type=_positive_int, metavar="N",
                   help="refuse references with more pixels than this (decompression-bomb "
                        "guard; default output.max_input_pixels = 400000000)")


def _add_tiled_options(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group(
        "tiled pipeline", "chosen by itself when the output exceeds "
        "tiling.global_max_pixels; resumable: re-run the same command to finish a killed run")
    t.add_argument("--tiled", action="store_true", default=None,
                   help="use the tiled pipeline for any size")
    t.add_argument("--tile", type=_tile_side, metavar="N",
                   help="tile core side in pixels, a multiple of 64 (default tiling.tile)")
    t.add_argument("--run-dir", metavar="DIR",
                   help="run store for tiles and resume (default: OUT.gp-run/ beside OUT)")
    t.add_argument("--keep-run", action="store_true", default=None,
                   help="keep the run store after the output is written (default "
                        "tiling.keep_run: removed on success, kept on failure to resume)")
    t.add_argument("--cluster", metavar="ADDR",
                   help="address of a dask.distributed scheduler (default cluster.address); "
                        "the run dir must be on a path every worker sees")
    t.add_argument("--format", choices=("tiff", "cog", "dzi", "ome-zarr", "png"),
                   help="output format (default from the suffix: .tif pyramidal BigTIFF, "
                        ".dzi Deep Zoom for OpenSeadragon, .ome.zarr OME-Zarr 0.5, .png); "
                        "cog: Cloud-Optimized GeoTIFF (.tif; needs gigapatch[gis])")
    t.add_argument("--writer", choices=("tifffile", "vips"),
                   help="pyramidal TIFF writer (default output.writer)")
    t.add_argument("--layout", choices=("chain", "subifd"),
                   help="pyramidal TIFF levels in the main IFD chain (default: every reader "
                        "sees them) or as SubIFDs (OME-TIFF style; OpenSlide sees level 0 "
                        "only); default output.layout")


def _add_metadata_options(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group(
        "output metadata", "the reference's ICC profile, resolution, georeferencing and band "
        "names are carried into the output; these set or replace them")
    m.add_argument("--dpi", type=_positive_float, metavar="N",
                   help="print resolution in pixels per inch (default output.dpi, else the "
                        "reference's; none is written when nobody knows it)")
    m.add_argument("--pixel-size", metavar="LEN", dest="pixel_size",
                   help="microscopy pixel size, e.g. 0.25um (OpenSlide/QuPath read it as "
                        "microns per pixel)")
    m.add_argument("--crs", metavar="EPSG:CODE", help="GeoTIFF CRS, e.g. EPSG:32633")
    m.add_argument("--origin", metavar="X,Y",
                   help="map coordinates of the top-left corner (pixel size: the "
                        "reference's)")
    m.add_argument("--bounds", metavar="W,S,E,N",
                   help="map extent WEST,SOUTH,EAST,NORTH (sets corner and pixel size)")
    m.add_argument("--nodata", type=float, metavar="V", help="GDAL nodata value")
    m.add_argument("--no-metadata", dest="keep_metadata", action="store_false", default=None,
                   help="do not carry the reference's ICC profile, resolution, "
                        "georeferencing or band names")
    m.add_argument("--preview", action="store_true", default=None,
                   help="also write OUT.preview.jpg (1024 px long side)")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (the eval subcommand only when its module exists)."""
    parser = _Parser(
        prog=PROG,
        description="New images with the patch statistics of one reference image "
                    "(training-free patch diffusion).",
        epilog="Run `gigapatch COMMAND --help` for the options of one command.")
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    g = sub.add_parser(
        "generate", help="generate new images from a reference",
        description="Generate new images with the patch statistics of REF.",
        epilog="Example: gigapatch generate examples/starry_night.png -o out.png --scale 1.5x1")
    g.add_argument("reference", metavar="REF", help="reference image (PNG, JPEG or TIFF)")
    g.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file: .png, .tif/.tiff or .jpg; with -n > 1, OUT_000.png, "
                        "OUT_001.png, ...")
    _add_size_options(g)
    g.add_argument("--seed", type=_int, default=0, metavar="N",
                   help="random seed, 0 <= N < 2**63; the same seed gives the same image "
                        "(default 0)")
    g.add_argument("-n", "--num-samples", type=_positive_int, default=1, metavar="N",
                   help="number of images, with seeds SEED, SEED+1, ... (default 1)")
    _add_config_options(g)
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to compute: auto (the GPU if there is one), cpu or cuda")
    verbosity = g.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="no progress bar and no notes; still prints the files written")
    _add_verbose_option(verbosity)
    m = g.add_argument_group(
        "map stacks and alpha", "the maps of one material sampled together as one "
        "multi-channel image, written as one aligned output per map (whole-image path)")
    m.add_argument("--with", dest="maps", action="append", default=[], metavar="MAP",
                   help="another map of the same material (normal, roughness, height, ...), "
                        "the size of REF; repeatable; or a YAML list of maps (entries PATH or "
                        "{path, weight, normal}). Written as OUT_<map name>.<suffix>; a float "
                        "map with values below 0 (normals in [-1, 1]) stays in [-1, 1]: a "
                        "float32 TIFF for a .tif OUT, else 8/16-bit encoded 0.5 + n/2")
    m.add_argument("--map-weights", metavar="W,W,...",
                   help="weight of each map in the patch match, REF first (default 1 for REF, "
                        "0.5 for the others: REF drives the match)")
    m.add_argument("--normalize-normals", action="store_true",
                   help="renormalise normal maps to unit length on output (maps whose file "
                        "name contains 'normal', or flagged normal: true in a YAML list; "
                        "encoded 0.5 + n/2 or floats in [-1, 1])")
    m.add_argument("--alpha", choices=("drop", "keep"), default="drop",
                   help="keep: an alpha channel is sampled as a channel and written back as "
                        "alpha (PNG/TIFF); drop (default): ignored with a note")
    _add_tiled_options(g)
    _add_metadata_options(g)
    g.set_defaults(func=_cmd_generate)

    i = sub.add_parser(
        "info", help="show the reference, the pyramid levels and cost estimates",
        description="Show what `generate` would do with REF: the pyramid levels, the patch "
                    "counts and a memory and work estimate of the exact denoiser per level.")
    i.add_argument("reference", metavar="REF", help="reference image (PNG, JPEG or TIFF)")
    _add_size_options(i)
    _add_config_options(i)
    _add_verbose_option(i)
    i.add_argument("--tiled", action="store_true", default=None,
                   help="show the tiling of the tiled pipeline for any size")
    i.add_argument("--tile", type=_tile_side, metavar="N",
                   help="tile core side to show (default tiling.tile)")
    i.set_defaults(func=_cmd_info)

    add_eval_parser(sub)
    add_batch_parser(sub)
    return parser


def _add_verbose_option(p) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log every automatic choice (levels, backend per level, tiling, "
                        "threads, device) on stderr; -vv adds debug detail")


def _setup_logging(args: argparse.Namespace) -> None:
    """The ``gigapatch`` loggers print ``gigapatch: message`` on stderr: warnings by default,
    the automatic choices (INFO) with ``-v``, debug detail with ``-vv``, errors only with
    ``-q``."""
    verbose = getattr(args, "verbose", 0)
    level = logging.ERROR if getattr(args, "quiet", False) else \
        logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logger = logging.getLogger(__package__)
    for h in list(logger.handlers):
        if getattr(h, "_gigapatch_cli", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._gigapatch_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


# --------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------

def _note(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"{PROG}: {message}", file=sys.stderr)


def _load_config(args: argparse.Namespace):
    from .config import load_config

    cfg = load_config(args.config, tuple(args.overrides))
    if args.max_input_pixels is not None:
        cfg = cfg.replace(output={"max_input_pixels": args.max_input_pixels})
    output = {key: getattr(args, key) for key in _OUTPUT_FLAGS
              if getattr(args, key, None) is not None}
    if output:
        cfg = cfg.replace(output=output)
    for key in ("tileable", "symmetry"):
        if getattr(args, key, None):
            cfg = cfg.replace(sampler={key: getattr(args, key)})
    from .pipeline.plan import priors_dropped

    if priors_dropped(cfg):
        _note(args, "note: a tileable output is sampled without the composition priors "
                    "(prior.position_strength, prior.t0, prior.usage_strength): a torus has "
                    "no frame to keep a layout in")
    return cfg


#: CLI flags that set the output.KEY of the same name.
_OUTPUT_FLAGS = ("layout", "dpi", "pixel_size", "crs", "origin", "bounds", "nodata",
                 "keep_metadata", "preview")


def _read_reference(args: argparse.Namespace, cfg):
    from .storage import read_image

    # native: an 8/16-bit reference stays uint8/uint16 (api.generate converts it to model
    # space in bands; the tiled pipeline's coerce_image to the same float32 values)
    ref, info = read_image(args.reference, max_pixels=cfg.output.max_input_pixels,
                           what="reference", page=args.page, words="cli", native=True)
    for line in info.notes:  # orientation applied, alpha dropped, CMYK converted
        _note(args, line.removeprefix(f"{PROG}: "))
    return ref, info


def _mode(channels: int) -> str:
    from .storage.read import channel_mode

    return channel_mode(channels)


def _cmd_generate(args: argparse.Namespace) -> int:
    from .inputs import check_output_format, check_seed

    check_seed(args.seed, "--seed", count=args.num_samples)
    check_output_format(args.output, args.format, "--format")
    cfg = _load_config(args)
    if args.maps or args.alpha == "keep" or args.map_weights or args.normalize_normals:
        return _generate_maps(args, cfg)
    ref, info = _read_reference(args, cfg)
    from . import api
    from .pipeline.outmeta import resolve_output_metadata
    from .pipeline.plan import is_tiled
    from .pipeline.run import output_format
    from .storage import check_writable, numbered_path, write_image
    from .storage.metadata import read_metadata

    device = api.resolve_device(args.device, option="--device")
    log.info("device: %s (--device %s)", device, args.device)
    name = str(args.output).lower().rstrip("/\\")
    fmt = args.format or ("dzi" if name.endswith(".dzi") else
                          "ome-zarr" if name.endswith(".zarr") else None)
    special = fmt in ("ome-zarr", "cog", "dzi")  # always through the tiled pipeline
    ref_meta = read_metadata(args.reference)
    cfg = _resolve_bit_depth(cfg, info, args.output, fmt)
    _apply_print_size(args, cfg, ref_meta)
    ref_hw = ref.shape[:2]
    asked = api.resolve_size(ref_hw, args.size, args.scale)
    out_hw = api.output_size(ref_hw, asked, cfg)  # refuses too-small references and outputs
    if out_hw != asked:
        _note(args, f"note: a tileable output wraps at every pyramid level, so its size is "
                    f"{out_hw[1]}x{out_hw[0]} (asked {asked[1]}x{asked[0]}; wrapped sides are "
                    f"multiples of 2**(levels-1))")
    bit_depth = cfg.output.bits()
    meta = resolve_output_metadata(ref_meta, cfg, out_hw, ref.shape[2])
    outputs = [numbered_path(args.output, k, args.num_samples)
               for k in range(args.num_samples)]

    if not special:
        check_writable(outputs[0], bit_depth=bit_depth, channels=info.channels)
    store_options = [o for o, v in (("--tiled", args.tiled), ("--tile", args.tile),
                                    ("--run-dir", args.run_dir), ("--cluster", args.cluster))
                     if v]
    if special or is_tiled(out_hw, cfg.tiling, bool(store_options)):
        fmt = output_format(args.output, args.format)
        log.info("tiled pipeline (%s)", ", ".join(store_options) if store_options else
                 f"{out_hw[1]}x{out_hw[0]} with tiling.mode={cfg.tiling.mode}, "
                 f"global_max_pixels={cfg.tiling.global_max_pixels}, format {fmt}")
        return _generate_tiled(args, cfg, ref, outputs, meta)
    log.info("whole image in memory (%dx%d <= tiling.global_max_pixels=%d or "
             "tiling.mode=%s)", out_hw[1], out_hw[0], cfg.tiling.global_max_pixels,
             cfg.tiling.mode)
    for out in outputs:  # before any expensive work
        check_writable(out, bit_depth=bit_depth, channels=info.channels)
    for k, out in enumerate(outputs):
        seed = args.seed + k
        if args.num_samples > 1:
            _note(args, f"sample {k + 1}/{args.num_samples} (seed {seed})")
        t0 = time.perf_counter()
        image = api.generate(ref, size=args.size, scale=args.scale, seed=seed, config=cfg,
                             device=args.device, progress=not args.quiet)
        write_image(out, image, bit_depth=bit_depth, metadata=meta)
        h, w = image.shape[:2]
        extra = meta.describe()
        print(f"wrote {out} ({w}x{h}, {_mode(image.shape[2])}, {bit_depth}-bit"
              f"{f', {extra}' if extra else ''}) in {time.perf_counter() - t0:.1f} s",
              flush=True)
        if cfg.output.preview:
            from .storage.quantise import quantise
            from .storage.web import preview_path, write_preview

            q = quantise(image, bit_depth)
            print(f"  preview: {write_preview(preview_path(out), q)}", flush=True)
    return 0


def _resolve_bit_depth(cfg, info, output, fmt):
    """output.bit_depth=auto -> 16 for a 16-bit or float reference (8 for JPEG/DZI)."""
    if cfg.output.bit_depth != "auto":
        return cfg
    bits = cfg.output.bits(info.bit_depth)
    if str(output).lower().endswith((".jpg", ".jpeg")) or fmt == "dzi":
        bits = 8
    return cfg.replace(output={"bit_depth": bits})


def _apply_print_size(args: argparse.Namespace, cfg, ref_meta) -> None:
    """--print-size 60x40cm -> args.size in pixels at --dpi (or the reference's DPI)."""
    if not getattr(args, "print_size", None):
        return
    from .storage.metadata import print_size_pixels

    dpi = cfg.output.dpi or (ref_meta.dpi if cfg.output.keep_metadata else None)
    args.size = print_size_pixels(args.print_size, dpi)
    if not cfg.output.dpi and dpi:
        _note(args, f"note: --print-size {args.print_size} at the reference's {dpi:g} dpi")


def _map_specs(args: argparse.Namespace) -> list:
    from pathlib import Path

    from .stacks import MapSpec, read_map_list

    specs = [MapSpec(args.reference, normal="normal" in Path(args.reference).stem.lower())]
    for m in args.maps:
        if m.lower().endswith((".yaml", ".yml")):
            specs += read_map_list(m)
        else:
            specs.append(MapSpec(m, normal="normal" in Path(m).stem.lower()))
    if args.map_weights:
        try:
            w = [float(v) for v in args.map_weights.split(",")]
        except ValueError:
            w = []
        if len(w) != len(specs) or not all(v > 0 for v in w):
            raise GigapatchError(f"--map-weights {args.map_weights}: give {len(specs)} numbers "
                                 f"> 0 separated by commas, one per map (REF first)")
        specs = [MapSpec(s.path, v, s.normal) for s, v in zip(specs, w)]
    if args.normalize_normals and not any(s.normal for s in specs):
        raise GigapatchError("--normalize-normals: no normal map among the maps; name its "
                             "file ...normal... or flag it normal: true in a YAML map list")
    return specs


def _generate_maps(args: argparse.Namespace, cfg) -> int:
    """A map stack (REF + --with maps, or a reference whose alpha is kept): one aligned
    output per map."""
    from . import api
    from .pipeline.plan import is_tiled
    from .stacks import (check_aligned, check_stack_fits, generate_maps, map_output_paths,
                         write_map)
    from .storage import check_writable, numbered_path, read_image

    specs = _map_specs(args)
    arrays, alpha, signed = [], [], []
    for i, s in enumerate(specs):
        a, info = read_image(s.path, max_pixels=cfg.output.max_input_pixels,
                             what="reference" if i == 0 else "map",
                             page=args.page if i == 0 else None, alpha=args.alpha,
                             signed=True)
        for line in info.notes:
            _note(args, line.removeprefix(f"{PROG}: "))
        if i == 0:
            cfg = _resolve_bit_depth(cfg, info, args.output, args.format)
        arrays.append(a)
        alpha.append(info.alpha_kept)
        signed.append(info.signed)
    names = [s.path for s in specs]
    check_aligned(arrays, names)
    api.resolve_device(args.device, option="--device")
    ref_hw = arrays[0].shape[:2]
    asked = api.resolve_size(ref_hw, args.size, args.scale)
    out_hw = api.output_size(ref_hw, asked, cfg)
    if out_hw != asked:
        _note(args, f"note: a tileable output wraps at every pyramid level, so its size is "
                    f"{out_hw[1]}x{out_hw[0]} (asked {asked[1]}x{asked[0]}; wrapped sides are "
                    f"multiples of 2**(levels-1))")
    if args.format not in (None, "png") or is_tiled(
            out_hw, cfg.tiling, bool(args.tiled or args.tile or args.run_dir or args.cluster)):
        raise GigapatchError(f"map stacks and --alpha keep use the whole-image path: ask for at "
                             f"most tiling.global_max_pixels={cfg.tiling.global_max_pixels} "
                             f"pixels (got {out_hw[1]}x{out_hw[0]}) and drop the tiled options")
    check_stack_fits(ref_hw, sum(a.shape[2] for a in arrays), cfg, names)
    bit_depth = cfg.output.bit_depth
    outputs = [map_output_paths(numbered_path(args.output, k, args.num_samples), names)
               for k in range(args.num_samples)]
    for paths in outputs:  # before any expensive work
        for p, a, al in zip(paths, arrays, alpha):
            check_writable(p, bit_depth=bit_depth, channels=a.shape[2], alpha=al)
    for k, paths in enumerate(outputs):
        seed = args.seed + k
        if args.num_samples > 1:
            _note(args, f"sample {k + 1}/{args.num_samples} (seed {seed})")
        t0 = time.perf_counter()
        images = generate_maps(arrays, specs=specs, normalize_normals=args.normalize_normals,
                               size=args.size, scale=args.scale, seed=seed, config=cfg,
                               device=args.device, progress=not args.quiet)
        dt = time.perf_counter() - t0
        for p, image, al, sg in zip(paths, images, alpha, signed):
            how = write_map(p, image, signed=sg, bit_depth=bit_depth, dpi=cfg.output.dpi,
                            alpha=al)
            h, w = image.shape[:2]
            mode = _mode(image.shape[2] - 1) + "+alpha" if al else _mode(image.shape[2])
            print(f"wrote {p} ({w}x{h}, {mode}, {how}) in {dt:.1f} s", flush=True)
    return 0


def _generate_tiled(args: argparse.Namespace, cfg, ref, outputs, meta=None) -> int:
    from .api import generate_tiled
    from .pipeline import TiledOptions

    for k, out in enumerate(outputs):
        seed = args.seed + k
        if args.num_samples > 1:
            _note(args, f"sample {k + 1}/{args.num_samples} (seed {seed})")
        run_dir = args.run_dir if args.num_samples == 1 or args.run_dir is None \
            else f"{args.run_dir}_{k:03d}"
        options = TiledOptions(run_dir=run_dir, tile=args.tile,
                               tiled=True if args.tiled else None, cluster=args.cluster,
                               fmt=args.format, writer=args.writer, keep_run=args.keep_run)
        result = generate_tiled(ref, out, size=args.size, scale=args.scale, seed=seed,
                                config=cfg, device=args.device, options=options,
                                progress=not args.quiet, metadata=meta)
        for line in result.describe():
            print(line, flush=True)
    return 0


def _describe_priors(ps) -> str:
    """One line for ``info``: the priors a run takes (after a tileable output drops them)."""
    def where(n: int) -> str:
        return "the coarsest level" if n == 1 else f"the {n} coarsest levels"

    parts = []
    if ps.t0 < 1.0:
        parts.append(f"partial-noise start t0={ps.t0:g}")
    if ps.position_strength > 0:
        parts.append(f"position {ps.position_strength:g} ({ps.position_axes}) on "
                     f"{where(ps.position_levels)}")
    if ps.usage_strength > 0:
        parts.append(f"usage {ps.usage_strength:g} on {where(ps.usage_levels)} (sampled "
                     f"twice: pilot + pass)")
    return "; ".join(parts) if parts else "none (the paper's sampler)"


def _cmd_info(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    ref, info = _read_reference(args, cfg)
    from . import api
    from .info import format_bytes, format_table, level_costs
    from .pipeline.plan import denoiser_settings, make_plan, prior_settings
    from .storage.metadata import read_metadata

    cfg = _resolve_bit_depth(cfg, info, "", None)
    _apply_print_size(args, cfg, read_metadata(args.reference))
    ref_hw = ref.shape[:2]
    out_hw = api.output_size(ref_hw, api.resolve_size(ref_hw, args.size, args.scale), cfg)
    device = api.resolve_device("auto")
    plan = make_plan(ref_hw, out_hw, info.channels, cfg, seed=0, ref_digest="",
                     tile=args.tile, tiled=args.tiled, device=device)
    levels = plan.levels
    sc, dn = cfg.sampler, cfg.denoiser
    costs = level_costs(levels, patch_size=sc.patch_size, channels=info.channels,
                        steps=sc.steps, memory_budget_mb=dn.memory_budget_mb,
                        settings=denoiser_settings(cfg), tile=plan.tile)
    print(f"reference: {args.reference} ({info.describe()})")
    print(f"output:    {out_hw[1]}x{out_hw[0]}, {_mode(info.channels)}, "
          f"{cfg.output.bits()}-bit")
    print(f"sampler:   P={sc.patch_size}, rho={sc.rho:g}, T={sc.steps}, eta={sc.eta:g}, "
          f"mode={sc.mode}, {len(levels)} level{'s' if len(levels) != 1 else ''} "
          f"(levels={sc.levels})")
    print(f"denoiser:  {dn.backend}, {dn.dtype}, working memory <= "
          f"{format_bytes(dn.memory_budget_mb * 2**20)} per call")
    print(f"priors:    {_describe_priors(prior_settings(cfg))}")
    print(f"levels, coarsest first (memory of each level's backend, as chosen on "
          f"{device.type}: index = the exact dictionary, ref patches x P*P*C x 4 bytes, or "
          f"the fast index within denoiser.index_budget_mb; window = one tile or the whole "
          f"level; work of the exact denoiser):")
    for line in format_table(costs, settings=denoiser_settings(cfg)):
        print("  " + line)
    peak = max(e.memory_bytes for e in costs)
    total = sum(e.gflop for e in costs)
    print(f"peak memory (largest level's denoiser, without torch and the decoded "
          f"reference): ~{format_bytes(peak)}; work: ~{total:,.1f} exact GFLOP per sample")
    from .diffusion.model_space import SAMPLE_TOPS

    ref_item = ref.dtype.itemsize if ref.dtype in SAMPLE_TOPS else 4  # as the store keeps it
    for line in _tiled_disk_lines(cfg, plan, tile=args.tile, tiled=args.tiled,
                                  ref_itemsize=ref_item):
        print(line)
    return 0


def _tiled_disk_lines(cfg, plan, *, tile: int | None = None, tiled: bool | None = None,
                      ref_itemsize: int = 4) -> list[str]:
    """``info``'s lines on a tiled run: the tile and its halo cost per level (when the
    output is tiled), disk (run store, output) and the tile advice."""
    from .info import format_bytes
    from .pipeline.plan import disk_estimate, is_tiled, tile_advice

    out_hw = plan.out_hw
    lines = []
    if is_tiled(out_hw, cfg.tiling, tiled or bool(tile)):
        grids = [g for lv, g in zip(plan.levels, plan.grids) if lv.mode == "tiled"]
        comp = sum(g.computed_pixels() for g in grids)
        pix = sum(g.height * g.width for g in grids)
        how = " (auto)" if not tile and cfg.tiling.tile == "auto" else ""
        lines.append(f"tiled pipeline: tile {plan.tile}{how}; halo cost per level "
                     f"(computed / output pixels):")
        lines += ["  " + line for line in plan.table()]
        lines.append(f"computed / output pixels over the tiled levels: "
                     f"{comp / max(pix, 1):.3f}")
    scratch, out = disk_estimate(plan, ref_itemsize=ref_itemsize)
    px = out_hw[0] * out_hw[1]
    lines.append(f"disk (tiled run, tile {plan.tile}, upper bounds): run store ~"
                 f"{format_bytes(scratch)} ({scratch / px:.1f} bytes per output pixel), "
                 f"output pyramid ~{format_bytes(out)}")
    advice = tile_advice(plan)
    if advice:
        lines.append(f"warning: {advice}")
    return lines


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (argparse usage errors exit 2 directly)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    try:
        return int(args.func(args) or 0)
    except GigapatchError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"{PROG}: interrupted; no output file was left half-written (a tiled run "
              f"resumes when the same command is run again)", file=sys.stderr)
        if getattr(exc, "tiles_running", False):
            # a tiled run's scheduler threads are still inside a tile: the lock is released
            # and every chunk and marker on disk is complete, so leave now (finalising the
            # interpreter under a running torch thread can abort instead of exiting 130)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
