"""Nearest-neighbour patch distances (coherence, completeness)."""

from __future__ import annotations

from gigapatch.metrics import nn_patch_distances


def test_nn_of_reference_to_itself_is_zero(ref):
    nn = nn_patch_distances(ref, ref, max_queries=512)
    assert nn.coherence == 0.0 and nn.completeness == 0.0
