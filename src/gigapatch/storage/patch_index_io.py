"""A patch index on disk: one folder of ``.npy`` arrays (memory-mappable) and ``meta.json``.

:class:`gigapatch.diffusion.patch_index.PatchIndex` is torch-only and knows nothing of
files; this module writes its tensors and reads them back as the keyword arguments of its
constructor, so storage never imports diffusion::

    save_patch_index(folder, index)
    index = PatchIndex(**load_patch_index(folder))

Layout (docs/file-formats.md#patch-index-folder)::

    FOLDER/meta.json      {"patch_size": P, "channels": C, "arrays": [names written],
                           "position_step": g, "position_hw": [hp, wp] or null}
    FOLDER/patches.npy    (N, C*P*P) float32
    FOLDER/log_counts.npy (N,) float32
    FOLDER/sq_norms.npy   (N,) float32
    FOLDER/positions.npy  (N, 2) int64      (when the index has them)
    FOLDER/position_map.npy (ceil(hp/g), ceil(wp/g)) int64  (when the index has them)

The folder is written atomically (:func:`~gigapatch.storage.atomic.atomic_path`): it
appears complete or not at all, and replaces an existing one only when complete.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_path

__all__ = ["save_patch_index", "load_patch_index", "PATCH_INDEX_ARRAYS"]

#: The tensor fields of a PatchIndex, in the order its constructor takes them.
PATCH_INDEX_ARRAYS = ("patches", "log_counts", "sq_norms", "positions", "position_map")


def save_patch_index(path: str | os.PathLike, index: Any) -> Path:
    """Write ``index`` (a PatchIndex) to the folder ``path`` (see the module docstring).

    Parameters
    ----------
    path : str or PathLike
        The folder to create (or replace); its parent must exist.
    index : PatchIndex
        Its tensors are copied to the CPU; ``positions`` and ``position_map`` are written
        only when they are not None.
    """
    dst = Path(os.fspath(path))
    written = []
    with atomic_path(dst) as tmp:
        tmp.mkdir()
        for name in PATCH_INDEX_ARRAYS:
            t = getattr(index, name)
            if t is None:
                continue
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(f, t.detach().cpu().numpy())
            written.append(name)
        hw = getattr(index, "position_hw", None)
        meta = {"patch_size": int(index.patch_size), "channels": int(index.channels),
                "arrays": written, "position_step": int(getattr(index, "position_step", 1)),
                "position_hw": None if hw is None else [int(hw[0]), int(hw[1])]}
        (tmp / "meta.json").write_text(json.dumps(meta))
    return dst


def load_patch_index(path: str | os.PathLike, *, mmap: bool = True) -> dict[str, Any]:
    """Read a folder written by :func:`save_patch_index`.

    Parameters
    ----------
    path : str or PathLike
    mmap : bool
        Map the arrays read-only instead of reading them (the default; the tensors then
        share the mapped memory and must not be written to).

    Returns
    -------
    dict
        The keyword arguments of ``PatchIndex``: the CPU tensors (missing optional ones are
        None), ``patch_size``, ``channels``, ``position_step`` and ``position_hw`` (1 and
        None for folders written before they existed).
    """
    folder = Path(os.fspath(path))
    meta = json.loads((folder / "meta.json").read_text())
    out: dict[str, Any] = dict.fromkeys(PATCH_INDEX_ARRAYS)
    for name in meta["arrays"]:
        a = np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None)
        if mmap:
            with warnings.catch_warnings():  # a read-only map: torch warns it is not writable
                warnings.simplefilter("ignore", UserWarning)
                out[name] = torch.from_numpy(a)
        else:
            out[name] = torch.from_numpy(np.ascontiguousarray(a))
    out["patch_size"] = int(meta["patch_size"])
    out["channels"] = int(meta["channels"])
    out["position_step"] = int(meta.get("position_step", 1))
    hw = meta.get("position_hw")
    out["position_hw"] = None if hw is None else (int(hw[0]), int(hw[1]))
    return out
