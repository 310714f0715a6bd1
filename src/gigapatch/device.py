"""Where to compute: one rule for ``--device`` / ``device=`` everywhere (generate, metrics)."""

from __future__ import annotations

import os

import torch

from .errors import GigapatchError

__all__ = ["resolve_device", "device_memory_bytes"]


def resolve_device(device: str | torch.device | None = "auto", *,
                   option: str = "device=") -> torch.device:
    """A :class:`torch.device` from ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a device.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` (the default) is the first CUDA device when one is visible, else the CPU.
        ``None`` is the CPU (the metrics' default). Names are case-insensitive.
    option : str
        How messages name the option: ``"device="`` (Python API, the default) or
        ``"--device"`` (the CLI).

    Raises
    ------
    GigapatchError
        CUDA asked for but not visible, or a name that is not auto, cpu or cuda[:N].
    """
    from .inputs import shown

    if device is None:
        return torch.device("cpu")
    cpu = shown(option, "cpu") if option.startswith("-") else f"{option.rstrip('=')}='cpu'"
    if isinstance(device, torch.device):
        dev = device
    else:
        name = str(device).strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = None
        if name == "cpu" or name.startswith("cuda"):
            try:
                dev = torch.device(name)
            except (RuntimeError, ValueError):
                dev = None
        if dev is None:
            raise GigapatchError(f"{shown(option, device)}: expected auto, cpu or cuda[:N]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GigapatchError(f"{shown(option, device)}: no CUDA device is visible; use {cpu} "
                             "or install the CUDA build of torch (see README)")
    if dev.type not in ("cpu", "cuda"):
        raise GigapatchError(f"{shown(option, device)}: expected auto, cpu or cuda[:N]")
    return dev


def device_memory_bytes(device: str | torch.device) -> int | None:
    """Total memory of a device in bytes: the GPU's for CUDA, the machine's RAM for the CPU
    (``None`` where the system does not say)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(dev).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None
