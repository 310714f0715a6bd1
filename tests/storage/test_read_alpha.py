"""read_image(alpha="keep") (map stacks' --alpha keep): the alpha channel stays, last, for
PNG and TIFF (unassociated and associated alpha); write_image(alpha=True) writes it back."""

from __future__ import annotations

import numpy as np
import pytest

from gigapatch.errors import GigapatchError
from gigapatch.storage import read_image, write_image


def _rgba(h=6, w=7):
    g = np.random.default_rng(0)
    a = g.integers(0, 256, (h, w, 4), dtype=np.uint8)
    a[:, :, 3] = np.linspace(40, 255, w).astype(np.uint8)[None, :]
    return a


@pytest.mark.parametrize("extra", ["unassalpha", "assocalpha"])
def test_tiff_alpha_kept(tmp_path, extra):
    import tifffile

    a = _rgba()
    p = tmp_path / "a.tif"
    tifffile.imwrite(p, a, photometric="rgb", extrasamples=[extra])
    kept, info = read_image(p, alpha="keep")
    assert kept.shape == (6, 7, 4) and info.alpha_kept and not info.had_alpha
    np.testing.assert_allclose(kept[:, :, 3], a[:, :, 3] / 255.0, atol=1e-6)
    dropped, info2 = read_image(p)
    assert dropped.shape == (6, 7, 3) and info2.had_alpha
    np.testing.assert_allclose(kept[:, :, :3], dropped, atol=1e-6)


def test_png_alpha_round_trip(tmp_path):
    a = _rgba().astype(np.float32) / 255
    p = tmp_path / "a.png"
    write_image(p, a, alpha=True)
    kept, info = read_image(p, alpha="keep")
    assert info.alpha_kept
    np.testing.assert_allclose(kept, a, atol=1e-6)
    grey = a[:, :, [0, 3]]
    write_image(tmp_path / "g.png", grey, alpha=True)
    np.testing.assert_allclose(read_image(tmp_path / "g.png", alpha="keep")[0], grey,
                               atol=1e-6)
    with pytest.raises(GigapatchError, match="JPEG has no alpha"):
        write_image(tmp_path / "a.jpg", a, alpha=True)
