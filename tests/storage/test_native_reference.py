"""A big reference's low-memory route gives the same values, index and sample as before.

The route (issue 12 item 4): 8/16-bit references stay uint8/uint16 after reading
(``read_image(native=True)``, ``coerce_image(native=True)``) and go to model space in
bands (``to_model``); float32 references in [0, 1] are not copied; the patch index merges
duplicates while it gathers and keeps one position-map cell per grid step. Oracles: the
float32 reader (itself checked against written-out values in test_read.py), and the
in-memory index route (every kept patch gathered, ``PatchIndex.prune``, a full-size
position map).
"""

from __future__ import annotations

import numpy as np
import pytest
import pyvips
import tifffile
import torch

from gigapatch.diffusion import model_space
from gigapatch.diffusion.model_space import to_model
from gigapatch.storage import read_image
from gigapatch.storage.read import coerce_image

RNG = np.random.default_rng(77)


def _old_to_model(a: np.ndarray) -> torch.Tensor:
    """The pre-change conversion: a float32 (C, H, W) copy, then ``* 2 - 1``."""
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) * 2 - 1


def _files(tmp_path):
    u8 = RNG.integers(0, 256, (13, 11, 3), dtype=np.uint8)
    u16 = RNG.integers(0, 65536, (13, 11, 1), dtype=np.uint16)
    rgba = RNG.integers(0, 256, (13, 11, 4), dtype=np.uint8)
    cmyk = RNG.integers(0, 256, (13, 11, 4), dtype=np.uint8)
    out = {}
    p = tmp_path / "rgb.png"
    pyvips.Image.new_from_array(u8).copy(interpretation="srgb").write_to_file(str(p))
    out["png8"] = (p, np.uint8)
    p = tmp_path / "grey16.png"
    pyvips.Image.new_from_array(u16[:, :, 0]).copy(interpretation="grey16") \
        .write_to_file(str(p))
    out["png16"] = (p, np.uint16)
    p = tmp_path / "rgba.png"
    pyvips.Image.new_from_array(rgba).copy(interpretation="srgb").write_to_file(str(p))
    out["png_alpha"] = (p, np.uint8)
    p = tmp_path / "q.jpg"
    im = pyvips.Image.new_from_array(u8).copy(interpretation="srgb")
    im = im.copy()
    im.set_type(pyvips.GValue.gint_type, "orientation", 6)
    im.write_to_file(str(p), Q=95)
    out["jpeg_rotated"] = (p, np.uint8)
    p = tmp_path / "rgb16.tif"
    tifffile.imwrite(p, RNG.integers(0, 65536, (13, 11, 3), dtype=np.uint16),
                     photometric="rgb")
    out["tiff16"] = (p, np.uint16)
    p = tmp_path / "cmyk.tif"
    tifffile.imwrite(p, cmyk, photometric="separated")
    out["tiff_cmyk"] = (p, np.float32)  # converted in floats: not kept native
    p = tmp_path / "assoc.tif"
    tifffile.imwrite(p, rgba, photometric="rgb", extrasamples=[1])
    out["tiff_assoc_alpha"] = (p, np.float32)  # un-premultiplied in floats
    return out


@pytest.mark.parametrize("band_bytes", [None, 40])
def test_native_read_gives_the_float_readers_values_bit_for_bit(tmp_path, monkeypatch,
                                                                  band_bytes):
    # kills: to_model dividing uint16 by 255 (or uint8 by 256), a band loop that skips or
    # repeats the rows at a band boundary (band_bytes=40: one row per band), native kept
    # for CMYK / associated alpha (values computed in floats), orientation or alpha
    # handling lost on the native route, native silently ignored (dtype float32: no saving)
    if band_bytes is not None:
        monkeypatch.setattr(model_space, "_BAND_BYTES", band_bytes)
    for name, (path, dtype) in _files(tmp_path).items():
        f, info_f = read_image(path)
        n, info_n = read_image(path, native=True)
        assert n.dtype == dtype, name
        assert info_n == info_f, name
        assert n.shape == f.shape and n.flags.c_contiguous, name
        assert torch.equal(to_model(n), _old_to_model(f)), name
        assert np.array_equal(coerce_image(n)[0], f), name  # the tiled route's float32
        assert coerce_image(n, native=True)[0].dtype == dtype, name


def test_float_reference_is_not_copied_and_never_written():
    # kills: a coerce that copies a float32 reference in [0, 1] (a second full-size copy
    # of a big reference), a clip or to_model that writes into the caller's array (a
    # single-channel (H, W, 1) array's transpose is already contiguous: from_numpy would
    # share it)
    a = RNG.random((9, 8, 1), dtype=np.float32)
    keep = a.copy()
    got = coerce_image(a)[0]
    assert np.shares_memory(got, a)
    assert torch.equal(to_model(a), _old_to_model(keep))
    assert np.array_equal(a, keep)
    slack = keep.copy()
    slack[0, 0, 0] = 1.0005  # within the 1e-3 slack: clipped into a new array
    before = slack.copy()
    clipped = coerce_image(slack)[0]
    assert float(clipped.max()) == 1.0 and np.array_equal(slack, before)


def _old_route_from_image(orig):
    """PatchIndex.from_image as before: every kept patch gathered, then prune, and the
    (hp, wp) position map of every position."""
    from gigapatch.diffusion.patch_index import PatchIndex

    def from_image(image, patch_size, *, merge_duplicates=True, max_entries=None,
                   prune_tolerance=0.0):
        idx = orig(image, patch_size, max_entries=max_entries, merge_duplicates=False)
        if merge_duplicates or prune_tolerance > 0:
            idx = idx.prune(prune_tolerance)
        return PatchIndex(idx.patches, idx.log_counts, idx.sq_norms, idx.patch_size,
                          idx.channels, idx.positions, idx.full_position_map())

    return classmethod(lambda cls, *a, **k: from_image(*a, **k))


def test_low_memory_route_gives_the_same_sample(tmp_path, monkeypatch, balloons):
    # The whole run on a PNG (uint8 route, streamed merge, grid position map with step
    # g = 3 at the 16 MB index budget, used by the fast backend's propagation) against
    # the float32 array with the old in-memory index: bit-identical outputs.
    # Kills: entry_at reading the wrong cell (y % g, a transposed map), a merge that
    # keeps another representative or multiplicity, the uint8 route's conversion off by
    # one ulp anywhere.
    from gigapatch import api, load_config
    from gigapatch.diffusion.patch_index import PatchIndex

    u8 = np.rint(balloons * 255).astype(np.uint8)
    u8[20:70, 30:110] = (90, 140, 60)  # a flat block: duplicate patches to merge
    path = tmp_path / "ref.png"
    pyvips.Image.new_from_array(u8).copy(interpretation="srgb").write_to_file(str(path))
    cfg = load_config(overrides=["sampler.steps=4", "sampler.levels=2",
                                 "denoiser.backend=fast", "denoiser.index_budget_mb=16"])
    seen = []
    orig = PatchIndex.from_image.__func__

    def spy(cls, *a, **k):
        idx = orig(cls, *a, **k)
        seen.append((idx.position_step, idx.size, float(idx.log_counts.max())))
        return idx

    monkeypatch.setattr(PatchIndex, "from_image", classmethod(spy))
    new = api.generate(path, size=(40, 32), seed=3, config=cfg)
    assert max(s[0] for s in seen) >= 3  # the finest level is subsampled on a grid
    assert all(s[2] > np.log(s[0] ** 2) for s in seen)  # and merged duplicates
    monkeypatch.setattr(PatchIndex, "from_image",
                        _old_route_from_image(lambda *a, **k: orig(PatchIndex, *a, **k)))
    old = api.generate(u8.astype(np.float32) / np.float32(255), size=(40, 32), seed=3,
                       config=cfg)
    assert np.array_equal(new, old)


def _old_propagate(idx, prev, qid, rows, cols):
    """fast.FastDenoiser._propagate as it was, over the full (hp, wp) position map."""
    full = idx.full_position_map()
    nr, nc, k = rows.numel(), cols.numel(), prev.shape[1]
    hp, wp = full.shape
    i, j = qid // nc, qid % nc
    ii = torch.stack([(i - 1).clamp_min(0), (i + 1).clamp_max(nr - 1), i, i])
    jj = torch.stack([j, j, (j - 1).clamp_min(0), (j + 1).clamp_max(nc - 1)])
    nb = prev[ii * nc + jj]
    dy = (rows[i][None, :] - rows[ii])[..., None]
    dx = (cols[j][None, :] - cols[jj])[..., None]
    pos = idx.positions[nb]
    py, px = pos[..., 0] + dy, pos[..., 1] + dx
    ok = (py >= 0) & (py < hp) & (px >= 0) & (px < wp)
    shifted = full.reshape(-1)[py.clamp(0, hp - 1) * wp + px.clamp(0, wp - 1)]
    return torch.where(ok, shifted, nb).permute(1, 0, 2).reshape(qid.numel(), 4 * k)


@pytest.mark.parametrize("budget", [None, 150])
def test_propagation_reads_the_grid_position_map_as_the_full_one(budget, balloons):
    # The fast backend shifts each neighbour's candidates by one grid step through the
    # position map; with one map cell per g x g positions it must find the entries the
    # full (hp, wp) map gave. (The end-to-end sample above is insensitive to it: junk
    # candidates are reranked away.) Kills: hp, wp taken from the grid map's shape (the
    # bounds test then drops shifts), a cell read as (y % g) or transposed.
    from gigapatch.diffusion.fast import make_fast_denoise
    from gigapatch.diffusion.patch_index import PatchIndex
    from gigapatch.config import load_config
    from gigapatch.pipeline.plan import denoiser_settings

    img = to_model(np.ascontiguousarray(balloons[:40, :52]))
    idx = PatchIndex.from_image(img, 5, max_entries=budget)
    assert (idx.position_step > 1) == (budget is not None)
    den = make_fast_denoise(idx, patch_size=5, rho=0.2,
                            params=denoiser_settings(load_config(None)))
    g = torch.Generator().manual_seed(5)
    rows, cols = torch.arange(0, 36, 2), torch.arange(0, 48, 2)
    prev = torch.randint(0, idx.size, (rows.numel() * cols.numel(), 6), generator=g)
    qid = torch.randperm(prev.shape[0], generator=g)[:200]
    got = den._propagate(prev, qid, rows, cols)
    assert torch.equal(got, _old_propagate(idx, prev, qid, rows, cols))
