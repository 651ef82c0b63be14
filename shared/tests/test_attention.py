"""Hand-written attention against torch's reference: values, gradients, masks, causality, stable softmax."""

import pytest
import torch
import torch.nn.functional as F

from shared.nn.attention import causal_mask, padding_mask, scaled_dot_product_attention, sdpa, stable_softmax

SHAPES = [(2, 3, 5, 8), (1, 1, 1, 4), (1, 4, 7, 16), (3, 2, 13, 8)]  # (B, H, T, d): T=1, odd T, B=1


def _qkv(b, h, t, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g, requires_grad=True) for _ in range(3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_forward_and_gradients_equal_torch_sdpa(shape, causal):
    q, k, v = _qkv(*shape)
    mine = scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert mine.shape == shape
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(mine)
    grads_mine = torch.autograd.grad(mine, (q, k, v), g)
    grads_ref = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads_mine, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_padding_mask_and_causal_together_equal_torch():
    q, k, v = _qkv(3, 2, 6, 8)
    lengths = torch.tensor([6, 4, 1])
    pad = padding_mask(lengths, 6)  # (B, 1, 1, T)
    assert pad.shape == (3, 1, 1, 6)
    mine = sdpa(q, k, v, mask=pad, is_causal=True, backend="manual")
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=pad & causal_mask(6))
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sdpa(q, k, v, mask=pad, is_causal=True, backend="torch"), ref, atol=1e-6, rtol=1e-6)
    additive = torch.zeros(3, 1, 1, 6).masked_fill(~pad, float("-inf"))
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, additive, is_causal=True), ref, atol=1e-5, rtol=1e-5)


def test_changing_future_tokens_never_changes_earlier_outputs():
    q, k, v = (t.detach() for t in _qkv(2, 2, 9, 8))
    out = scaled_dot_product_attention(q, k, v, is_causal=True)
    for t in range(9):
        k2, v2, q2 = k.clone(), v.clone(), q.clone()
        k2[:, :, t + 1 :] += 5.0
        v2[:, :, t + 1 :] -= 3.0
        q2[:, :, t + 1 :] *= 2.0
        out2 = scaled_dot_product_attention(q2, k2, v2, is_causal=True)
        torch.testing.assert_close(out2[:, :, : t + 1], out[:, :, : t + 1], atol=0, rtol=0)


def test_stable_softmax_handles_huge_scores_like_torch():
    x = torch.tensor([[1e4, -1e4, 0.0], [1e4, 1e4 - 1, 1e4 - 2], [-1e4, -1e4, -1e4]])
    out = stable_softmax(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.softmax(x, dim=-1), atol=1e-7, rtol=1e-6)
    naive = torch.exp(x) / torch.exp(x).sum(-1, keepdim=True)
    assert not torch.isfinite(naive).all()  # why the max is subtracted


def test_causal_mask_with_a_cache_aligns_queries_at_the_end_and_torch_backend_agrees():
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    q = torch.randn(1, 1, 2, 4)
    k, v = torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    torch.testing.assert_close(sdpa(q, k, v, is_causal=True, backend="torch"),
                               sdpa(q, k, v, is_causal=True, backend="manual"), atol=1e-6, rtol=1e-5)


def test_bad_shapes_and_backends_are_clear_errors():
    q, k, v = (t.detach() for t in _qkv(1, 1, 3, 4))
    with pytest.raises(ValueError, match="attention shapes do not fit"):
        scaled_dot_product_attention(q, k[..., :2], v)
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        sdpa(q, k, v, backend="flash")
