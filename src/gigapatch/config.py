"""One typed configuration, loaded from YAML, that rejects unknown keys and wrong types.

The config is read here and turned into plain arguments and small settings objects by
``gigapatch.pipeline.plan`` (e.g. ``denoiser_settings``); nothing below the pipeline
(diffusion, tiling, storage) ever sees a ``Config`` object.

Every key, its default and its meaning are documented in ``configs/default.yaml``.
``--set section.key=value`` overrides one key from the command line (the value is parsed
as YAML, so ``--set sampler.eta=1`` gives a number).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from .errors import GigapatchError

__all__ = [
    "Config",
    "SamplerConfig",
    "DenoiserConfig",
    "OutputConfig",
    "TilingConfig",
    "ClusterConfig",
    "HpcConfig",
    "PriorConfig",
    "load_config",
    "config_hash",
    "PRESET_DIR",
]

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class SamplerConfig:
    """The diffusion sampler (docs/method.md)."""

    patch_size: int = 15
    rho: float = 0.2
    steps: int = 10
    eta: float = 0.0
    s_min: float = 1e-4
    factor: float = 0.5
    levels: int | Literal["auto"] = "auto"
    coarsest_ratio: float = 1.6
    mode: Literal["sample", "retarget"] = "sample"
    tileable: Literal["none", "x", "y", "xy"] = "none"
    symmetry: Literal["none", "x", "y", "xy"] = "none"

    def validate(self) -> None:
        _check(self.patch_size >= 3 and self.patch_size % 2 == 1, "sampler.patch_size",
               self.patch_size, "an odd integer >= 3, e.g. 15")
        _check(self.rho > 0, "sampler.rho", self.rho, "a number > 0 (.inf for plain averaging)")
        _check(1 <= self.steps <= 1000, "sampler.steps", self.steps, "an integer in 1..1000")
        _check(0.0 <= self.eta <= 1.0, "sampler.eta", self.eta, "a number in [0, 1]")
        _check(0.0 < self.s_min < 0.5, "sampler.s_min", self.s_min, "a small number in (0, 0.5)")
        _check(self.factor == 0.5, "sampler.factor", self.factor,
               "0.5 (the only pyramid factor that keeps tiles exact)")
        _check(self.levels == "auto" or (isinstance(self.levels, int) and self.levels >= 1),
               "sampler.levels", self.levels, "'auto' or an integer >= 1")
        _check(self.coarsest_ratio >= 1.0, "sampler.coarsest_ratio", self.coarsest_ratio,
               "a number >= 1 (coarsest short side / patch size)")
        _check(self.tileable == "none" or self.mode == "sample", "sampler.tileable",
               self.tileable, "none with sampler.mode=retarget (its coarsest level is the "
               "resized reference, which does not wrap); use mode sample for a tileable output")


@dataclass(frozen=True)
class DenoiserConfig:
    """How the closed-form denoiser is computed."""

    backend: Literal["auto", "exact", "fused", "fast"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    memory_budget_mb: int = 1024
    candidates: int = 16
    pca_dims: int = 64
    dictionary_size: int = 2048
    broad_below_steps: int = 5
    broad_min_ess: float = 2.0
    prune_tolerance: float = 0.0
    query_stride: int = 2
    full_stride_pixels: int = 8192
    probes: int = 4
    index_budget_mb: int = 2048

    def validate(self) -> None:
        _check(self.memory_budget_mb >= 16, "denoiser.memory_budget_mb", self.memory_budget_mb,
               "an integer >= 16 (megabytes)")
        _check(self.candidates >= 1, "denoiser.candidates", self.candidates, "an integer >= 1")
        _check(self.pca_dims >= 1, "denoiser.pca_dims", self.pca_dims, "an integer >= 1")
        _check(self.dictionary_size >= 1, "denoiser.dictionary_size", self.dictionary_size,
               "an integer >= 1")
        _check(self.broad_below_steps >= 0, "denoiser.broad_below_steps",
               self.broad_below_steps, "an integer >= 0")
        _check(self.broad_min_ess >= 0, "denoiser.broad_min_ess", self.broad_min_ess,
               "a number >= 0 (0: always the first broad_below_steps steps)")
        _check(self.prune_tolerance >= 0, "denoiser.prune_tolerance", self.prune_tolerance,
               "a number >= 0")
        _check(self.query_stride >= 1, "denoiser.query_stride", self.query_stride,
               "an integer >= 1")
        _check(self.full_stride_pixels >= 0, "denoiser.full_stride_pixels",
               self.full_stride_pixels, "an integer >= 0 (output pixels of a level; 0: off)")
        _check(self.probes >= 0, "denoiser.probes", self.probes, "an integer >= 0")
        _check(self.index_budget_mb >= 16, "denoiser.index_budget_mb", self.index_budget_mb,
               "an integer >= 16 (megabytes)")


@dataclass(frozen=True)
class PriorConfig:
    """Priors beyond the paper's uniform patch prior (docs/method.md#composition-priors)."""

    position_strength: float = 30.0
    position_axes: Literal["y", "xy"] = "y"
    position_levels: int = 1
    t0: float = 0.9
    usage_strength: float = 3.0
    usage_levels: int = 1

    def validate(self) -> None:
        _check(self.position_strength >= 0 and math.isfinite(self.position_strength),
               "prior.position_strength", self.position_strength,
               "a number >= 0 (0 = off; 100 = a Gaussian of std 0.1 image side)")
        _check(self.position_levels >= 1, "prior.position_levels", self.position_levels,
               "an integer >= 1 (how many of the coarsest levels)")
        _check(0.0 < self.t0 <= 1.0, "prior.t0", self.t0,
               "a number in (0, 1] (1 = pure noise; for t0 = 0 use sampler.mode=retarget)")
        _check(self.usage_strength >= 0 and math.isfinite(self.usage_strength),
               "prior.usage_strength", self.usage_strength,
               "a number >= 0 (0 = off; 1 halves the weight of a patch used once)")
        _check(self.usage_levels >= 1, "prior.usage_levels", self.usage_levels,
               "an integer >= 1 (how many of the coarsest levels)")


@dataclass(frozen=True)
class OutputConfig:
    """What is written and how."""

    bit_depth: Literal[8, 16, "auto"] = "auto"
    compression: Literal["none", "deflate", "zstd", "lzw", "jpeg"] = "deflate"
    tiff_tile: Literal[256, 512] = 256
    writer: Literal["tifffile", "vips"] = "tifffile"
    layout: Literal["chain", "subifd"] = "chain"
    dpi: float | None = None
    pixel_size: float | str | None = None
    crs: str | None = None
    origin: str | None = None
    bounds: str | None = None
    nodata: float | None = None
    keep_metadata: bool = True
    preview: bool = False
    max_input_pixels: int = 400_000_000

    def validate(self) -> None:
        from .storage import metadata as md

        _check(self.max_input_pixels >= 1, "output.max_input_pixels", self.max_input_pixels,
               "an integer >= 1")
        _check(self.dpi is None or self.dpi > 0, "output.dpi", self.dpi, "a number > 0 or null")
        for key, parse in (("pixel_size", md.parse_pixel_size), ("crs", md.parse_crs),
                           ("origin", lambda v: md.parse_pair(v, "origin")),
                           ("bounds", md.parse_bounds)):
            value = getattr(self, key)
            if value is not None:
                try:
                    parse(value)
                except GigapatchError as exc:
                    raise GigapatchError(f"config key output.{key}: {exc}") from None
        _check(not (self.dpi and self.pixel_size), "output.pixel_size", self.pixel_size,
               "null when output.dpi is set (both set the resolution; give one)")
        _check(not (self.origin and self.bounds), "output.bounds", self.bounds,
               "null when output.origin is set (both place the image; give one)")

    def bits(self, reference_bit_depth: int | None = None) -> int:
        """Bits per sample of the output: ``bit_depth``, or for ``auto`` 16 when the
        reference has more than 8 bits (16-bit or float), else 8."""
        if self.bit_depth != "auto":
            return int(self.bit_depth)
        return 16 if reference_bit_depth and reference_bit_depth > 8 else 8


@dataclass(frozen=True)
class TilingConfig:
    """When and how the fine levels are split into tiles."""

    mode: Literal["auto", "never", "always"] = "auto"
    tile: int | Literal["auto"] = "auto"
    max_overhead: float = 1.2
    window_memory_mb: int | Literal["auto"] = "auto"
    global_max_pixels: int = 4_194_304
    keep_run: bool = False

    def validate(self) -> None:
        _check(self.window_memory_mb == "auto" or self.window_memory_mb >= 1,
               "tiling.window_memory_mb", self.window_memory_mb,
               "auto or a number of MiB >= 1")
        _check(self.tile == "auto" or (self.tile >= 64 and self.tile % 64 == 0),
               "tiling.tile", self.tile, "auto or a multiple of 64, >= 64")
        _check(self.max_overhead > 1.0, "tiling.max_overhead", self.max_overhead,
               "a number > 1 (e.g. 1.2)")
        _check(self.global_max_pixels >= 1, "tiling.global_max_pixels",
               self.global_max_pixels, "an integer >= 1")


@dataclass(frozen=True)
class ClusterConfig:
    """Where the Dask graph runs."""

    address: str | None = None
    workers: int | None = None
    retries: int = 2

    def validate(self) -> None:
        _check(self.workers is None or self.workers >= 1, "cluster.workers", self.workers,
               "an integer >= 1 or null")
        _check(self.retries >= 0, "cluster.retries", self.retries, "an integer >= 0")


@dataclass(frozen=True)
class HpcConfig:
    """Batch jobs on an HPC scheduler (``gigapatch batch --cluster slurm|pbs|lsf|sge``)."""

    queue: str | None = None
    account: str | None = None
    cores: int = 4
    memory: str = "16GB"
    walltime: str = "01:00:00"
    processes: int = 1
    gpus_per_job: int = 0
    jobs: int = 1
    adaptive_min: int = 0
    adaptive_max: int = 0
    interface: str | None = None
    local_directory: str | None = None
    job_extra: str | None = None
    job_prologue: str | None = None

    def validate(self) -> None:
        _check(self.cores >= 1, "hpc.cores", self.cores, "an integer >= 1")
        _check(self.processes >= 1 and self.processes <= self.cores, "hpc.processes",
               self.processes, "an integer in 1..hpc.cores")
        _check(self.gpus_per_job >= 0, "hpc.gpus_per_job", self.gpus_per_job,
               "an integer >= 0")
        _check(self.jobs >= 1, "hpc.jobs", self.jobs, "an integer >= 1")
        _check(self.adaptive_min >= 0, "hpc.adaptive_min", self.adaptive_min,
               "an integer >= 0")
        _check(self.adaptive_max == 0 or self.adaptive_max >= max(1, self.adaptive_min),
               "hpc.adaptive_max", self.adaptive_max,
               "0 (fixed hpc.jobs) or an integer >= max(1, hpc.adaptive_min)")
        _check(bool(re.fullmatch(r"\s*\d+(\.\d+)?\s*[KMGT]i?B\s*", self.memory, re.I)),
               "hpc.memory", self.memory, "a size such as 16GB or 64GiB")
        _check(bool(re.fullmatch(r"(\d+-)?\d{1,3}(:\d{2}){0,2}", self.walltime)),
               "hpc.walltime", self.walltime, "a time such as 01:00:00 or 2-00:00:00")


@dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen dataclass per section."""

    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    hpc: HpcConfig = field(default_factory=HpcConfig)

    def validate(self) -> "Config":
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        _check(self.prior.t0 > self.sampler.s_min, "prior.t0", self.prior.t0,
               f"a number above sampler.s_min={self.sampler.s_min}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: Any) -> "Config":
        """Return a copy with ``section={key: value}`` updates applied and validated."""
        data = self.to_dict()
        for name, updates in sections.items():
            if name not in data:
                raise GigapatchError(f"unknown config section {name!r}; known: {sorted(data)}")
            data[name].update(updates)
        return _from_dict(data, "<replace>")


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise GigapatchError(f"config key {key}: got {value!r}, expected {expected}")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, key, source)
            except GigapatchError:
                pass
        raise _type_error(value, tp, key, source)
    if origin is Literal:
        if value in get_args(tp) and not isinstance(value, bool):
            return value
        raise GigapatchError(f"{source}: config key {key}: got {value!r}, expected one of "
                             f"{', '.join(repr(a) for a in get_args(tp))}")
    if tp is type(None):
        if value is None:
            return None
        raise _type_error(value, tp, key, source)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(value, tp, key, source)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(value, tp, key, source)
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads "1e-4" as a string
            except ValueError:
                raise _type_error(value, tp, key, source) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(float(value)):
                raise _type_error(value, tp, key, source)
            return float(value)
        raise _type_error(value, tp, key, source)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(value, tp, key, source)
    raise TypeError(f"unsupported annotation {tp!r}")  # a bug in this module, not user input


def _type_error(value: Any, tp: Any, key: str, source: str) -> GigapatchError:
    name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
    return GigapatchError(f"{source}: config key {key}: got {value!r} "
                          f"({type(value).__name__}), expected {name}")


def _section_from_dict(cls: type, data: Any, section: str, source: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GigapatchError(f"{source}: config section {section!r} must be a mapping of keys, "
                             f"got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise GigapatchError(f"{source}: unknown config key {section}.{unknown[0]}; "
                             f"known keys in {section}: {', '.join(sorted(known))}")
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}", source) for k, v in data.items()}
    return cls(**kwargs)


def _from_dict(data: Any, source: str) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GigapatchError(f"{source}: a config file must be a YAML mapping of sections")
    hints = get_type_hints(Config)
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise GigapatchError(f"{source}: unknown config section {unknown[0]!r}; "
                             f"known sections: {', '.join(sorted(known))}")
    sections = {name: _section_from_dict(hints[name], data.get(name), name, source)
                for name in known}
    try:
        return Config(**sections).validate()
    except GigapatchError as exc:
        raise GigapatchError(f"{source}: {exc}") from None


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise GigapatchError(f"config file {path} does not exist; give a YAML path or a preset "
                             f"name ({presets})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GigapatchError(f"config file {path} cannot be read ({exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise GigapatchError(f"config file {path} is not valid YAML{where}; fix the syntax") \
            from None


def _resolve(path: str | Path) -> Path:
    """A path, or the name of a bundled preset (``default``, ``quality``...)."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and (PRESET_DIR / f"{p.name}.yaml").exists():
        return PRESET_DIR / f"{p.name}.yaml"
    return p


def _parse_override(item: str) -> tuple[str, str, Any]:
    if "=" not in item:
        raise GigapatchError(f"--set {item!r}: expected section.key=value, e.g. sampler.steps=20")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise GigapatchError(f"--set {item!r}: the key must be section.key, e.g. sampler.steps")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts[0], parts[1], value


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a config from YAML (or a preset name) and apply ``section.key=value`` overrides.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file, or the name of a bundled preset such as ``"default"`` or ``"quality"``.
        ``None`` gives the bundled default.
    overrides : sequence of str
        ``"section.key=value"`` items; values are parsed as YAML.

    Returns
    -------
    Config
        A validated, frozen config.

    Raises
    ------
    GigapatchError
        For a missing or invalid file, an unknown section or key, or a bad value; the message
        names the file and the key.
    """
    source = "default config"
    data: dict[str, Any] = {}
    if path is None:
        path = PRESET_DIR / "default.yaml"
    p = _resolve(path)
    source = str(p)
    loaded = _read_yaml(p)
    if loaded is not None:
        if not isinstance(loaded, dict):
            raise GigapatchError(f"{source}: a config file must be a YAML mapping of sections")
        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in loaded.items()}
    for item in overrides:
        section, key, value = _parse_override(item)
        current = data.setdefault(section, {})
        if not isinstance(current, dict):
            raise GigapatchError(f"{source}: config section {section!r} must be a mapping")
        current[key] = value
    if overrides:
        source = f"{source} with --set {' '.join(overrides)}"
    return _from_dict(data, source)


def config_hash(config: Config, *,
                sections: typing.Iterable[str] = ("sampler", "denoiser", "prior")) \
        -> str:
    """A short stable hash of the sections that change the image (not output or cluster)."""
    d = config.to_dict()
    payload = json.dumps({k: d[k] for k in sections}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
