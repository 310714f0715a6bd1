"""Map stacks (gigapatch.stacks): aligned maps sampled as one multi-channel image keep their
per-pixel correspondence, weights decide which map drives the match, normals renormalise."""

from __future__ import annotations

import numpy as np
import pytest

from gigapatch.config import load_config
from gigapatch.errors import GigapatchError
from gigapatch.stacks import (MapSpec, generate_maps, map_output_paths, renormalize_normals,
                              stack_maps, unstack_maps, write_map)
from gigapatch.storage import read_image

from .helpers import DATA, TINY


@pytest.fixture(scope="module")
def albedo():
    return read_image(DATA / "wild_bush_crop.png")[0][:40, :48]


def _cfg(*extra):
    return load_config(overrides=TINY + list(extra))


def test_stack_and_unstack_are_inverse():
    g = np.random.default_rng(0)
    maps = [g.random((5, 6, 3), dtype=np.float32), g.random((5, 6, 1), dtype=np.float32)]
    st = stack_maps(maps, [1.0, 0.25])
    assert st.shape == (5, 6, 4) and st.min() >= 0 and st.max() <= 1
    # the weight scales the map's spread around 0.5 (its share of the patch distance)
    np.testing.assert_allclose(st[:, :, 3] - 0.5, 0.25 * (maps[1][:, :, 0] - 0.5), atol=1e-7)
    back = unstack_maps(st, [3, 1], [1.0, 0.25])
    for a, b in zip(maps, back):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_an_affine_map_of_the_albedo_stays_that_map_of_the_output(albedo):
    # oracle: every output pixel is ONE convex combination of reference pixels for all
    # channels, so inverse = 1 - albedo holds exactly (float rounding). kills: unstack
    # without undoing the weight, channels split at the wrong offset, per-map sampling
    inverse = 1.0 - albedo.mean(axis=2, keepdims=True)  # a grey map, another channel count
    out = generate_maps([albedo, inverse], seed=1, config=_cfg())
    assert [o.shape for o in out] == [albedo.shape, inverse.shape]
    np.testing.assert_allclose(out[1], 1.0 - out[0].mean(axis=2, keepdims=True), atol=2e-5)
    assert out[0].std() > 0.05  # a real sample


def test_the_first_map_drives_the_match(albedo):
    # with a negligible weight the second map changes nothing: the albedo output is the
    # plain generate() of the albedo; with a large weight it does. kills: weights ignored
    # or inverted. The paper preset: the default's usage prior counts hard nearest-patch
    # uses in a pilot, and a 1e-4 weight that tips one near tie there moves a count and
    # with it the whole sample (a discontinuity of that prior, not of the map weights)
    from gigapatch import generate

    noise = np.random.default_rng(3).random(albedo.shape[:2] + (1,), dtype=np.float32)
    plain = generate(albedo, seed=2, config=load_config("paper", TINY))
    weak = generate_maps([albedo, noise], specs=[MapSpec("a"), MapSpec("n", 1e-4)], seed=2,
                         config=load_config("paper", TINY))
    strong = generate_maps([albedo, noise], specs=[MapSpec("a", 0.05), MapSpec("n", 1.0)],
                           seed=2, config=load_config("paper", TINY))
    # (at the lowest noise levels even a 1e-4 weight can tip a near tie: a few pixels move)
    assert np.abs(weak[0] - plain).mean() < 1e-3
    assert (np.abs(weak[0] - plain) > 1e-3).mean() < 0.02
    assert np.abs(strong[0] - plain).mean() > 0.03


def test_normal_maps_renormalise_to_unit_length(albedo):
    g = albedo.mean(axis=2)
    n = np.stack([np.gradient(g, axis=1), np.gradient(g, axis=0), np.full_like(g, 0.3)], 2)
    n = n / np.linalg.norm(n, axis=2, keepdims=True)
    enc = ((n + 1) / 2).astype(np.float32)
    out = generate_maps([albedo, enc], specs=[MapSpec("a"), MapSpec("normal", normal=True)],
                        normalize_normals=True, seed=0, config=_cfg())
    length = np.linalg.norm(2.0 * out[1].astype(np.float64) - 1.0, axis=2)
    np.testing.assert_allclose(length, 1.0, atol=1e-5)
    raw = generate_maps([albedo, enc], seed=0, config=_cfg())[1]  # averaging shortens them
    assert np.abs(np.linalg.norm(2.0 * raw - 1.0, axis=2) - 1).max() > 1e-3
    np.testing.assert_allclose(renormalize_normals(np.full((1, 1, 3), 0.5, np.float32)),
                               [[[0.5, 0.5, 1.0]]])


def test_maps_of_different_sizes_are_refused(albedo):
    with pytest.raises(GigapatchError, match="map b is 47x40 but a is 48x40"):
        generate_maps([albedo, albedo[:, :47]], specs=[MapSpec("a"), MapSpec("b")],
                      config=_cfg())


def test_too_many_maps_for_the_index_budget_are_refused(albedo):
    maps = [albedo] * 40
    with pytest.raises(GigapatchError, match="40 maps .* fewer maps"):
        generate_maps(maps, config=_cfg("denoiser.index_budget_mb=16",
                                        "sampler.patch_size=15", "sampler.levels=1"))


def test_output_names():
    assert [p.name for p in map_output_paths("d/out.png", ["a.png", "x/normal.png",
                                                           "rough.tif"])] == \
        ["out.png", "out_normal.png", "out_rough.png"]
    assert [p.name for p in map_output_paths("o.tif", ["a.png", "n.png", "y/n.png"])] == \
        ["o.tif", "o_n.tif", "o_n_2.tif"]


def _signed_of(g):
    """A fixed signed 3-channel function of a grey map g in [0, 1]: affine, values in
    [-0.8, 0.8] (x, y below 0 where g < 0.5), not unit length."""
    return np.stack([0.8 * (2 * g - 1), 0.6 * (1 - 2 * g), np.full_like(g, 0.5)], 2)


def test_a_signed_float_map_stays_in_its_range_and_aligned(albedo):
    # a float map in [-1, 1] (a normal map's x, y, z) is sampled encoded and comes back in
    # [-1, 1]: an affine function of the albedo stays exactly that function of the output
    # albedo. kills: the output not decoded (it would lie in [0, 1]: 0.5 + m / 2), decoded
    # with the wrong scale, the signed map refused or clipped to [0, 1] on input
    g = albedo.mean(axis=2)
    m = _signed_of(g).astype(np.float32)
    assert m.min() < -0.5
    out = generate_maps([albedo, m], seed=1, config=_cfg())
    assert out[1].dtype == np.float32 and out[1].min() < -0.3
    np.testing.assert_allclose(out[1], _signed_of(out[0].mean(axis=2)), atol=5e-5)


def test_a_signed_normal_map_renormalises_to_unit_length_and_stays_aligned(albedo):
    # with normalize_normals the output vectors have unit length and are the normalised
    # fixed function of the output albedo (the sampled map is that affine function, then
    # renormalised). kills: renormalising the encoded values as if they were vectors
    # (not unit after decoding), decoding before the renormalisation with the [0, 1] rule
    g = albedo.mean(axis=2)
    m = _signed_of(g).astype(np.float32)
    out = generate_maps([albedo, m], specs=[MapSpec("a"), MapSpec("n.tif", normal=True)],
                        normalize_normals=True, seed=1, config=_cfg())
    n = out[1].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(n, axis=2), 1.0, atol=1e-5)
    want = _signed_of(out[0].mean(axis=2).astype(np.float64))
    want /= np.linalg.norm(want, axis=2, keepdims=True)
    np.testing.assert_allclose(n, want, atol=1e-4)
    assert n[..., 0].min() < -0.3  # still signed


def test_signed_maps_round_trip_through_files(tmp_path):
    # float TIFF in [-1, 1]: read with signed=True as is (refused without it), written back
    # as float32 by write_map; a PNG output stores 0.5 + n / 2 (8-bit). kills: the reader
    # clipping or encoding a signed map, write_map writing floats into an 8-bit file
    import tifffile

    g = np.random.default_rng(4).random((6, 7, 3), dtype=np.float32) * 2 - 1
    src = tmp_path / "n.tif"
    tifffile.imwrite(src, g, photometric="rgb")
    a, info = read_image(src, signed=True)
    assert info.signed and a.dtype == np.float32
    np.testing.assert_array_equal(a, g)
    with pytest.raises(GigapatchError, match=r"only \[0, 1\] is accepted"):
        read_image(src)
    assert write_map(tmp_path / "o.tif", g, signed=True, bit_depth=8) == "float32 in [-1, 1]"
    back = tifffile.imread(tmp_path / "o.tif")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, g)
    assert "encoded" in write_map(tmp_path / "o.png", g, signed=True, bit_depth=8)
    enc, _ = read_image(tmp_path / "o.png")
    np.testing.assert_allclose(2 * enc - 1, g, atol=1.01 / 255)
    tifffile.imwrite(tmp_path / "far.tif", g * 3, photometric="rgb")
    with pytest.raises(GigapatchError, match=r"must lie in\s+\[-1, 1\]"):
        read_image(tmp_path / "far.tif", signed=True)
