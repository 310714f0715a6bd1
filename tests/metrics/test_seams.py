"""Seam score at tile boundaries."""

from __future__ import annotations

from gigapatch.metrics import seam_score

from .images import synthetic_texture as _synthetic_texture


def test_seam_score_detects_tile_offsets():
    img = _synthetic_texture(128, 128)  # statistically uniform, so the clean ratio is ~1
    clean = seam_score(img, tile_size=32)
    assert 0.8 < clean.image < 1.25
    assert all(0.7 < b < 1.4 for b in clean.bands), clean
    steps = img.copy()
    for ty in range(4):
        for tx in range(4):
            steps[ty * 32 : (ty + 1) * 32, tx * 32 : (tx + 1) * 32] += 0.25 * ((ty + tx) % 2)
    seamy = seam_score(steps, tile_size=32)
    assert seamy.image > 1.4 * clean.image
    assert seamy.worst > 1.4
    # the same grid but shifted origin misses the seams
    off = seam_score(steps, tile_size=32, origin=(16, 16))
    assert off.image < seamy.image
