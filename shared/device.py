"""Which device a run uses, waiting for it, and copying batches to it: ``auto`` means the GPU when there is one."""

from __future__ import annotations

import torch

from shared.config import ConfigError


class DeviceError(ConfigError, RuntimeError):
    """A device name that torch does not know, or a CUDA device on a machine without one."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else as given.

    Raises:
        DeviceError: an unknown device name, or a CUDA device asked for where CUDA is not available (a
            ``RuntimeError`` and a project error the command line explains).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device={name!r} is not a device name. Fix: use auto, cpu, cuda or cuda:N (the "
                          "loop.device / train.device key, or --device)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device={name} but CUDA is not available on this machine. Fix: use device=cpu or auto "
                          "(the loop.device / train.device key, or --device)")
    return device


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished its queued work (a no-op on the CPU), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` (on the CPU) on ``device``: through pinned memory and a non-blocking copy on a GPU, so the copy
    overlaps the queued kernels; as a plain ``.to`` elsewhere."""
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
