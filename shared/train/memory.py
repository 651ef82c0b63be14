"""Where a training step's memory goes, counted exactly from the tensors (it works on a CPU, which has no allocator
counter): weights, gradients, optimizer state, and the activations autograd saves for backward.

Activations are counted with saved-tensor hooks (https://pytorch.org/docs/stable/autograd.html#hooks-for-saved-tensors):
every tensor the forward saves for backward passes through ``pack``, which records its storage once; storages that
belong to parameters or buffers are not new memory and are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class MemoryBreakdown:
    """Bytes of one training step by where they go (all ints, in bytes)."""

    weights: int  # parameters and buffers (unique storages: tied weights once; NF4 codes at 1 byte per uint8)
    gradients: int  # .grad tensors after backward
    optimizer: int  # optimizer.state tensors after one step
    activations: int  # tensors saved for backward during the forward (unique storages, not parameters/buffers)
    trainable_params: int
    total_params: int
    peak_allocated: int | None = None  # torch.cuda.max_memory_allocated over the step on CUDA, else None

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def as_gib(self) -> dict[str, float]:
        """Each byte field in GiB (2**30)."""
        return {k: v / 2**30 for k, v in asdict(self).items() if k not in ("trainable_params", "total_params")
                and v is not None}


def _key(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def tensor_bytes(tensors: Iterable[torch.Tensor], skip: set[tuple[int, int]] | None = None) -> int:
    """Bytes of the unique storages behind ``tensors`` (a view and its base count once), minus ``skip``."""
    seen = set(skip or ())
    total = 0
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        k = _key(t)
        if k not in seen:
            seen.add(k)
            total += k[1]
    return total


def measure_step_memory(model: nn.Module, optimizer: torch.optim.Optimizer,
                        loss_fn: Callable[[], torch.Tensor]) -> MemoryBreakdown:
    """Run ONE real training step (forward, backward, ``optimizer.step()``) and count its memory in bytes.

    The step changes the model (measure on a throwaway copy, or count it as the first step). Gradients are counted
    after backward, optimizer state after the step; the grads are released afterwards (``set_to_none``).
    """
    owned = {_key(t) for t in [*model.parameters(), *model.buffers()]}
    weights = tensor_bytes([*model.parameters(), *model.buffers()])
    saved: list[torch.Tensor] = []
    cuda = next(model.parameters()).device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    optimizer.zero_grad(set_to_none=True)

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    activations = tensor_bytes(saved, owned)
    saved.clear()
    loss.backward()
    params = list(model.parameters())
    gradients = tensor_bytes([p.grad for p in params if p.grad is not None])
    optimizer.step()
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    opt_bytes = tensor_bytes(state)
    optimizer.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return MemoryBreakdown(weights, gradients, opt_bytes, activations,
                           sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params), peak)
