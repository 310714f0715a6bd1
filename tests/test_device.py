"""gigapatch.device.resolve_device: the one rule for --device / device= (CPU-only checks)."""

from __future__ import annotations

import pytest
import torch

from gigapatch.device import resolve_device
from gigapatch.errors import GigapatchError


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_auto_and_defaults(no_cuda):
    assert resolve_device() == torch.device("cpu")  # "auto" without CUDA
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")  # the metrics' default
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_prefers_cuda(fake_cuda):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(None) == torch.device("cpu")  # None never means the GPU


@pytest.mark.parametrize("name", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_without_cuda(no_cuda, name):
    with pytest.raises(GigapatchError, match="no CUDA device is visible; use --device cpu"):
        resolve_device(name, option="--device")
    with pytest.raises(GigapatchError, match="no CUDA device is visible; use device='cpu'"):
        resolve_device(name)  # the API's words by default


# ids spelled out: an id "gpu" would be taken for the gpu marker and skipped on the CPU
@pytest.mark.parametrize("name", ["gpu", "mps", "cuda:x", ""],
                         ids=["g-p-u", "mps", "cuda-x", "empty"])
def test_unknown_names(no_cuda, name):
    with pytest.raises(GigapatchError, match=r"expected auto, cpu or cuda\[:N\]"):
        resolve_device(name)
