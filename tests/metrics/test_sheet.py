"""The contact sheet."""

from __future__ import annotations

import numpy as np
import pytest

from gigapatch.errors import GigapatchError
from gigapatch.metrics import contact_sheet


def test_contact_sheet(tmp_path, ref, noise):
    out = tmp_path / "sheet.png"
    sheet = contact_sheet(ref, [noise, ref[:48]], height=64, path=out)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[0] > 64  # image plus label strip
    assert out.is_file() and out.stat().st_size > 0
    with pytest.raises(GigapatchError, match="labels"):
        contact_sheet(ref, [noise], labels=["only one"])
