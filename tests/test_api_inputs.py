"""User mistakes in the Python API: one GigapatchError in the API's words (``size=``, never
``--size``), and what the API accepts (integer arrays, PIL images, any band count)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import gigapatch
from gigapatch.errors import GigapatchError

CHEAP = ["--set", "sampler.patch_size=5", "--set", "sampler.steps=2"]
RNG = np.random.default_rng(3)


def _cheap():
    return gigapatch.load_config(None, ["sampler.patch_size=5", "sampler.steps=2"])


# ----------------------------------------------------------------------- Python API

@pytest.mark.parametrize("kwargs,words", [
    ({"size": 32}, "size=32"),
    ({"size": (20.5, 20)}, "size=(20.5, 20)"),
    ({"size": (0, 20)}, ">= 1"),
    ({"size": "32x20"}, "size='32x20'"),
    ({"scale": "2x1"}, "scale='2x1'"),
    ({"scale": (2, 0)}, "scale=(2, 0)"),
    ({"scale": float("nan")}, "scale=nan"),
    ({"seed": 1.5}, "seed=1.5"),
    ({"seed": -1}, "seed=-1"),
    ({"seed": 2**63}, "0..2**63-1"),
    ({"seed": 2**64}, "0..2**63-1"),
    ({"config": {"sampler": {"steps": 2}}}, "config=dict"),
    ({"page": 1}, "page= only applies"),
    ({"page": -1}, "page=-1"),
    ({"size": (32, 20), "scale": 2}, "either size= or scale="),
    ({"device": "gpu"}, "device='gpu'"),
])
def test_api_mistakes_raise_gigapatch_error_in_api_words(ref_u8, kwargs, words):
    """Mutants killed: a raw TypeError/ValueError, int() truncation of 20.5, seeds taken
    modulo 2**64, messages naming CLI flags."""
    with pytest.raises(GigapatchError) as e:
        gigapatch.generate(ref_u8, **kwargs)
    msg = str(e.value)
    assert words in msg and "--" not in msg and "\n" not in msg, msg


def test_api_file_errors_use_api_words(tmp_path):
    p = tmp_path / "stack.tif"
    with tifffile.TiffWriter(p) as tw:
        tw.write(np.zeros((8, 8), np.uint8))
        tw.write(np.zeros((8, 8), np.uint8))
    with pytest.raises(GigapatchError) as e:
        gigapatch.generate(p, config=_cheap())
    assert "page=N" in str(e.value) and "--" not in str(e.value)


def test_api_accepts_integer_arrays_and_pil_images(ref_u8):
    """int64 0..255 is 8-bit (same image as uint8); a palette PIL image is its colours."""
    cfg = _cheap()
    want = gigapatch.generate(ref_u8, seed=4, config=cfg)
    np.testing.assert_array_equal(gigapatch.generate(ref_u8.astype(np.int64), seed=4,
                                                     config=cfg), want)
    np.testing.assert_array_equal(gigapatch.generate(Image.fromarray(ref_u8), seed=4,
                                                     config=cfg), want)
    pal = Image.fromarray(ref_u8).quantize(16)
    rgb = np.asarray(pal.convert("RGB"))
    out = gigapatch.generate(pal, seed=4, config=cfg)
    np.testing.assert_array_equal(out, gigapatch.generate(rgb, seed=4, config=cfg))
    assert out.shape == (20, 24, 3)


def test_api_keeps_every_band_of_an_array(ref_u8):
    """The sampler takes any channel count: a 4-band (RGB + NIR-like) reference gives a
    4-band output, not RGBA with its 4th band dropped."""
    nir = ref_u8[:, :, :1]
    out = gigapatch.generate(np.concatenate([ref_u8, nir], axis=2), seed=1, config=_cheap())
    assert out.shape == (20, 24, 4)


def test_readme_quotes_the_printed_api_message(ref_u8):
    """README, "Python API", quotes this message: it must be the one raised."""
    with pytest.raises(GigapatchError) as e:
        gigapatch.generate(ref_u8, size=(20.5, 20))
    assert str(e.value).startswith(
        "size=(20.5, 20): width and height must be whole numbers of pixels")
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "`size=(20.5, 20): width and height must be whole numbers of pixels`" in readme
