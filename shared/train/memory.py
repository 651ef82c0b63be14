"""Where a training step's memory goes, counted exactly from the tensors (it works on a CPU, which has no allocator
counter): weights, gradients, optimizer state, and the activations autograd saves for backward. All counts are bytes.

Activations are counted with saved-tensor hooks (https://pytorch.org/docs/stable/autograd.html#hooks-for-saved-tensors):
every tensor the forward saves for backward passes through ``pack``; the storages of those still alive when the forward
ends are counted once each, and storages that belong to parameters or buffers are left out (they are not new memory).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

_Key = tuple[str, int, int]  # (device, storage data_ptr, storage nbytes): one storage


@dataclass
class MemoryBreakdown:
    """Bytes of one training step by where they go (``*_params`` are element counts)."""

    weights: int  # bytes of parameters and buffers (unique storages: tied weights once, uint8 codes at 1 byte each)
    gradients: int  # bytes of .grad tensors after backward
    optimizer: int  # bytes of optimizer.state tensors after one step
    activations: int  # bytes saved for backward during the forward (unique storages, not parameters/buffers)
    trainable_params: int  # elements of parameters with requires_grad
    total_params: int  # elements of all parameters
    peak_allocated: int | None = None  # bytes, torch.cuda.max_memory_allocated over the step on CUDA, else None

    @property
    def total(self) -> int:
        """Bytes of weights + gradients + optimizer state + activations."""
        return self.weights + self.gradients + self.optimizer + self.activations

    def as_gib(self) -> dict[str, float]:
        """Each byte field (and ``total``) in GiB (2**30), for log tables; the param counts and a None peak are left out."""
        d = {k: v for k, v in asdict(self).items() if k not in ("trainable_params", "total_params") and v is not None}
        return {k: v / 2**30 for k, v in {**d, "total": self.total}.items()}


def _leaves(t: torch.Tensor) -> Iterator[torch.Tensor]:
    """The plain tensors that hold ``t``'s bytes: itself, or a wrapper subclass's inner tensors (recursively)."""
    if hasattr(t, "__tensor_flatten__"):  # a traceable wrapper subclass has no storage of its own
        names, _ = t.__tensor_flatten__()
        for n in names:
            inner = getattr(t, n)
            if isinstance(inner, torch.Tensor):  # a DTensor also flattens to its device mesh: not memory
                yield from _leaves(inner)
    elif t.device.type != "meta":
        yield t


def _storages(t: torch.Tensor) -> dict[_Key, int]:
    return {(str(x.device), s.data_ptr(), s.nbytes()): s.nbytes() for x in _leaves(t) for s in [x.untyped_storage()]}


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of the storage(s) behind ``t`` (element_size * numel of the storage, so a view counts its whole base and
    uint8-packed quantised codes count 1 byte per element); 0 on the meta device."""
    return sum(_storages(t).values())


def _unique_bytes(tensors: Iterable[torch.Tensor | None], skip: Iterable[_Key] = ()) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared storages once), leaving out those in ``skip``."""
    seen: dict[_Key, int] = {}
    for t in tensors:
        if t is not None:
            seen.update(_storages(t))
    skip = set(skip)
    return sum(n for k, n in seen.items() if k not in skip)


def measure_step_memory(model: nn.Module, optimizer: torch.optim.Optimizer,
                        loss_fn: Callable[[], torch.Tensor]) -> MemoryBreakdown:
    """Run ONE real training step and count where its memory goes, in bytes.

    It takes a real ``optimizer.step()``, so the model's weights change: callers measure on a throwaway copy or
    accept the step as their first. Order: ``zero_grad(set_to_none=True)``; ``loss = loss_fn()`` under saved-tensor
    hooks (activations); ``loss.backward()`` (gradients); ``optimizer.step()`` (optimizer state: every tensor in
    ``optimizer.state``, deduplicated); ``zero_grad(set_to_none=True)`` again, so the grads are released. On CUDA
    ``peak_allocated`` is ``torch.cuda.max_memory_allocated`` over the step (peak stats are reset first).
    """
    params = list(model.parameters())
    owned = [*params, *model.buffers()]
    weights = _unique_bytes(owned)
    cuda = [t.device for t in owned if t.device.type == "cuda"]
    if cuda:
        torch.cuda.synchronize(cuda[0])
        torch.cuda.reset_peak_memory_stats(cuda[0])
    optimizer.zero_grad(set_to_none=True)
    saved: list[weakref.ref[torch.Tensor]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(weakref.ref(t))  # weak: a tensor the graph drops (a discarded branch) is not counted
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    activations = _unique_bytes((r() for r in saved), skip=(k for t in owned for k in _storages(t)))
    saved.clear()
    loss.backward()
    gradients = _unique_bytes(p.grad for p in params)
    optimizer.step()
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    opt_bytes = _unique_bytes(state)
    optimizer.zero_grad(set_to_none=True)
    peak = None
    if cuda:
        torch.cuda.synchronize(cuda[0])
        peak = torch.cuda.max_memory_allocated(cuda[0])
    return MemoryBreakdown(weights, gradients, opt_bytes, activations,
                           trainable_params=sum(p.numel() for p in params if p.requires_grad),
                           total_params=sum(p.numel() for p in params), peak_allocated=peak)


def local_bytes(t: torch.Tensor | None) -> int:
    """Bytes of this rank's part of ``t``: ``numel x element_size`` of a ``DTensor``'s local shard
    (``DTensor.to_local()``, FSDP2's padding left out), of the tensor itself otherwise; 0 for None."""
    if t is None:
        return 0
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


@dataclass
class ShardBytes:
    """Bytes one rank holds for training state, counted from its local shards (``params`` etc. are bytes)."""

    params: int  # parameters (a sharded parameter: its local shard only)
    grads: int  # .grad tensors (call between backward and zero_grad)
    optimizer: int  # every tensor in optimizer.state (AdamW: exp_avg, exp_avg_sq; the step counters too)
    n_params: int  # elements of the whole (global) model: Ψ of the formulas

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer


def shard_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> ShardBytes:
    """What this rank holds for ``model`` and ``optimizer`` now, in bytes, from the local shards
    (:func:`local_bytes`): the exact count the ZeRO/FSDP formulas predict (16Ψ for fp32 AdamW under DDP, ~16Ψ/N
    under FSDP2). Tied parameters count once (``model.parameters()`` yields a shared parameter once)."""
    params = list(model.parameters())
    state = [v for s in (optimizer.state.values() if optimizer is not None else ()) for v in s.values()
             if isinstance(v, torch.Tensor)]
    return ShardBytes(params=sum(local_bytes(p) for p in params), grads=sum(local_bytes(p.grad) for p in params),
                      optimizer=sum(local_bytes(t) for t in state), n_params=sum(p.numel() for p in params))
