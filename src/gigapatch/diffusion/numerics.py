"""Thread-count-invariant linear algebra on the CPU.

MKL, torch's BLAS on x86 CPUs, picks its partition of a GEMM by the number of threads it
may use: with a long inner dimension (``W @ Y`` over 40 000 patches, ``C.T @ C`` in the
PCA) it splits the sum itself across threads, and for other shapes the per-thread blocks
put different rows through different micro-kernels. Either way the float32 result of
``a @ b`` changes in its last bits with ``torch.set_num_threads`` (measured: up to 2e-2 on
the PCA's ``C.T @ (C @ q)``, 6e-6 on the posterior mean's weighted sum, see
tests/diffusion/test_numerics.py). Those bits then move a top-k choice of candidates
somewhere in a large image, and one patch wins instead of another: a one-thread dask
worker and a two-thread local run gave different images.

``blas_invariant`` runs the wrapped computation with MKL restricted to one thread *on the
calling thread only* (``mkl_set_num_threads_local``, restored on exit): each GEMM then
has the single-threaded summation order whatever ``torch.set_num_threads``, the worker's
thread count or the task order. Nothing global is changed; torch's own kernels (unfold,
index_add, reductions over many outputs, softmax, topk) already compute each output with
a fixed order and keep their threads. On CUDA, or a torch built without MKL, it does
nothing.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
import ctypes
import functools
import glob
import os
from typing import Callable, Iterator, TypeVar

import torch

__all__ = ["one_blas_thread", "blas_invariant", "for_row_blocks"]

F = TypeVar("F", bound=Callable)


def _find_mkl_local() -> Callable[[int], int] | None:
    """``MKL_Set_Num_Threads_Local`` of the MKL linked into torch, or None."""
    if not torch.backends.mkl.is_available():
        return None
    libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
    for path in [None, *sorted(glob.glob(os.path.join(libdir, "*torch_cpu*")))]:
        try:
            fn = ctypes.CDLL(path).MKL_Set_Num_Threads_Local
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int]
        return fn
    return None


_MKL_LOCAL = _find_mkl_local()


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block, MKL calls made by this thread run on one thread (nestable)."""
    if _MKL_LOCAL is None:
        yield
        return
    previous = _MKL_LOCAL(1)  # 0 = "no local setting": restoring it returns to the global
    try:
        yield
    finally:
        _MKL_LOCAL(previous)


def blas_invariant(fn: F) -> F:
    """Decorator: run ``fn`` under :func:`one_blas_thread`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_blas_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def for_row_blocks(fn: Callable[[int, int], None], n: int, rows: int, *,
                   device: torch.device | str = "cpu") -> None:
    """Call ``fn(r0, r1)`` for the row blocks ``[r0, r1)`` of ``range(n)``, ``rows`` each.

    On the CPU the blocks run on up to ``torch.get_num_threads()`` Python threads, each
    block under :func:`one_blas_thread`: the blocks (and so every row's arithmetic) are
    the same whatever the thread count, only who computes them changes. For per-row
    computations whose blocks write disjoint outputs (``fn`` must not depend on the
    order). Since every GEMM runs single-threaded for invariance, this is how the fast
    backend's candidate steps use more than one core.
    """
    starts = list(range(0, n, max(1, rows)))
    workers = min(len(starts), torch.get_num_threads())
    if workers <= 1 or torch.device(device).type != "cpu":
        for r0 in starts:
            fn(r0, min(n, r0 + rows))
        return

    # torch's inference and grad modes are per thread: the blocks run in the caller's
    # (a block writing into an inference tensor outside inference mode is refused)
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def one(r0: int) -> None:
        with one_blas_thread(), torch.inference_mode(inference), torch.set_grad_enabled(grad):
            fn(r0, min(n, r0 + rows))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for f in [pool.submit(one, r0) for r0 in starts]:
            f.result()
