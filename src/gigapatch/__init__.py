"""gigapatch: new images with the patch statistics of one reference, at any size.

The closed-form patch denoiser inside a coarse-to-fine diffusion sampler
(Qiu, Kutulakos, Lindell, CVPR 2026), no training.
"""

from .api import generate
from .config import Config, load_config
from .errors import GigapatchError

__all__ = ["generate", "Config", "load_config", "GigapatchError", "__version__"]
__version__ = "0.1.0"
