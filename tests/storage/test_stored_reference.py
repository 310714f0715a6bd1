"""The run store keeps an 8-bit reference as its uint8 samples (issue 12 item 2: a 13 MP
reference stored as float32 was 9.5 of the 9.96 bytes of scratch per output pixel of a
4096^2 run), and gives back the model-space floats bit for bit.

Mutants killed: a sample off by one (or a float32 reference that is not k/255 stored as
uint8: lossy), a round trip that is not bit-exact (e.g. x * (2/255) - 1 instead of
to_model's order of operations), the store forcing float32."""

import numpy as np
import pytest

from gigapatch.diffusion.model_space import exact_samples, samples_to_model, to_model


def _u8(shape=(7, 5, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_reference_is_kept_as_its_samples(dtype):
    img = _u8().astype(dtype) * (257 if dtype == np.uint16 else 1)
    img[0, 0, 0] = 1  # not a multiple of 257 in 16 bits
    model = to_model(img).numpy()
    s = exact_samples(img, model)
    assert s.dtype == dtype and s.shape == (3, 7, 5)
    assert np.array_equal(np.moveaxis(s, 0, -1), img)
    assert np.array_equal(samples_to_model(s).numpy(), model)


def test_float_reference_of_8bit_values_becomes_uint8_bit_exact():
    u8 = _u8((300, 11, 3))
    img = u8.astype(np.float32) / np.float32(255)  # what load_reference gives for 8-bit
    model = to_model(img).numpy()
    s = exact_samples(img, model)
    assert s is not None and s.dtype == np.uint8
    assert np.array_equal(np.moveaxis(s, 0, -1), u8)
    assert samples_to_model(s).numpy().tobytes() == model.tobytes()


def test_float_reference_with_other_values_stays_float():
    img = _u8().astype(np.float32) / np.float32(255)
    img[3, 2, 1] = np.nextafter(img[3, 2, 1], np.float32(1))  # one ulp off k/255
    model = to_model(img).numpy()
    assert exact_samples(img, model) is None
    assert exact_samples(np.full((4, 4, 1), 0.3, np.float32),
                         to_model(np.full((4, 4, 1), 0.3, np.float32)).numpy()) is None
    f = model.copy()
    assert samples_to_model(f).numpy().tobytes() == model.tobytes()


def test_scratch_estimate_counts_the_stored_reference():
    from gigapatch.storage.diskspace import FS_BLOCK, scratch_bytes

    kw = dict(ref_hw=(100, 200), level_shapes=[(10, 10), (20, 20)],
              grid_shapes=[(1, 1), (1, 1)], output_shapes=[(20, 20)], chunk=64, channels=3,
              out_itemsize=1)
    u8 = scratch_bytes(**kw, ref_itemsize=1)
    assert u8 == 3 * 100 * 200 + 3 * 100 * 4 + 3 * 400 + 2 * FS_BLOCK
    assert scratch_bytes(**kw) - u8 == 3 * 100 * 200 * 3  # float32 by default


def test_run_store_keeps_the_uint8_reference(tmp_path, monkeypatch):
    from pathlib import Path

    import gigapatch.pipeline.run as run
    from gigapatch.api import load_reference
    from gigapatch.config import load_config
    from gigapatch.pipeline.plan import disk_estimate
    from gigapatch.pipeline.run import TiledJob, TiledOptions

    needs = []
    real = run.check_free_space
    monkeypatch.setattr(run, "check_free_space", lambda n: (needs.extend(n), real(n)))

    ref = load_reference(Path(__file__).resolve().parents[1] / "data" / "balloons.png")
    job = TiledJob.prepare(ref[:40, :48], (64, 64), None, seed=0,
                           config=load_config("gigapixel"), device="cpu",
                           options=TiledOptions(run_dir=tmp_path / "run", tile=64, tiled=True))
    try:
        stored = job.store.reference()
        # the free-disk check counts the reference at 1 byte per sample
        assert [b for what, _, b in needs if what != "output"] == \
            [disk_estimate(job.plan, ref_itemsize=1)[0]]
    finally:
        job.release()
    assert stored.dtype == np.uint8 and stored.shape == (3, 40, 48)
    assert samples_to_model(stored).numpy().tobytes() == to_model(ref[:40, :48]).numpy().tobytes()
