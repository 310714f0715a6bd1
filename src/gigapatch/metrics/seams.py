"""Seam score for tiled outputs (docs/evaluation.md#seams).

Mean |gradient| across tile-boundary rows/columns divided by the mean |gradient| across all
other rows/columns, on the image and on each band of a Laplacian (difference-of-Gaussians)
decomposition kept at full resolution so boundaries stay where they are. ~1.0 means no
visible seams; > 1 means steps at the boundaries, < 1 over-smoothed boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from gigapatch.errors import GigapatchError
from gigapatch.device import resolve_device
from gigapatch.metrics._common import as_image

__all__ = ["SeamScore", "seam_score", "wrap_seam_score"]


@dataclass(frozen=True)
class SeamScore:
    """Boundary-over-interior gradient ratios.

    Attributes
    ----------
    image : float
        Ratio on the image itself.
    bands : list of float
        Ratio per Laplacian band, finest first (band k holds detail between Gaussian
        sigmas 2^(k-1) and 2^k; band 0 is image minus blur(sigma=1)).
    worst : float
        The ratio (image or band) farthest from 1.0.
    """

    image: float
    bands: list[float] = field(default_factory=list)
    worst: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"image": self.image, "bands": list(self.bands), "worst": self.worst}


def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (C, H, W) with reflect padding."""
    r = max(1, int(round(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c, h, w = x.shape
    y = x[:, None]  # (C, 1, H, W)
    ry, rx = min(r, h - 1), min(r, w - 1)
    if rx > 0:
        y = F.conv2d(F.pad(y, (rx, rx, 0, 0), mode="reflect"), k[r - rx : r + rx + 1].view(1, 1, 1, -1))
    if ry > 0:
        y = F.conv2d(F.pad(y, (0, 0, ry, ry), mode="reflect"), k[r - ry : r + ry + 1].view(1, 1, -1, 1))
    return y[:, 0]


def _ratio(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> float:
    """Boundary / interior mean |gradient| of (C, H, W) for boundary masks over dy, dx."""
    dy = (x[:, 1:, :] - x[:, :-1, :]).abs().mean(dim=0)  # (H-1, W); index i = step i -> i+1
    dx = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=0)  # (H, W-1)
    b_sum = dy[rows].sum() + dx[:, cols].sum()
    b_n = rows.sum() * dy.shape[1] + cols.sum() * dx.shape[0]
    i_sum = dy[~rows].sum() + dx[:, ~cols].sum()
    i_n = (~rows).sum() * dy.shape[1] + (~cols).sum() * dx.shape[0]
    b = b_sum / b_n.clamp_min(1)
    i = i_sum / i_n.clamp_min(1)
    if float(i) == 0.0:
        return 1.0 if float(b) == 0.0 else float("inf")
    return float((b / i).item())


def seam_score(
    image: Any,
    *,
    tile_size: int | tuple[int, int],
    origin: tuple[int, int] = (0, 0),
    n_bands: int = 4,
    device: str | torch.device | None = "cpu",
) -> SeamScore:
    """Seam score of a tiled output.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor
        The output, shape (H, W) or (H, W, C).
    tile_size : int or (int, int)
        Tile core size (th, tw) in pixels; an int means square tiles.
    origin : (int, int)
        (y, x) of the top-left corner of the tile grid; tile boundaries lie between pixel
        rows oy + k * th - 1 and oy + k * th (and likewise for columns).
    n_bands : int
        Number of Laplacian bands (sigmas 1, 2, 4, ...).
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.

    Returns
    -------
    SeamScore
        ``.image``, ``.bands`` and ``.worst``; ~1.0 everywhere means seam-free.

    Raises
    ------
    GigapatchError
        If no tile boundary falls inside the image (the image is not larger than one tile).
    """
    th, tw = (tile_size, tile_size) if isinstance(tile_size, int) else tuple(tile_size)
    if th < 2 or tw < 2:
        raise GigapatchError(f"metrics: seam score tile size must be >= 2, got {tile_size}")
    oy, ox = origin
    dev = resolve_device(device)
    x = as_image(image, name="image", device=dev)
    _, h, w = x.shape
    # Boundary between pixel i and i+1 (gradient index i) when i+1 is a tile start.
    ri = torch.arange(h - 1, device=dev) + 1
    ci = torch.arange(w - 1, device=dev) + 1
    rows = ((ri - oy) % th) == 0
    cols = ((ci - ox) % tw) == 0
    if not bool(rows.any()) and not bool(cols.any()):
        raise GigapatchError(
            f"metrics: no tile boundary of a {tw}x{th} grid at origin (y={oy}, x={ox}) falls "
            f"inside the {w}x{h} image; pass the tile size the run used (smaller than the image)"
        )
    with torch.no_grad():
        img_ratio = _ratio(x, rows, cols)
        bands = []
        prev = x
        for k in range(n_bands):
            blurred = _gauss_blur(x, float(2**k))
            bands.append(_ratio(prev - blurred, rows, cols))
            prev = blurred
    allv = [img_ratio] + bands
    worst = max(allv, key=lambda v: abs(v - 1.0))
    return SeamScore(image=img_ratio, bands=bands, worst=worst)


def wrap_seam_score(image: Any, *, axes: str = "xy", n_bands: int = 4,
                    device: str | torch.device | None = "cpu") -> SeamScore:
    """Seam score across the wrap-around edge of a tileable output.

    The image is rolled by half its size along ``axes`` so that its wrap edge (last
    column -> first column, last row -> first row) lies inside, then scored with
    :func:`seam_score` with that edge as the only boundary. ~1.0: copies laid side by side
    meet without a seam; a plain (non-periodic) output scores well above 1.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor
        Shape (H, W) or (H, W, C).
    axes : {"x", "y", "xy"}
        The wrapped axes: x scores the left/right edge, y the top/bottom edge.
    n_bands, device
        As for :func:`seam_score`.

    Returns
    -------
    SeamScore
    """
    if axes not in ("x", "y", "xy"):
        raise GigapatchError(f"metrics: wrap seam axes must be x, y or xy, got {axes!r}")
    dev = resolve_device(device)
    x = as_image(image, name="image", device=dev)  # (C, H, W)
    _, h, w = x.shape
    sy = h // 2 if "y" in axes else 0
    sx = w // 2 if "x" in axes else 0
    rolled = torch.roll(x, shifts=(sy, sx), dims=(1, 2)).permute(1, 2, 0)
    # one boundary per wrapped axis, at the rolled wrap edge (between sy - 1 and sy);
    # an unwrapped axis gets a period longer than the image (no boundary)
    th = h if sy else h + 1
    tw = w if sx else w + 1
    return seam_score(rolled, tile_size=(th, tw), origin=(sy, sx), n_bands=n_bands,
                      device=dev)
