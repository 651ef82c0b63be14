"""Mixed precision: ``torch.autocast`` contexts and the ``GradScaler`` that fp16 needs.

bf16 keeps fp32's exponent range, so gradients do not underflow and no loss scaling is needed.
fp16 has 5 exponent bits: small gradients flush to zero unless the loss is multiplied by a large
factor before backward and the gradients divided by it before the optimizer step, skipping steps
whose gradients overflowed (Micikevicius et al. 2018, https://arxiv.org/abs/1710.03740;
https://docs.pytorch.org/docs/stable/amp.html). Weights and optimizer state stay fp32 throughout.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Raise early if ``precision`` is unknown or unsupported on ``device``.

    Raises:
        ValueError: unknown name, or bf16 on a GPU without bf16 support (pre-Ampere).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown train.precision '{precision}'. Choose one of: {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("train.precision=bf16 needs an Ampere or newer GPU; use fp16 (with loss scaling) or fp32")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward-pass context for ``precision``: a no-op for fp32, ``torch.autocast`` otherwise.

    Under autocast, matmuls and convolutions run in the low-precision dtype while reductions such
    as softmax and cross-entropy stay fp32 (the per-op lists are in the AMP docs above).
    """
    check_precision(precision, device)
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A ``GradScaler`` that is active for fp16 only (disabled, it passes calls straight through)."""
    check_precision(precision, device)
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
