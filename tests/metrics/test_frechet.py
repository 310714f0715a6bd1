"""Patch Frechet distance."""

from __future__ import annotations

import pytest

from gigapatch.metrics import patch_fd


def test_fd_identity(ref):
    fd = patch_fd(ref, ref)
    assert fd.mean == pytest.approx(0.0, abs=1e-6)
    assert len(fd.levels) >= 3
