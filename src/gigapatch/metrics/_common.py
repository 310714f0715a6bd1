"""Shared helpers of the metrics: input conversion, pyramids, patch subsampling.

Everything here is pure (no file I/O) and draws randomness only from explicit seeds. Devices
come from :func:`gigapatch.device.resolve_device`, patches from the sampler's own extractor
(:mod:`gigapatch.diffusion.patch_index`); files are read with
:func:`gigapatch.storage.read_image`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gigapatch.device import resolve_device
from gigapatch.diffusion.patch_index import extract_patches as all_patches
from gigapatch.diffusion.patch_index import gather_patches
from gigapatch.errors import GigapatchError

#: ITU-R BT.601 luma weights, used wherever a grayscale value is needed.
LUMA = (0.299, 0.587, 0.114)


def as_image(
    img: Any, *, name: str = "image", device: str | torch.device | None = None
) -> torch.Tensor:
    """Convert one image to a float32 tensor of shape (C, H, W) with values in [0, 1].

    Parameters
    ----------
    img : numpy.ndarray or torch.Tensor
        Shape (H, W) grayscale, (H, W, 1), (H, W, 2) gray + alpha, (H, W, 3) RGB or
        (H, W, 4) RGBA. Alpha is dropped. ``uint8`` is divided by 255, ``uint16`` by 65535,
        ``bool`` becomes 0/1, floats are taken as they are (expected in [0, 1]).
    name : str
        How the input is called in error messages (e.g. ``"reference"``, ``"sample 3"``).
    device : str or torch.device, optional
        Where the tensor goes (see :func:`resolve_device`); CPU when omitted.

    Returns
    -------
    torch.Tensor
        float32, shape (C, H, W) with C = 1 or 3.
    """
    dev = resolve_device(device)
    if isinstance(img, torch.Tensor):
        t = img.detach()
    elif isinstance(img, np.ndarray) or hasattr(img, "__array__"):
        arr = np.asarray(img)
        if arr.dtype == object:
            raise GigapatchError(f"metrics: {name} is not a numeric image array")
        if arr.dtype == np.uint16:
            arr = arr.astype(np.float32) / 65535.0
        elif arr.dtype == np.uint32:
            arr = arr.astype(np.float32) / 4294967295.0
        elif arr.dtype.kind in "iu" and arr.dtype != np.uint8:
            arr = arr.astype(np.float32)
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise GigapatchError(
            f"metrics: {name} must be a numpy array or torch tensor of shape (H, W) or "
            f"(H, W, C), got {type(img).__name__}; read files first (e.g. with "
            "gigapatch.storage.read_image)"
        )
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()  # bool -> 0/1
    if t.ndim == 2:
        t = t[:, :, None]
    if t.ndim != 3:
        raise GigapatchError(
            f"metrics: {name} has shape {tuple(t.shape)}; expected (H, W) or (H, W, C) "
            "with C in 1..4 (one image, channels last)"
        )
    c = t.shape[2]
    if c == 2:
        t = t[:, :, :1]
    elif c == 4:
        t = t[:, :, :3]
    elif c not in (1, 3):
        raise GigapatchError(
            f"metrics: {name} has {c} channels (shape {tuple(t.shape)}); expected 1 (gray), "
            "2 (gray+alpha), 3 (RGB) or 4 (RGBA), channels last"
        )
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise GigapatchError(f"metrics: {name} is empty (shape {tuple(t.shape)})")
    t = t.permute(2, 0, 1).contiguous().to(dev)
    if not bool(torch.isfinite(t).all()):
        raise GigapatchError(f"metrics: {name} contains NaN or infinite values")
    return t


def match_channels(
    a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replicate a gray (1, H, W) image to 3 channels when the other one is RGB."""
    if a.shape[0] == b.shape[0]:
        return a, b
    if a.shape[0] == 1:
        return a.expand(3, -1, -1), b
    return a, b.expand(3, -1, -1)


def fingerprint(x: torch.Tensor) -> tuple:
    """A cheap content key of a tensor (shape, sum, position-weighted sum) for caches."""
    flat = x.reshape(-1).to(torch.float64)
    ramp = torch.arange(flat.numel(), device=flat.device, dtype=torch.float64) % 9973 + 1
    return (tuple(x.shape), float(flat.sum().item()), float((flat * ramp).sum().item()))


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of a (C, H, W) or (N, C, H, W) tensor; returns shape (H, W) or (N, H, W)."""
    c = x.shape[-3]
    if c == 1:
        return x[..., 0, :, :]
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * w).sum(dim=-3)


def require_min_size(x: torch.Tensor, minimum: int, *, name: str, what: str) -> None:
    """Raise GigapatchError when an image (C, H, W) is smaller than ``minimum`` on a side."""
    h, w = x.shape[-2:]
    if h < minimum or w < minimum:
        raise GigapatchError(
            f"metrics: {name} is {w}x{h} px, too small for {what} (needs at least "
            f"{minimum}x{minimum}); use a larger image or a smaller patch/window size"
        )


def pyramid_sizes(
    shape_a: tuple[int, int],
    shape_b: tuple[int, int],
    *,
    factor: float,
    min_size: int,
    patch_size: int,
    max_levels: int | None = None,
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Sizes (H, W) of both images at every pyramid level, finest first.

    Level ``i`` scales both images by ``factor ** i``; the pyramid stops before the smaller
    side of either image would drop below ``max(min_size, patch_size)``. Level 0 is the
    images as given, so there is always at least one level.
    """
    if not 0.0 < factor < 1.0:
        raise GigapatchError(
            f"metrics: pyramid factor must be in (0, 1), got {factor}; use 0.5 or 0.75"
        )
    floor = max(int(min_size), int(patch_size))
    levels = [(tuple(shape_a), tuple(shape_b))]
    i = 1
    while max_levels is None or len(levels) < max_levels:
        s = factor**i
        sa = (max(1, round(shape_a[0] * s)), max(1, round(shape_a[1] * s)))
        sb = (max(1, round(shape_b[0] * s)), max(1, round(shape_b[1] * s)))
        if min(sa + sb) < floor:
            break
        levels.append((sa, sb))
        i += 1
    return levels


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Anti-aliased bilinear resize of a (C, H, W) tensor to ``size`` = (H, W)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    y = F.interpolate(
        x[None], size=tuple(size), mode="bilinear", align_corners=False, antialias=True
    )
    return y[0]


def random_positions(
    h: int, w: int, n: int, *, seed: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``n`` random (y, x) positions in an h x w grid (with replacement), or None for all.

    Returns None when ``n >= h * w`` (the caller then uses every position).
    """
    total = h * w
    if n >= total:
        return None
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    idx = torch.randint(0, total, (n,), generator=g)
    return idx // w, idx % w


def extract_patches(
    x: torch.Tensor,
    patch_size: int,
    *,
    positions: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Patches of a (C, H, W) image as rows, shape (N, C * p * p).

    The sampler's own patch layout (:func:`gigapatch.diffusion.patch_index.extract_patches`);
    with ``positions`` = (ys, xs) of top-left corners, only those patches are gathered
    (:func:`~gigapatch.diffusion.patch_index.gather_patches`, no full unfold), so memory stays
    proportional to the number of patches asked for.
    """
    if positions is None:
        return all_patches(x, patch_size)
    ys, xs = positions
    return gather_patches(x, ys.to(x.device), xs.to(x.device), patch_size)


def patch_positions(
    x: torch.Tensor, patch_size: int, max_patches: int | None, *, seed: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Top-left corners of ``max_patches`` random patches of a (C, H, W) image, or None for all.

    Parameters
    ----------
    x : torch.Tensor
        Image, shape (C, H, W).
    patch_size : int
        Patch side p; there are (H - p + 1) x (W - p + 1) patch positions.
    max_patches : int or None
        How many random positions (with replacement) to draw; None = every position.
    seed : int
        Seed of the draw.

    Returns
    -------
    tuple of torch.Tensor or None
        (ys, xs), or None when every position is to be used (``max_patches`` is None or
        not smaller than the number of positions).
    """
    h, w = x.shape[-2:]
    nh, nw = h - patch_size + 1, w - patch_size + 1
    if max_patches is None:
        return None
    return random_positions(nh, nw, int(max_patches), seed=seed)


def sample_patches(
    x: torch.Tensor, patch_size: int, max_patches: int | None, *, seed: int
) -> torch.Tensor:
    """All patches of a (C, H, W) image, or ``max_patches`` random ones; shape (N, C*p*p)."""
    pos = patch_positions(x, patch_size, max_patches, seed=seed)
    return extract_patches(x, patch_size, positions=pos)


def prepare_pair(
    a: Any,
    b: Any,
    *,
    patch_size: int,
    device: str | torch.device | None,
    names: tuple[str, str] = ("first image", "second image"),
) -> tuple[torch.device, torch.Tensor, torch.Tensor]:
    """Check and convert the two images of a patch metric.

    Parameters
    ----------
    a, b : numpy.ndarray or torch.Tensor
        Images, shape (H, W) or (H, W, C); see :func:`as_image`.
    patch_size : int
        Patch side; each image must be at least this large on both sides.
    device : str or torch.device or None
        Where the tensors go (see :func:`resolve_device`).
    names : tuple of str
        How ``a`` and ``b`` are called in error messages.

    Returns
    -------
    tuple
        (device, ta, tb): the resolved device and both images as float32 (C, H, W)
        tensors with the same number of channels (a gray one replicated to RGB).

    Raises
    ------
    GigapatchError
        If an image is not an image array or is smaller than one patch.
    """
    dev = resolve_device(device)
    ta = as_image(a, name=names[0], device=dev)
    tb = as_image(b, name=names[1], device=dev)
    what = f"{patch_size}x{patch_size} patches"
    require_min_size(ta, patch_size, name=names[0], what=what)
    require_min_size(tb, patch_size, name=names[1], what=what)
    ta, tb = match_channels(ta, tb)
    return dev, ta, tb


def level_seed(seed: int, level: int) -> int:
    """Seed of the patch subsample at pyramid level ``level``.

    The same for both images at a level (so a distance of an image to itself is 0 and the
    distances are symmetric).
    """
    return (int(seed) * 1_000_003 + 7919 * (level + 1)) % (2**63 - 1)


def pyramid_scores(
    ta: torch.Tensor,
    tb: torch.Tensor,
    *,
    measure: Callable[[torch.Tensor, int], Any],
    compare: Callable[[Any, Any], float],
    cache_key: Callable[[tuple, tuple[int, int], int], tuple],
    cache: dict | None,
    factor: float,
    min_size: int,
    patch_size: int,
    max_levels: int | None,
    seed: int,
) -> LevelScores:
    """A score of two images at every level of their Gaussian pyramids.

    At each level both images are resized (:func:`resize`) to their sizes from
    :func:`pyramid_sizes`, each is summarised by ``measure`` and the two summaries are
    scored by ``compare``. The summaries of ``tb`` are kept in ``cache`` when one is given.

    Parameters
    ----------
    ta, tb : torch.Tensor
        Images, shape (C, H, W), same C (see :func:`prepare_pair`).
    measure : callable
        ``measure(image, level_seed)`` -> the summary of one image at one level.
    compare : callable
        ``compare(summary_a, summary_b)`` -> float, the score at one level.
    cache_key : callable
        ``cache_key(fingerprint(tb), size_b, level_seed)`` -> the hashable key of the
        summary of ``tb`` at a level; used only when ``cache`` is given.
    cache : dict, optional
        Reused across calls to keep the summaries of ``tb``.
    factor, min_size, patch_size, max_levels
        The pyramid (see :func:`pyramid_sizes`).
    seed : int
        Base seed; level ``i`` uses :func:`level_seed` (seed, i) for both images.

    Returns
    -------
    LevelScores
        One score per level (finest first), their mean, and the sizes of both images.
    """
    sizes = pyramid_sizes(
        tuple(ta.shape[-2:]), tuple(tb.shape[-2:]),
        factor=factor, min_size=min_size, patch_size=patch_size, max_levels=max_levels,
    )
    values = []
    with torch.no_grad():
        for lvl, (sa, sb) in enumerate(sizes):
            s = level_seed(seed, lvl)
            stat_a = measure(resize(ta, sa), s)
            key = None
            if cache is not None:
                key = cache_key(fingerprint(tb), sb, s)
            stat_b = cache.get(key) if key is not None else None
            if stat_b is None:
                stat_b = measure(resize(tb, sb), s)
                if key is not None:
                    cache[key] = stat_b
            values.append(compare(stat_a, stat_b))
    return LevelScores(mean=float(sum(values) / len(values)), levels=values, sizes=sizes)


@dataclass(frozen=True)
class LevelScores:
    """A score computed at every level of a Gaussian pyramid.

    Attributes
    ----------
    mean : float
        Mean over levels (the headline number).
    levels : list of float
        One value per level, finest (the images as given) first.
    sizes : list of tuple
        ((H_a, W_a), (H_b, W_b)) of both images at each level.
    """

    mean: float
    levels: list[float] = field(default_factory=list)
    sizes: list[tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "mean": self.mean,
            "levels": list(self.levels),
            "sizes": [[list(a), list(b)] for a, b in self.sizes],
        }

    def __float__(self) -> float:
        return float(self.mean)


def finite_or_none(v: float) -> float | None:
    """``v`` unless it is NaN (JSON has no NaN); +-inf stays (json writes Infinity)."""
    return None if (isinstance(v, float) and math.isnan(v)) else v


def as_image_list(
    samples: Any, *, device: str | torch.device | None, name: str = "sample"
) -> list[torch.Tensor]:
    """A sequence of images (or one (N, H, W, C) array) as a list of (C, H, W) tensors."""
    if isinstance(samples, (np.ndarray, torch.Tensor)) and samples.ndim == 4:
        seq: Sequence[Any] = [samples[i] for i in range(samples.shape[0])]
    elif isinstance(samples, (list, tuple)):
        seq = samples
    else:
        raise GigapatchError(
            f"metrics: {name}s must be a list of images or one (N, H, W, C) array, got "
            f"{type(samples).__name__}"
            + (f" with shape {tuple(samples.shape)}" if hasattr(samples, "shape") else "")
        )
    return [as_image(s, name=f"{name} {i}", device=device) for i, s in enumerate(seq)]
