"""The run store's 2x reduction of the output pyramid."""

import numpy as np

from gigapatch.storage.runstore import reduce2_box


def test_reduce2_box_odd_edges():
    a = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    r = reduce2_box(a)
    assert r.shape == (2, 2, 3)
    assert r[0, 0, 0] == np.rint((0 + 1 + 5 + 6) / 4)
    assert r[0, 1, 2] == a[0, 2, 4]  # corner pixel averaged with itself
