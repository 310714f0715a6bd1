"""gigapatch: new images with the patch statistics of one reference, at any size.

The closed-form patch denoiser inside a coarse-to-fine diffusion sampler
(Qiu, Kutulakos, Lindell, CVPR 2026), no training.

``generate`` is imported lazily so that ``gigapatch --help`` does not pay for torch.
"""

from typing import Any

from .config import Config, load_config
from .errors import GigapatchError

__all__ = ["generate", "Config", "load_config", "GigapatchError", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "generate":
        from .api import generate

        return generate
    raise AttributeError(f"module 'gigapatch' has no attribute {name!r}")
