"""Contact sheet: the reference beside its samples, each labelled, as one RGB image / PNG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from gigapatch.errors import GigapatchError
from gigapatch.metrics._common import as_image, resize
from gigapatch.storage.atomic import atomic_path

__all__ = ["contact_sheet", "render_label"]


def render_label(text: str, *, width: int, height: int = 22) -> np.ndarray:
    """A white strip (height, width) uint8 with ``text`` in black, rendered by pyvips.

    Falls back to a plain strip when pyvips cannot render text (no fonts).
    """
    strip = np.full((height, width), 255, dtype=np.uint8)
    try:
        import pyvips

        label = text
        while True:  # one line; long labels lose their beginning ("...tail")
            mask = pyvips.Image.text(label, dpi=72).numpy()
            if mask.shape[1] <= width - 6 or len(label) <= 4:
                break
            cut = max(1, int(len(label) * (1 - (width - 6) / mask.shape[1])) + 1)
            label = "..." + label.lstrip(".")[cut:]
        if mask.ndim == 3:
            mask = mask[..., 0]
        mh, mw = min(mask.shape[0], height - 2), min(mask.shape[1], width - 4)
        y0 = (height - mh) // 2
        strip[y0 : y0 + mh, 3 : 3 + mw] = 255 - mask[:mh, :mw]
    except Exception:  # noqa: BLE001 - labels are a nicety, never a failure
        pass
    return strip


def contact_sheet(
    reference: Any,
    samples: Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
    height: int = 256,
    columns: int | None = None,
    gap: int = 6,
    path: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Lay out the reference and the samples in a labelled grid.

    Parameters
    ----------
    reference : numpy.ndarray or torch.Tensor
        (H, W) or (H, W, C).
    samples : sequence of arrays
        Each (H_i, W_i) or (H_i, W_i, C).
    labels : sequence of str, optional
        N + 1 labels (reference first); default "reference", "sample 0", ...
    height : int
        Every image is scaled to this height (aspect kept).
    columns : int, optional
        Cells per row; default all in one row up to 5.
    gap : int
        White pixels between cells.
    path : path, optional
        When given, the sheet is also written there as PNG (the only file I/O).

    Returns
    -------
    numpy.ndarray
        uint8, shape (H_sheet, W_sheet, 3).
    """
    imgs = [reference, *samples]
    labels = list(labels) if labels is not None else ["reference"] + [
        f"sample {i}" for i in range(len(samples))
    ]
    if len(labels) != len(imgs):
        raise GigapatchError(
            f"metrics: contact sheet got {len(labels)} labels for {len(imgs)} images "
            "(reference + samples); pass one label per image"
        )
    cells = []
    for img, label in zip(imgs, labels):
        t = as_image(img, name=label)
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        h, w = t.shape[-2:]
        new_w = max(1, round(w * height / h))
        with torch.no_grad():
            t = resize(t, (height, new_w)).clamp(0, 1)
        px = (t.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        strip = render_label(label, width=new_w)
        cells.append(np.concatenate([px, np.repeat(strip[:, :, None], 3, axis=2)], axis=0))
    ncol = columns or min(len(cells), 5)
    rows = [cells[i : i + ncol] for i in range(0, len(cells), ncol)]
    row_imgs = []
    for r in rows:
        parts = []
        for j, c in enumerate(r):
            if j:
                parts.append(np.full((c.shape[0], gap, 3), 255, np.uint8))
            parts.append(c)
        row_imgs.append(np.concatenate(parts, axis=1))
    width = max(r.shape[1] for r in row_imgs)
    out_rows = []
    for i, r in enumerate(row_imgs):
        if i:
            out_rows.append(np.full((gap, width, 3), 255, np.uint8))
        pad = np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)
        out_rows.append(np.concatenate([r, pad], axis=1))
    sheet = np.concatenate(out_rows, axis=0)
    if path is not None:
        _write_png(sheet, Path(path))
    return sheet


def _write_png(arr: np.ndarray, path: Path) -> None:
    try:
        import pyvips

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            pyvips.Image.new_from_array(arr, interpretation="srgb").pngsave(str(tmp))
    except GigapatchError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise GigapatchError(f"{path}: cannot write the contact sheet ({exc}); check the folder") from exc
