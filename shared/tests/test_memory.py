"""The memory counter on models whose byte counts are known by hand."""

from __future__ import annotations

import torch
from torch import nn

from shared.train.memory import measure_step_memory, tensor_bytes


def test_mlp_bytes_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(3, 8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    m = measure_step_memory(model, opt, lambda: model(x).sum())
    w = (8 * 4 + 4 + 4 * 2 + 2) * 4  # fp32 parameters
    assert m.weights == w
    assert m.gradients == w
    # AdamW: exp_avg and exp_avg_sq per parameter, plus a 0-dim fp32 `step` per parameter (4 tensors)
    assert m.optimizer == 2 * w + 4 * 4
    # saved for backward: the input x (3x8) for the 1st weight's grad, ReLU's output (3x4) which is also the 2nd
    # Linear's input (one storage, counted once); the weights themselves are parameters, not new memory
    assert m.activations == 3 * 8 * 4 + 3 * 4 * 4
    assert m.trainable_params == m.total_params == w // 4


def test_frozen_sgd_tied_and_uint8():
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 4, bias=False))
    model[0].requires_grad_(False)
    model.register_buffer("codes", torch.zeros(10, dtype=torch.uint8))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    m = measure_step_memory(model, opt, lambda: model(torch.randn(2, 8)).sum())
    assert m.gradients == 16 * 4  # only the trainable 4x4
    assert m.optimizer == 0  # plain SGD keeps no state
    assert m.weights == (8 * 4 + 4 + 16) * 4 + 10  # the uint8 buffer at 1 byte per element
    assert m.trainable_params == 16
    tied = nn.Linear(4, 4)
    assert tensor_bytes([tied.weight, tied.weight, tied.weight[:2]]) == 16 * 4  # one storage, counted once
