"""Validate the arguments a user gives (Python API or CLI), in the words they used.

Each check takes the NAME under which the value was given: the API passes ``"size="``
(messages read ``size=(20.5, 20): ...``), the CLI ``"--size"`` (``--size 0x5: ...``), so an
API user never reads about a CLI flag and the other way round. Every mistake raises
:class:`~gigapatch.errors.GigapatchError` with one line that says what to change.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
from pathlib import Path
from typing import Any

from .errors import GigapatchError

__all__ = ["SEED_LIMIT", "check_seed", "check_size", "check_scale", "check_config",
           "check_page", "check_output_format", "shown"]

#: Seeds are 0 <= seed < 2**63 (noise is keyed by a signed 64-bit mix of the seed).
SEED_LIMIT = 2**63


def shown(name: str, value: Any) -> str:
    """How a message shows an option: ``--seed -1`` (CLI) or ``seed=-1`` (API)."""
    if name.startswith("-"):
        return f"{name} {value}"
    return f"{name.rstrip('=')}={value!r}"


def _whole(value: Any) -> int | None:
    """``value`` as an int when it is a whole number type (int, numpy integer), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_seed(seed: Any, name: str = "seed=", *, count: int = 1) -> int:
    """A seed in [0, 2**63), also for ``count`` consecutive samples (seed .. seed+count-1).

    Raises
    ------
    GigapatchError
        Not a whole number, negative, or ``seed + count - 1 >= 2**63``.
    """
    v = _whole(seed)
    if v is None:
        raise GigapatchError(f"{shown(name, seed)}: the seed must be a whole number in "
                             f"0..2**63-1")
    if not 0 <= v or v + count - 1 >= SEED_LIMIT:
        last = f" (the last of {count} samples would use seed {v + count - 1})" \
            if count > 1 and 0 <= v < SEED_LIMIT else ""
        raise GigapatchError(f"{shown(name, seed)}: the seed must lie in 0..2**63-1 = "
                             f"{SEED_LIMIT - 1}{last}; pick a smaller seed")
    return v


def check_size(size: Any, name: str = "size=") -> tuple[int, int] | None:
    """``None`` or a (width, height) pair of whole numbers >= 1 -> ``(w, h)``."""
    if size is None:
        return None
    form = "WxH such as 640x480" if name.startswith("-") else "(width, height) such as " \
                                                            "(640, 480)"
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise GigapatchError(f"{shown(name, size)}: expected {form}, whole pixels")
    w, h = (_whole(v) for v in size)
    if w is None or h is None:
        raise GigapatchError(f"{shown(name, size)}: width and height must be whole numbers of "
                             f"pixels, e.g. (640, 480)")
    if w < 1 or h < 1:
        raise GigapatchError(f"{shown(name, size)}: width and height must be >= 1")
    return w, h


def _factor(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    f = float(v)
    return f if math.isfinite(f) and f > 0 else None


def check_scale(scale: Any, name: str = "scale=") -> float | tuple[float, float] | None:
    """``None``, a factor > 0, or an (x factor, y factor) pair of factors > 0."""
    if scale is None:
        return None
    form = "a factor such as 1.5, or FXxFY such as 2x1" if name.startswith("-") else \
        "a number such as 1.5, or an (x, y) pair such as (2, 1)"
    if isinstance(scale, (str, bytes)):
        raise GigapatchError(f"{shown(name, scale)}: expected {form} (a string is not "
                             f"accepted here)")
    if hasattr(scale, "__len__"):
        if len(scale) == 2:
            fx, fy = (_factor(v) for v in scale)
            if fx is not None and fy is not None:
                return fx, fy
        raise GigapatchError(f"{shown(name, tuple(scale))}: expected {form}, each factor "
                             f"finite and > 0")
    f = _factor(scale)
    if f is None:
        raise GigapatchError(f"{shown(name, scale)}: expected {form}, finite and > 0")
    return f


def check_config(config: Any, name: str = "config=") -> Any:
    """A ``Config``, a YAML path / preset name (str or PathLike), or ``None``: returned as
    is; anything else (e.g. a dict) is refused with how to build a Config."""
    from .config import Config

    if config is None or isinstance(config, (Config, str, os.PathLike)):
        return config
    raise GigapatchError(
        f"{name}{type(config).__name__}: expected a Config, a YAML file path or a preset name "
        f"such as 'default'; for a few changed keys use "
        f"gigapatch.load_config(None, ['sampler.steps=20', ...])")


def check_page(page: Any, name: str = "page=") -> int | None:
    """``None`` or a page / frame number >= 0."""
    if page is None:
        return None
    v = _whole(page)
    if v is None or v < 0:
        raise GigapatchError(f"{shown(name, page)}: expected a page number >= 0")
    return v


#: what ``--format`` means -> the output suffixes that hold it
_FORMAT_SUFFIXES = {"png": (".png",), "tiff": (".tif", ".tiff"), "cog": (".tif", ".tiff"),
                    "dzi": (".dzi",), "ome-zarr": (".ome.zarr", ".zarr")}


def check_output_format(output: str | os.PathLike, fmt: str | None,
                        name: str = "--format") -> None:
    """Refuse a format that the output's suffix contradicts (``--format png -o x.tif``)."""
    if not fmt or fmt not in _FORMAT_SUFFIXES:
        return
    text = str(output).lower().rstrip("/\\")
    suffixes = _FORMAT_SUFFIXES[fmt]
    if not text.endswith(suffixes):
        suffix = Path(text).suffix or "no suffix"
        raise GigapatchError(f"{shown(name, fmt)} does not match the output {output} "
                             f"({suffix}); name it *{suffixes[0]} or drop {name}")


def resolve_size(ref_hw: tuple[int, int], size: Any = None,
                 scale: Any = None) -> tuple[int, int]:
    """The output (height, width) from an explicit size or a scale of the reference.

    Parameters
    ----------
    ref_hw : (int, int)
        Reference (height, width).
    size : (int, int), optional
        Output (width, height), as written on the command line (``--size WxH``).
    scale : float or (float, float), optional
        Factor of the reference size, or (x factor, y factor).

    Returns
    -------
    (int, int)
        Output (height, width).
    """
    if size is not None and scale is not None:
        raise GigapatchError("give either size= or scale=, not both")
    if size is not None:
        w, h = check_size(size)
        return h, w
    if scale is None:
        return ref_hw
    scale = check_scale(scale)
    sx, sy = (scale, scale) if isinstance(scale, float) else scale
    return max(1, round(ref_hw[0] * sy)), max(1, round(ref_hw[1] * sx))
