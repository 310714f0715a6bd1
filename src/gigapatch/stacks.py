"""Aligned map stacks: the maps of one material sampled as ONE multi-channel image.

An albedo map usually comes with a normal map, a roughness map, a height map and maybe
an alpha mask, aligned pixel for pixel. :func:`generate_maps` concatenates their channels
into one reference, so every patch spans every map and the sampler rearranges whole
material patches; the output is split back into one image per map, still aligned.

Why the correspondences survive: the denoiser's output is a weighted average of reference
patches with ONE weight per patch for all its channels, and the fold averages overlapping
patches with weights that do not depend on the channel. So every output pixel is the same
convex combination of reference pixels in every map: a map that is an affine function of
another (``1 - albedo``) stays exactly that function of the output, and any other
per-pixel relation holds wherever the weights sit on one patch (late steps).

Weights: map k's channels are scaled by ``w_k / max(w)`` around the middle grey before
sampling (``0.5 + w (a - 0.5)``) and unscaled after, so in the patch distance that
drives the match its squared differences count ``w_k^2`` times. Default: 1 for the first
map (the albedo drives the match), :data:`OTHER_WEIGHT` for the others.

Signed maps: a map given as floats with values below 0 (a normal map stored as x, y, z in
[-1, 1]) is sampled in the usual encoding ``0.5 + n / 2`` and comes back in [-1, 1]
(:func:`is_signed`, :func:`encode_signed`, :func:`decode_signed`); it is written as a
float32 TIFF when the output is ``.tif``, else 8/16-bit encoded ``0.5 + n / 2``
(:func:`write_map`). Renormalised (``normalize_normals``), its vectors have unit length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import GigapatchError

__all__ = ["MapSpec", "OTHER_WEIGHT", "read_map_list", "check_aligned", "stack_maps",
           "unstack_maps", "renormalize_normals", "map_output_paths", "check_stack_fits",
           "generate_maps", "is_signed", "encode_signed", "decode_signed", "write_map"]

#: default weight of every map but the first
OTHER_WEIGHT = 0.5


@dataclass(frozen=True)
class MapSpec:
    """One map of a stack.

    Attributes
    ----------
    path : str
        The map's file (or a name for an in-memory map).
    weight : float or None
        Its weight in the patch distance (> 0); ``None``: 1 for the first map,
        :data:`OTHER_WEIGHT` for the others.
    normal : bool
        A normal map (encoded ``0.5 + n / 2``): with ``normalize_normals`` its output is
        renormalised to unit length.
    """

    path: str
    weight: float | None = None
    normal: bool = False


def read_map_list(path: str | os.PathLike) -> list[MapSpec]:
    """Maps from a YAML list: entries ``PATH`` or ``{path: PATH, weight: W, normal: B}``.

    Relative paths are taken from the YAML file's folder.
    """
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise GigapatchError(f"map list {p}: cannot read it ({type(exc).__name__}); give a "
                             f"YAML list of map paths") from None
    if not isinstance(data, list) or not data:
        raise GigapatchError(f"map list {p}: expected a non-empty YAML list of paths or "
                             f"{{path, weight, normal}} entries")
    out = []
    for i, e in enumerate(data):
        if isinstance(e, str):
            e = {"path": e}
        if not isinstance(e, dict) or "path" not in e or set(e) - {"path", "weight", "normal"}:
            raise GigapatchError(f"map list {p}: entry {i + 1} must be a path or a mapping "
                                 f"with keys path (required), weight, normal")
        mp = Path(str(e["path"]))
        mp = mp if mp.is_absolute() else p.parent / mp
        w = e.get("weight")
        if w is not None and not (isinstance(w, (int, float)) and w > 0):
            raise GigapatchError(f"map list {p}: entry {i + 1} weight {w!r} must be a number "
                                 f"> 0")
        out.append(MapSpec(str(mp), None if w is None else float(w), bool(e.get("normal",
                                                                               False))))
    return out


def _weights(specs: Sequence[MapSpec]) -> list[float]:
    w = [s.weight if s.weight is not None else (1.0 if i == 0 else OTHER_WEIGHT)
         for i, s in enumerate(specs)]
    for s, v in zip(specs, w):
        if not v > 0:
            raise GigapatchError(f"map {s.path}: weight {v} must be > 0")
    top = max(w)
    return [v / top for v in w]


def check_aligned(maps: Sequence[np.ndarray], names: Sequence[str]) -> None:
    """Every map has the first map's (height, width), else one line naming the map."""
    h, w = maps[0].shape[:2]
    for a, n in zip(maps[1:], names[1:]):
        if a.shape[:2] != (h, w):
            raise GigapatchError(
                f"map {n} is {a.shape[1]}x{a.shape[0]} but {names[0]} is {w}x{h}; the maps "
                f"of a stack must be aligned pixel for pixel, so give maps of the same size")


def stack_maps(maps: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Concatenate maps (H, W, C_k) in [0, 1], each scaled by its weight around 0.5.

    Returns
    -------
    ndarray, shape (H, W, sum C_k), float32 in [0, 1]
    """
    return np.concatenate([np.float32(0.5) + np.float32(w) * (a - np.float32(0.5))
                           for a, w in zip(maps, weights)], axis=2).astype(np.float32)


def unstack_maps(image: np.ndarray, channels: Sequence[int],
                 weights: Sequence[float]) -> list[np.ndarray]:
    """Split a sampled stack back into maps, undoing :func:`stack_maps`' scaling.

    Returns
    -------
    list of ndarray, shapes (H, W, C_k), float32 in [0, 1]
    """
    out, c0 = [], 0
    for c, w in zip(channels, weights):
        a = np.float32(0.5) + (image[:, :, c0:c0 + c] - np.float32(0.5)) / np.float32(w)
        out.append(np.clip(a, 0.0, 1.0).astype(np.float32))
        c0 += c
    return out


def is_signed(a: Any) -> bool:
    """A signed map: float samples with a value below 0 (beyond a 1e-3 slack)."""
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.size == 0:
        return False
    return float(np.nanmin(a)) < -1e-3


def encode_signed(a: np.ndarray, name: str) -> np.ndarray:
    """A signed map in [-1, 1] as ``0.5 + a / 2`` in [0, 1] (float32); one line naming
    the map when its values leave [-1, 1]."""
    a = np.asarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise GigapatchError(f"map {name} holds NaN or infinite values; fill them and give "
                             f"values in [-1, 1]")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1 - 1e-3 or hi > 1 + 1e-3:
        raise GigapatchError(f"map {name} has float values in [{lo:.4g}, {hi:.4g}]; a signed "
                             f"map (a normal map's x, y, z) must lie in [-1, 1], so rescale it")
    return (np.float32(0.5) + np.float32(0.5) * np.clip(a, -1.0, 1.0)).astype(np.float32)


def decode_signed(a: np.ndarray) -> np.ndarray:
    """The inverse of :func:`encode_signed`: ``2 a - 1`` in [-1, 1] (float32)."""
    return (np.float32(2.0) * np.asarray(a, dtype=np.float32) - np.float32(1.0))


def write_map(path: str | os.PathLike, image: np.ndarray, *, signed: bool, bit_depth: int,
              dpi: float | None = None, alpha: bool = False) -> str:
    """Write one output map; returns how it was stored (for the CLI's "wrote" line).

    A signed map (values in [-1, 1]) goes to a ``.tif``/``.tiff`` as float32 samples
    (deflate, written to a temporary name and renamed), to any other format as 8/16-bit
    ``0.5 + n / 2``. Other maps: ``storage.write_image``.
    """
    from .storage import write_image

    p = Path(os.fspath(path))
    if signed and p.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        from .storage.atomic import atomic_path

        a = np.ascontiguousarray(image, dtype=np.float32)
        try:
            with atomic_path(p) as tmp:
                tifffile.imwrite(tmp, a, photometric="rgb" if a.shape[2] == 3 else
                                 "minisblack", planarconfig="contig", compression="zlib",
                                 metadata=None)
        except OSError as exc:
            raise GigapatchError(f"cannot write output {p} ({exc.strerror or type(exc).__name__}"
                                 f"); check that the folder is writable and the disk is not "
                                 f"full") from None
        return "float32 in [-1, 1]"
    write_image(p, encode_signed(image, str(p)) if signed else image, bit_depth=bit_depth,
                dpi=dpi, alpha=alpha)
    return f"{bit_depth}-bit" + (", 0.5 + n / 2 encoded" if signed else "")


def renormalize_normals(a: np.ndarray) -> np.ndarray:
    """A normal map encoded as ``0.5 + n / 2`` with each ``n`` rescaled to unit length.

    Parameters
    ----------
    a : ndarray, shape (H, W, 3), values in [0, 1]

    Returns
    -------
    ndarray, shape (H, W, 3), float32; a zero vector becomes (0, 0, 1)
    """
    n = 2.0 * a.astype(np.float64) - 1.0
    length = np.sqrt((n * n).sum(axis=2, keepdims=True))
    flat = length[..., 0] < 1e-6
    n = n / np.maximum(length, 1e-6)
    n[flat] = (0.0, 0.0, 1.0)
    return ((n + 1.0) / 2.0).astype(np.float32)


def map_output_paths(output: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """One output per map: the first map gets ``output``, map k ``OUT_<name>.<suffix>``.

    ``name`` is the map file's stem (``normal.png`` -> ``out_normal.png``); a stem used
    twice gets its position appended (``out_normal_2.png``).
    """
    p = Path(os.fspath(output))
    paths = [p]
    seen: set[str] = set()
    for i, n in enumerate(names[1:], start=1):
        stem = Path(n).stem or f"map{i}"
        if stem in seen:
            stem = f"{stem}_{i}"
        seen.add(stem)
        paths.append(p.with_name(f"{p.stem}_{stem}{p.suffix}"))
    if len(set(paths)) != len(paths):
        raise GigapatchError(f"the maps {', '.join(names)} give the same output name twice; "
                             f"rename one of the maps")
    return paths


def check_stack_fits(ref_hw: tuple[int, int], channels: int, config: Any,
                     names: Sequence[str]) -> None:
    """Refuse a stack whose patches cannot be held: even the coarsest level's patches must
    fit ``denoiser.index_budget_mb`` (the fast backend subsamples finer levels to it)."""
    from .diffusion.levels import patch_count
    from .pipeline.plan import plan_levels

    p = config.sampler.patch_size
    plan = plan_levels(ref_hw, ref_hw, channels, config)
    per_patch = channels * p * p * 4 + 32
    budget = config.denoiser.index_budget_mb * 2**20
    fits = budget // per_patch
    need = patch_count(plan[0].ref_hw, p)
    if fits < need:
        raise GigapatchError(
            f"{len(names)} maps ({channels} channels) make a {p}x{p} patch "
            f"{per_patch / 1024:.0f} KiB, so denoiser.index_budget_mb="
            f"{config.denoiser.index_budget_mb} holds {fits} patches, fewer than the coarsest "
            f"level's {need}; use fewer maps, a smaller patch size, or raise "
            f"denoiser.index_budget_mb")


def generate_maps(maps: Sequence[Any], *, specs: Sequence[MapSpec] | None = None,
                  normalize_normals: bool = False, **generate_kwargs: Any) -> list[np.ndarray]:
    """Generate aligned outputs for a stack of maps (one material).

    Parameters
    ----------
    maps : sequence of path or array
        The maps, first the one that drives the match (albedo). Arrays as for
        ``gigapatch.generate`` (H, W) / (H, W, C) in [0, 1] (uint8/uint16 scaled); files are
        read with ``gigapatch.storage.read_image`` (alpha dropped: read it yourself with
        ``alpha="keep"`` to keep it). Grey, RGB, 16-bit and float maps mix freely. A float
        map with values below 0 is a signed map in [-1, 1] (:func:`is_signed`): sampled
        encoded as ``0.5 + n / 2``, returned in [-1, 1].
    specs : sequence of MapSpec, optional
        Weight and normal flag per map (default: weights 1, 0.5, 0.5, ...; no normals).
    normalize_normals : bool
        Renormalise the maps flagged ``normal`` to unit length on output.
    **generate_kwargs
        ``size``, ``scale``, ``seed``, ``config``, ``device``, ``progress`` of
        ``gigapatch.generate``.

    Returns
    -------
    list of ndarray, shapes (H, W, C_k), float32
        One output per map, aligned, in the order given: in [0, 1], or in [-1, 1] for a
        signed map.
    """
    from .api import as_config, generate
    from .storage.read import coerce_image, read_image

    if not maps:
        raise GigapatchError("generate_maps needs at least one map")
    specs = list(specs) if specs is not None else [
        MapSpec(m if isinstance(m, (str, os.PathLike)) else f"map{i}") for i, m in
        enumerate(maps)]
    if len(specs) != len(maps):
        raise GigapatchError(f"{len(maps)} maps but {len(specs)} map specs; give one per map")
    cfg = as_config(generate_kwargs.pop("config", None))
    arrays, signed = [], []
    for m, s in zip(maps, specs):
        if isinstance(m, (str, os.PathLike)):
            m = read_image(m, max_pixels=cfg.output.max_input_pixels, what="map",
                           words="api", signed=True)[0]
        signed.append(is_signed(m))
        if signed[-1]:
            m = encode_signed(m.detach().cpu().numpy() if hasattr(m, "detach") else m,
                              s.path)
        arrays.append(coerce_image(m, name=f"map {s.path}")[0])
    names = [s.path for s in specs]
    check_aligned(arrays, names)
    weights = _weights(specs)
    channels = [a.shape[2] for a in arrays]
    if normalize_normals:
        for s, c in zip(specs, channels):
            if s.normal and c != 3:
                raise GigapatchError(f"map {s.path} is flagged as a normal map but has {c} "
                                     f"channels; a normal map has 3 (x, y, z)")
    check_stack_fits(arrays[0].shape[:2], sum(channels), cfg, names)
    out = generate(stack_maps(arrays, weights), config=cfg, **generate_kwargs)
    outs = unstack_maps(out, channels, weights)
    if normalize_normals:
        outs = [renormalize_normals(o) if s.normal else o for o, s in zip(outs, specs)]
    return [decode_signed(o) if sg else o for o, sg in zip(outs, signed)]
