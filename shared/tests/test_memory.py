"""The step-memory counter on models whose byte counts are worked out by hand (fp32 = 4 bytes per element)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shared.train.memory import MemoryBreakdown, measure_step_memory, tensor_bytes

F32 = 4  # bytes per fp32 element


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))


def test_mlp_adamw_bytes_by_hand():
    model, x = _mlp(), torch.randn(3, 8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    m = measure_step_memory(model, opt, lambda: model(x).sum())
    n_params = 8 * 4 + 4 + 4 * 2 + 2  # W1 (4x8) + b1 + W2 (2x4) + b2 = 46 elements
    w = n_params * F32  # 184 bytes
    assert m.weights == w
    assert m.gradients == w  # every parameter trainable: one fp32 .grad of the same shape each
    # AdamW keeps exp_avg and exp_avg_sq (each the parameter's shape) and a `step` per parameter. The rule for `step`
    # (torch 2.x, CPU, not capturable/fused) is a 0-dim fp32 tensor: 1 element * 4 bytes; checked here on the state.
    steps = [s["step"] for s in opt.state.values()]
    assert len(steps) == 4
    assert all(t.dim() == 0 and t.dtype == torch.float32 for t in steps)
    assert m.optimizer == 2 * w + 4 * (1 * F32)  # 368 + 16 = 384 bytes
    # Saved for backward (seen empirically with a pack hook): Linear1 = addmm(b1, x, W1.t()) saves x for W1's grad
    # (and not W1.t(), since x needs no grad); ReLU saves its output h (3x4); Linear2 saves its input h again (same
    # storage, counted once) and W2.t() (a view of the parameter: not new memory); sum() saves no tensor.
    assert m.activations == 3 * 8 * F32 + 3 * 4 * F32  # x 96 + h 48 = 144 bytes
    assert m.trainable_params == m.total_params == n_params
    assert m.peak_allocated is None  # CPU: no allocator counter
    assert m.total == w + w + (2 * w + 16) + 144
    assert all(p.grad is None for p in model.parameters())  # grads released after the step


def test_the_step_is_real():
    model, x = _mlp(), torch.randn(3, 8)
    before = [p.detach().clone() for p in model.parameters()]
    measure_step_memory(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda: model(x).sum())
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_sgd_without_momentum_keeps_no_state():
    model, x = _mlp(), torch.randn(3, 8)
    m = measure_step_memory(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda: model(x).sum())
    assert m.optimizer == 0


def test_frozen_first_layer():
    model, x = _mlp(), torch.randn(3, 8)
    model[0].requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    m = measure_step_memory(model, opt, lambda: model(x).sum())
    assert m.weights == (8 * 4 + 4 + 4 * 2 + 2) * F32  # frozen weights still take memory
    assert m.gradients == (4 * 2 + 2) * F32  # only W2 and b2 get a .grad: 40 bytes
    assert m.trainable_params == 4 * 2 + 2
    assert m.total_params == 46
    assert m.optimizer == 2 * (4 * 2 + 2) * F32 + 2 * F32  # moments of W2, b2 + two 0-dim steps = 88 bytes
    # Nothing before Linear2 needs grad, so Linear1 and ReLU record no graph; Linear2 saves its input h (3x4).
    assert m.activations == 3 * 4 * F32


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 5, bias=False)
        self.head.weight = self.emb.weight  # one (5x4) Parameter in two modules
        self.register_buffer("alias", self.emb.weight.detach()[:2])  # a buffer viewing the same storage

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids))


def test_tied_weights_counted_once():
    model = _Tied()
    m = measure_step_memory(model, torch.optim.SGD(model.parameters(), lr=0.1),
                            lambda: model(torch.tensor([0, 3])).sum())
    assert m.weights == 5 * 4 * F32  # 80 bytes: the parameter and the aliasing buffer are one storage
    assert m.gradients == 5 * 4 * F32  # one .grad for the tied parameter
    assert m.total_params == 5 * 4


def test_uint8_buffer_counts_one_byte_per_element():
    model = nn.Linear(4, 2)
    model.register_buffer("codes", torch.zeros(10, dtype=torch.uint8))  # e.g. packed 4-bit codes
    m = measure_step_memory(model, torch.optim.SGD(model.parameters(), lr=0.1),
                            lambda: model(torch.randn(1, 4)).sum())
    assert m.weights == (4 * 2 + 2) * F32 + 10 * 1  # 40 + 10 bytes
    assert tensor_bytes(model.codes) == 10


def test_two_saved_views_of_one_storage_count_once():
    p = nn.Parameter(torch.randn(3, 4))
    holder = nn.Module()
    holder.p = p

    def loss_fn() -> torch.Tensor:
        y = p * 2  # (3, 4): mul by a Python scalar saves no tensor
        return (y[:, :3] ** 2).sum() + (y[:, 1:] ** 2).sum()  # pow saves its input: two overlapping (3, 3) views

    m = measure_step_memory(holder, torch.optim.SGD([p], lr=0.1), loss_fn)
    assert m.activations == 3 * 4 * F32  # y's storage once: 48 bytes (not 2 * 48, nor 2 * 36 by view size)


def test_saved_tensors_of_a_discarded_branch_are_not_counted():
    p = nn.Parameter(torch.randn(3, 4))
    holder = nn.Module()
    holder.p = p

    def loss_fn() -> torch.Tensor:
        _unused = (p * 2) ** 2  # pow saves p * 2, freed when this branch is dropped on return
        return p.sum()  # sum saves no tensor

    assert measure_step_memory(holder, torch.optim.SGD([p], lr=0.1), loss_fn).activations == 0


def test_tensor_bytes():
    t = torch.zeros(4, 6)
    assert tensor_bytes(t) == 4 * 6 * F32
    assert tensor_bytes(t[:1]) == 4 * 6 * F32  # a view holds its whole base storage
    assert tensor_bytes(torch.zeros(3, dtype=torch.bfloat16)) == 3 * 2
    assert tensor_bytes(torch.empty(100, device="meta")) == 0


def test_tensor_bytes_of_a_wrapper_subclass_counts_its_inner_tensors():
    two_tensor = pytest.importorskip("torch.testing._internal.two_tensor")  # torch's own test wrapper subclass
    t = two_tensor.TwoTensor(torch.zeros(3), torch.ones(3))
    assert t.untyped_storage().nbytes() == 3 * F32  # the wrapper's own storage reports one tensor's worth...
    assert tensor_bytes(t) == 2 * 3 * F32  # ...but it holds two (3,) fp32 tensors: 24 bytes


def test_as_gib():
    m = MemoryBreakdown(2**30, 2**29, 0, 2**31, trainable_params=7, total_params=9)
    assert m.as_gib() == {"weights": 1.0, "gradients": 0.5, "optimizer": 0.0, "activations": 2.0, "total": 3.5}


@pytest.mark.gpu
def test_peak_allocated_on_cuda():
    model, x = _mlp().cuda(), torch.randn(3, 8, device="cuda")
    m = measure_step_memory(model, torch.optim.AdamW(model.parameters()), lambda: model(x).sum())
    assert m.activations == 144
    assert m.optimizer == 384
    assert m.peak_allocated is not None
    assert m.peak_allocated >= m.weights + m.gradients
