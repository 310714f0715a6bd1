"""Thread-count invariance (diffusion/numerics.py): the denoisers' float32 results are the
same bits whatever ``torch.set_num_threads``.

Without ``blas_invariant`` MKL's GEMM changes its partition (and, for a long inner
dimension, splits the sum) with the thread count; on this 2-core machine the unguarded
ops below differed between 1, 2, 3 and 4 threads by: the PCA's ``C.T @ (C @ q)`` 4e-3, its
basis 5e-5 after QR, the posterior mean's weighted sum ``W @ Y`` (N = 44 408, D = 75)
6e-6 and the posterior mean 7e-5 (at 4 threads),
and whole images by up to 5 grey levels (a different candidate patch won).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from gigapatch.diffusion import numerics
from gigapatch.diffusion.denoiser import posterior_mean_exact
from gigapatch.diffusion.fast import _pca, build_fast_level
from gigapatch.diffusion.patch_index import PatchIndex

#: MKL's partition changes at different counts for different shapes: W @ Y above only at 4
THREADS = (1, 2, 3, 4)


@pytest.fixture
def threads():
    """Restores torch's thread count after a test that changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _at_threads(fn):
    """fn() computed at each count of THREADS (a list of results)."""
    outs = []
    for t in THREADS:
        torch.set_num_threads(t)
        outs.append(fn())
    return outs


def _same_bits(outs):
    return all(torch.equal(a, b) for o in outs[1:] for a, b in zip(outs[0], o))


@pytest.fixture(scope="module")
def big_index(balloons):
    # every 5x5 patch of the 248x186 reference: N = 44 408 entries, D = 75
    img = torch.from_numpy(np.ascontiguousarray(balloons)).permute(2, 0, 1) * 2 - 1
    return PatchIndex.from_image(img.contiguous(), 5, merge_duplicates=False)


def test_pca_is_thread_invariant(big_index, threads):
    outs = _at_threads(lambda: _pca(big_index.patches, 32))
    assert _same_bits(outs)
    # and it is a real basis: orthonormal columns
    basis = outs[0][1]
    assert torch.allclose(basis.T @ basis, torch.eye(32), atol=1e-4)


def test_fast_level_is_thread_invariant(big_index, threads):
    outs = _at_threads(lambda: (lambda lv: (lv.basis, lv.proj, lv.proj_sq, lv.dict_ids,
                                            lv.dictionary.log_counts))(
        build_fast_level(big_index, dictionary_size=512)))
    assert _same_bits(outs)


def test_posterior_mean_is_thread_invariant(big_index, threads):
    # broad posterior (s = 0.8): the dense weighted sum over all 44 408 entries
    g = torch.Generator().manual_seed(0)
    x = 0.6 * big_index.patches[:200] + 0.8 * torch.randn((200, 75), generator=g)
    outs = _at_threads(lambda: (posterior_mean_exact(x, big_index, 0.6, 0.8),))
    assert _same_bits(outs)
    # against a float64 oracle: the guard changes the summation order, not the result
    w = torch.softmax((2 * 0.6 * x.double() @ big_index.patches.double().T
                       - 0.36 * big_index.sq_norms.double()) / (2 * 0.64), 1)
    assert torch.allclose(outs[0][0].double(), w @ big_index.patches.double(), atol=1e-5)


def test_one_blas_thread_nests_and_restores(threads):
    # the guard needs MKL's thread-local setting; torch's x86 CPU wheels link MKL
    assert torch.backends.mkl.is_available() and numerics._MKL_LOCAL is not None
    # torch.set_num_threads itself sets MKL's local count of the calling thread
    torch.set_num_threads(3)
    with numerics.one_blas_thread():
        with numerics.one_blas_thread():
            pass
        assert numerics._MKL_LOCAL(1) == 1  # still one thread after the inner block
    assert numerics._MKL_LOCAL(3) == 3  # the caller's setting is back


def test_row_blocks_cover_every_row_once_on_several_threads(threads):
    # every row written exactly once (kills a lost last block, overlapping blocks), with
    # two blocks running at the same time (kills a loop that never uses a second thread:
    # the barrier needs both), each under one BLAS thread (kills a missing guard)
    torch.set_num_threads(2)
    hits = torch.zeros(103, dtype=torch.int64)
    meet = threading.Barrier(2, timeout=20)
    local = []

    def fn(r0, r1):
        if r0 < 20:  # the first two blocks wait for each other
            meet.wait()
        local.append(numerics._MKL_LOCAL(1))  # the previous local setting: 1 inside
        hits[r0:r1] += 1

    numerics.for_row_blocks(fn, 103, 10)
    assert torch.equal(hits, torch.ones(103, dtype=torch.int64))
    assert local == [1] * 11


def test_row_blocks_run_in_the_callers_inference_mode(threads):
    # torch's modes are per thread: a batch runs under inference mode and its blocks write
    # into tensors made there (kills blocks that drop the caller's mode)
    torch.set_num_threads(2)
    with torch.inference_mode():
        out = torch.zeros(40)
        modes = []

        def fn(r0, r1):
            modes.append(torch.is_inference_mode_enabled())
            out[r0:r1] = 1.0

        numerics.for_row_blocks(fn, 40, 10)
    assert torch.equal(out, torch.ones(40)) and modes == [True] * 4


def test_candidate_steps_are_thread_invariant(big_index, threads):
    # the fast backend's row-block threads: the same bits at every thread count
    from dataclasses import replace

    from gigapatch.config import load_config
    from gigapatch.diffusion.fast import make_fast_denoise
    from gigapatch.pipeline.plan import denoiser_settings

    prm = replace(denoiser_settings(load_config()), broad_steps=0, memory_budget_mb=16)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((3, 100, 100), generator=g) * 0.5  # 2500 queries: several blocks

    def run():
        den = make_fast_denoise(big_index, patch_size=5, rho=0.2, params=prm).bind(seed=2)
        return (den(x, 0.5), den(x * 0.9, 0.3))

    assert _same_bits(_at_threads(run))
