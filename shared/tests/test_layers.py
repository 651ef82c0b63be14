"""LayerNorm, RMSNorm, the GELU MLP and SwiGLU against PyTorch's own layers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.nn.layers import MLP, LayerNorm, RMSNorm, SwiGLU, build_mlp, build_norm


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3 + 1


def _assert_same_forward_and_backward(ours, ref, shape):
    """Copy random gains/biases from ``ours`` into ``ref``, then compare outputs and input/weight gradients."""
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn(p.shape))
        for p_ref, p in zip(ref.parameters(), ours.parameters(), strict=True):
            p_ref.copy_(p)
    x = _x(*shape).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    torch.testing.assert_close(ours(x), ref(x_ref), atol=1e-5, rtol=1e-5)
    g = torch.randn(shape)
    ours(x).backward(g)
    ref(x_ref).backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    for p, p_ref in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_equals_nn_layernorm_forward_and_backward(bias):
    _assert_same_forward_and_backward(LayerNorm(16, bias=bias), nn.LayerNorm(16, bias=bias), (2, 5, 16))


def test_rmsnorm_equals_nn_rmsnorm_forward_and_backward():
    _assert_same_forward_and_backward(RMSNorm(16, eps=1e-5), nn.RMSNorm(16, eps=1e-5), (3, 7, 16))


def test_norms_normalise_each_position_independently():
    x = _x(2, 4, 32)
    y = build_norm("layernorm", 32, bias=True)(x)  # weight 1, bias 0 at init
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(2, 4), atol=1e-3, rtol=0)
    r = build_norm("rmsnorm", 32)(x)
    torch.testing.assert_close(r.pow(2).mean(-1), torch.ones(2, 4), atol=1e-3, rtol=0)
    x2 = x.clone()
    x2[:, 0] *= 100  # changing one position leaves the others' outputs alone
    torch.testing.assert_close(build_norm("rmsnorm", 32)(x2)[:, 1:], r[:, 1:])


def test_mlp_is_proj_gelu_fc_with_4x_hidden():
    mlp = MLP(8)
    assert mlp.c_fc.out_features == 32
    x = _x(2, 3, 8)
    ref = F.linear(F.gelu(F.linear(x, mlp.c_fc.weight, mlp.c_fc.bias)), mlp.c_proj.weight, mlp.c_proj.bias)
    torch.testing.assert_close(mlp(x), ref)


def test_swiglu_is_the_gated_silu_and_keeps_the_mlp_parameter_budget():
    s = SwiGLU(96, bias=False)
    x = _x(2, 3, 96)
    ref = s.c_proj(F.silu(x @ s.c_gate.weight.T) * (x @ s.c_fc.weight.T))
    torch.testing.assert_close(s(x), ref)
    n_swiglu = sum(p.numel() for p in s.parameters())
    n_mlp = sum(p.numel() for p in MLP(96, bias=False).parameters())
    assert abs(n_swiglu - n_mlp) / n_mlp < 0.05


def test_unknown_norm_or_mlp_names_the_choices():
    with pytest.raises(ValueError, match="layernorm, rmsnorm"):
        build_norm("batchnorm", 8)
    with pytest.raises(ValueError, match="gelu, swiglu"):
        build_mlp("relu", 8)
