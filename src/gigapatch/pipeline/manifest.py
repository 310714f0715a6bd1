"""Batch manifests: a YAML or CSV list of items, validated as a whole before any work.

A manifest names, per item, a reference, an output, a size or scale, seeds, a preset or
config file and ``--set``-style overrides. :func:`load_manifest` checks EVERY item (files
exist and decode, sizes parse and fit the patch size, keys are known, configs load,
outputs are unique and their folders writable) and raises one :class:`ManifestError`
listing all problems (item number and field), so a user fixes them in one go.

YAML::

    defaults:                 # optional, merged under every item
      preset: default
      seeds: [0]
    items:
      - reference: refs/a.png   # relative paths are relative to the manifest's folder
        output: out/a.png       # several seeds: out/a_000.png, out/a_001.png, ...
        size: 640x480           # or [640, 480], or scale: 1.5 / "2x1"; default: the ref's
        seeds: [0, 1]           # or seed: 3
        preset: gigapixel       # or config: my.yaml (a file or a preset name)
        set: [sampler.steps=20] # overrides, as --set

CSV: a header row with the same field names; ``seeds`` and ``set`` hold several values
separated by ``;`` (``0;1;2``, ``sampler.steps=5;sampler.eta=0.5``); empty cells are unset.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..config import Config, load_config
from ..errors import GigapatchError

__all__ = ["ManifestError", "BatchJob", "load_manifest", "ITEM_KEYS", "file_digest"]

#: the fields an item may have
ITEM_KEYS = ("name", "reference", "output", "size", "scale", "seed", "seeds", "preset",
             "config", "set", "tiled")


class ManifestError(GigapatchError):
    """A manifest with problems; ``problems`` lists them all (``item N: field: what``)."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        n = len(problems)
        super().__init__(f"manifest {source}: {n} problem{'s' if n != 1 else ''}, nothing was "
                         f"run:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class BatchJob:
    """One output of a batch: an (item, seed) pair, everything a worker needs.

    ``key`` hashes what determines the output (reference content, size, seed, the image
    settings of the config, bit depth, output path): a done record with the same key means
    the output is finished and is not redone.
    """

    item: int               # 1-based item number in the manifest
    name: str
    seed: int
    reference: str          # absolute path
    ref_digest: str         # sha256 of the reference file's bytes
    output: str             # absolute path
    out_hw: tuple[int, int]
    config: Config
    tiled: bool
    key: str

    @property
    def pixels(self) -> int:
        return self.out_hw[0] * self.out_hw[1]

    @property
    def label(self) -> str:
        return f"item {self.item} ({self.name}) seed {self.seed}"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex), read in 8 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_items(path: Path) -> tuple[list[Any], dict[str, Any]]:
    """The raw items and defaults of a YAML or CSV manifest."""
    if not path.is_file():
        raise GigapatchError(f"manifest {path} does not exist; give a .yaml or .csv file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GigapatchError(f"manifest {path} cannot be read ({exc})") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        items = []
        for row in rows:
            item: dict[str, Any] = {}
            for k, v in row.items():
                if k is None:  # more cells than header fields
                    item["<extra cells>"] = v
                    continue
                k = k.strip()
                v = (v or "").strip()
                if v == "":
                    continue
                if k in ("seeds", "set"):
                    item[k] = [s.strip() for s in v.split(";") if s.strip()]
                else:
                    item[k] = v
            items.append(item)
        return items, {}
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise GigapatchError(f"manifest {path} is not valid YAML{where}; fix the syntax") \
            from None
    if isinstance(data, list):
        return data, {}
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise GigapatchError(f"manifest {path}: expected a list of items, or a mapping with "
                             f"'items:' (a list) and optional 'defaults:'")
    unknown = sorted(set(data) - {"items", "defaults"})
    if unknown:
        raise GigapatchError(f"manifest {path}: unknown top-level key {unknown[0]!r}; "
                             f"known: items, defaults")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise GigapatchError(f"manifest {path}: 'defaults' must be a mapping of item fields")
    return data["items"], defaults


_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def _factor(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        f = math.nan
    if not (math.isfinite(f) and f > 0):
        raise ValueError
    return f


def _parse_size(value: Any) -> tuple[int, int]:
    """(width, height) from ``"640x480"`` or ``[640, 480]``, each side >= 1."""
    if isinstance(value, str) and _SIZE_RE.match(value):
        w, h = (int(g) for g in _SIZE_RE.match(value).groups())
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        w, h = int(value[0]), int(value[1])
    else:
        hint = " (YAML read an unquoted 0x.. as a hex number: quote the size)" \
            if isinstance(value, int) and not isinstance(value, bool) else ""
        raise ValueError(f"expected WIDTHxHEIGHT such as 640x480 or [640, 480], got "
                         f"{value!r}{hint}")
    if w < 1 or h < 1:
        raise ValueError(f"width and height must be at least 1 pixel, got {value!r}")
    return w, h


def _parse_scale(value: Any) -> float | tuple[float, float]:
    """``1.5`` / ``"1.5"`` -> 1.5; ``"2x1"`` -> (2.0, 1.0) (x factor, y factor)."""
    what = f"expected a factor > 0 such as 1.5, or FXxFY such as '2x1', got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(what)
    parts = re.split(r"[xX]", str(value).strip())
    try:
        if len(parts) == 1:
            return _factor(parts[0])
        if len(parts) == 2:
            return _factor(parts[0]), _factor(parts[1])
    except ValueError:
        pass
    raise ValueError(what)


def _parse_seeds(item: dict[str, Any]) -> list[int]:
    if "seed" in item and "seeds" in item:
        raise ValueError("give seed or seeds, not both")
    raw = item.get("seeds", item.get("seed", [0]))
    if not isinstance(raw, list):
        raw = [raw]
    seeds = []
    for s in raw:
        try:
            if isinstance(s, bool) or (isinstance(s, float) and not s.is_integer()):
                raise ValueError
            seeds.append(int(s))
        except (TypeError, ValueError):
            raise ValueError(f"expected whole numbers, got {s!r}") from None
    if not seeds:
        raise ValueError("no seeds given")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"repeated seed in {seeds}")
    return seeds


def _job_key(*, ref_digest: str, out_hw: tuple[int, int], seed: int, config: Config,
             output: str, tiled: bool) -> str:
    d = config.to_dict()
    d.pop("cluster", None)   # where it runs does not change the image
    d.pop("hpc", None)
    payload = json.dumps({"ref": ref_digest, "out_hw": list(out_hw), "seed": seed,
                          "config": d, "output": output, "tiled": tiled},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _writable_problem(output: Path, tiled_fmt: str | None, bit_depth: int) -> str | None:
    """Why ``output`` cannot be written, or None."""
    from ..storage.imageio import check_writable

    try:
        if tiled_fmt == "ome-zarr":
            parent = output.parent
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                return f"the folder {parent} does not exist or is not writable"
        else:
            check_writable(output, bit_depth=bit_depth)
    except GigapatchError as exc:
        return str(exc)
    return None


def _resolve_bit_depth(config: Config, reference_bits: int | None, output: Path,
                       fmt: str | None) -> Config:
    """``output.bit_depth: auto`` resolved as ``gigapatch generate`` does: 16 for a 16-bit
    or float reference, else 8; always 8 for a JPEG or DZI output."""
    if config.output.bit_depth != "auto":
        return config
    bits = config.output.bits(reference_bits)
    if str(output).lower().endswith((".jpg", ".jpeg")) or fmt == "dzi":
        bits = 8
    return config.replace(output={"bit_depth": bits})


def load_manifest(path: str | os.PathLike, *, base_config: str | None = None,
                  base_overrides: Iterable[str] = ()) -> list[BatchJob]:
    """Read and validate a manifest; one :class:`BatchJob` per (item, seed).

    Parameters
    ----------
    path : path
        A ``.yaml``/``.yml`` or ``.csv`` manifest.
    base_config : str, optional
        Config file or preset for items that name none (``--config``).
    base_overrides : sequence of str
        ``section.key=value`` applied before each item's own ``set`` (``--set``).

    Raises
    ------
    ManifestError
        Listing every problem found (item number and field), before any work.
    GigapatchError
        When the manifest itself cannot be read or parsed.
    """
    from ..inputs import resolve_size
    from .plan import is_tiled, plan_levels
    from .run import output_format
    from ..storage import numbered_path, read_image

    mpath = Path(path)
    raw_items, defaults = _read_items(mpath)
    base = mpath.absolute().parent
    problems: list[str] = []
    bad_defaults = sorted(set(defaults) - set(ITEM_KEYS) - {"reference", "output"})
    for k in bad_defaults:
        problems.append(f"defaults: unknown field {k!r}; known: {', '.join(ITEM_KEYS)}")
    if not raw_items:
        problems.append("the manifest lists no items")
    refs: dict[Path, tuple[Any, str] | str] = {}  # path -> (array, digest) or a problem
    jobs: list[BatchJob] = []
    seen: dict[str, str] = {}
    base_overrides = tuple(base_overrides)

    for n, raw in enumerate(raw_items, start=1):
        where = f"item {n}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
            continue
        item = {**defaults, **raw}
        unknown = sorted(set(item) - set(ITEM_KEYS))
        for k in unknown:
            problems.append(f"{where}: unknown field {k!r}; known: {', '.join(ITEM_KEYS)}")
        name = str(item.get("name") or "")
        ok = True

        # config: preset/config + set
        cfg = None
        if "preset" in item and "config" in item:
            problems.append(f"{where}: preset/config: give one of them, not both")
            ok = False
        else:
            src = item.get("preset", item.get("config", base_config))
            if src is not None and not isinstance(src, str):
                problems.append(f"{where}: preset: expected a preset name or a YAML path, "
                                f"got {src!r}")
                ok = False
            else:
                if src is not None and "config" in item and not Path(src).is_absolute() \
                        and (base / src).exists():
                    src = str(base / src)
                sets = item.get("set", [])
                if isinstance(sets, str):
                    sets = [sets]
                if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
                    problems.append(f"{where}: set: expected a list of section.key=value "
                                    f"strings, got {sets!r}")
                    ok = False
                else:
                    try:
                        cfg = load_config(src, base_overrides + tuple(sets))
                    except GigapatchError as exc:
                        field = "set" if sets and "--set" in str(exc) else \
                            ("config" if "config" in item else "preset")
                        problems.append(f"{where}: {field}: {exc}")
                        ok = False

        # seeds
        try:
            seeds = _parse_seeds(item)
        except ValueError as exc:
            problems.append(f"{where}: seeds: {exc}")
            seeds, ok = [0], False

        # size / scale
        size = scale = None
        if "size" in item and "scale" in item:
            problems.append(f"{where}: size/scale: give one of them, not both")
            ok = False
        elif "size" in item:
            try:
                size = _parse_size(item["size"])
            except ValueError as exc:
                problems.append(f"{where}: size: {exc}")
                ok = False
        elif "scale" in item:
            try:
                scale = _parse_scale(item["scale"])
            except ValueError as exc:
                problems.append(f"{where}: scale: {exc}")
                ok = False

        tiled_flag = item.get("tiled", None)
        if tiled_flag is not None and not isinstance(tiled_flag, bool):
            if str(tiled_flag).lower() in ("true", "yes", "1"):
                tiled_flag = True
            elif str(tiled_flag).lower() in ("false", "no", "0"):
                tiled_flag = False
            else:
                problems.append(f"{where}: tiled: expected true or false, got {tiled_flag!r}")
                ok = False

        # reference
        ref_info = None
        if "reference" not in item or item["reference"] in (None, ""):
            problems.append(f"{where}: reference: missing; name the reference image")
            ok = False
        else:
            rp = Path(str(item["reference"])).expanduser()
            rp = rp if rp.is_absolute() else base / rp
            if rp not in refs:
                try:
                    maxpx = cfg.output.max_input_pixels if cfg is not None else 400_000_000
                    arr, info = read_image(rp, max_pixels=maxpx, what="reference")
                    refs[rp] = (arr.shape, file_digest(rp), info.bit_depth)
                except GigapatchError as exc:
                    refs[rp] = str(exc)
                except OSError as exc:
                    refs[rp] = f"reference {rp} cannot be read ({exc})"
            got = refs[rp]
            if isinstance(got, str):
                problems.append(f"{where}: reference: {got}")
                ok = False
            else:
                ref_info = (rp, got)
            if not name:
                name = rp.stem

        # output size against the reference and the patch size
        out_hw = None
        if ref_info is not None and cfg is not None and (size or scale or
                                                         ("size" not in item and
                                                          "scale" not in item)):
            shape = ref_info[1][0]
            try:
                out_hw = resolve_size(shape[:2], size, scale)
                plan_levels(shape[:2], out_hw, shape[2] if len(shape) > 2 else 1, cfg)
            except GigapatchError as exc:
                problems.append(f"{where}: {'scale' if scale else 'size'}: {exc}")
                ok = False
                out_hw = None

        # outputs
        outputs: list[Path] = []
        if "output" not in item or item["output"] in (None, ""):
            problems.append(f"{where}: output: missing; name the output file")
            ok = False
        else:
            op = Path(str(item["output"])).expanduser()
            op = (op if op.is_absolute() else base / op).absolute()
            outputs = [numbered_path(op, k, len(seeds)) for k in range(len(seeds))]
            tiled = False
            fmt = None
            try:
                if out_hw is not None and cfg is not None:
                    tiled = is_tiled(out_hw, cfg.tiling, bool(tiled_flag))
                fmt = output_format(op) if (tiled or str(op).lower().endswith(".zarr")) \
                    else None
                tiled = tiled or fmt == "ome-zarr"
            except GigapatchError as exc:
                problems.append(f"{where}: output: {exc}")
                ok = False
            else:
                if cfg is not None and ref_info is not None:
                    cfg = _resolve_bit_depth(cfg, ref_info[1][2], op, fmt)
                bit_depth = cfg.output.bits() if cfg is not None else 8
                problem = _writable_problem(outputs[0], fmt, bit_depth)
                if problem:
                    problems.append(f"{where}: output: {problem}")
                    ok = False
            for o in outputs:
                prev = seen.get(str(o))
                if prev is not None:
                    problems.append(f"{where}: output: {o} is also the output of {prev}; "
                                    f"give each item its own output")
                    ok = False
                else:
                    seen[str(o)] = where

        if not ok or out_hw is None or cfg is None or ref_info is None:
            continue
        rp, (_shape, digest, _bits) = ref_info
        for seed, o in zip(seeds, outputs):
            key = _job_key(ref_digest=digest, out_hw=out_hw, seed=seed, config=cfg,
                           output=str(o), tiled=tiled)
            jobs.append(BatchJob(item=n, name=name, seed=seed, reference=str(rp),
                                 ref_digest=digest, output=str(o), out_hw=out_hw,
                                 config=cfg, tiled=tiled, key=key))
    if problems:
        raise ManifestError(str(mpath), problems)
    return jobs
