"""region_novelty (the grey-mush search): oracles on tiny images."""

import numpy as np
import torch

from gigapatch.metrics.regions import block_features, region_novelty


def test_reference_against_itself_scores_zero():
    g = np.random.default_rng(0)
    ref = g.random((40, 56, 3)).astype(np.float32)
    r = region_novelty(ref, ref)
    assert r.max < 1e-6 and r.scores.shape == (4, 6)  # output stride 8 is on the ref's grid


def test_flat_blocks_score_their_colour_distance():
    ref = np.full((16, 16, 3), 0.2, np.float32)
    out = np.full((16, 16, 3), 0.5, np.float32)
    assert abs(region_novelty(ref, out).max - np.sqrt(3) * 0.3) < 1e-6


def test_a_pasted_grey_noisy_region_is_found_where_it_is():
    g = np.random.default_rng(1)
    h, w = 64, 64
    ref = np.zeros((h, w, 3), np.float32)
    ref[:32] = [0.2, 0.4, 0.9]  # sky
    ref[32:] = [0.1, 0.6, 0.1]  # field
    ref += 0.02 * g.standard_normal(ref.shape).astype(np.float32)
    out = ref.copy()
    # the mean of sky and field, dressed in noise: a colour the reference never has
    out[16:48, 40:56] = 0.5 * (ref[:32].mean((0, 1)) + ref[32:].mean((0, 1))) \
        + 0.1 * g.standard_normal((32, 16, 3)).astype(np.float32)
    r = region_novelty(ref, out.clip(0, 1))
    assert r.max > 0.15
    iy, ix = np.unravel_index(int(torch.argmax(r.scores)), tuple(r.scores.shape))
    assert 16 <= iy * 8 + 8 <= 48 and 40 <= ix * 8 + 8 <= 56  # the block's centre
    clean = region_novelty(ref, ref[:, ::-1].copy())  # mirrored: same local content
    assert clean.max < 0.05


def test_block_features_are_thumbnail_and_high_frequency_rms():
    img = torch.zeros(3, 16, 16)
    img[0] = 0.5
    img[1, :8, :8] = 1.0
    img[:, ::2, :] += 0.3  # rows alternate: high frequency
    f = block_features(img, 16, 16)
    assert f.shape == (1, 1, 49)
    thumb = torch.nn.functional.avg_pool2d(img[None], 4, 4)[0]  # (3, 4, 4)
    torch.testing.assert_close(f[0, 0, :48], thumb.reshape(-1) / 4)
    grey = img.mean(0, keepdim=True)[None]
    blur = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(grey, (1,) * 4,
                                                                  mode="replicate"), 3, 1)
    torch.testing.assert_close(f[0, 0, 48], ((grey - blur) ** 2).mean().sqrt())
