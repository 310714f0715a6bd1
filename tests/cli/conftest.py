"""The CLI tests' reference image, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from gigapatch.storage import write_image


@pytest.fixture(scope="package")
def ref24(balloons, tmp_path_factory) -> Path:
    """A 24x24 RGB crop of a real reference: enough texture, fast to sample."""
    path = tmp_path_factory.mktemp("ref") / "ref24.png"
    write_image(path, balloons[40:64, 60:84])
    return path
