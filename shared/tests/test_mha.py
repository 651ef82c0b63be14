"""Multi-head attention: shapes, head split/merge, the n_embd % n_head error, causality, both backends."""

import pytest
import torch
import torch.nn.functional as F

from shared.nn.attention import padding_mask
from shared.nn.mha import CausalSelfAttention, merge_heads, split_heads


@pytest.mark.parametrize(("b", "t"), [(1, 1), (2, 7), (3, 16)])
def test_mha_output_shape_equals_input_shape(b, t):
    mha = CausalSelfAttention(n_embd=24, n_head=3)
    assert mha(torch.randn(b, t, 24)).shape == (b, t, 24)


def test_head_split_and_merge_are_exact_inverses():
    x = torch.randn(2, 5, 12)
    h = split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    assert torch.equal(merge_heads(h), x)
    assert torch.equal(h[:, 1], x[..., 4:8])  # head 1 owns channels 4..7


def test_n_embd_not_divisible_by_n_head_is_a_clear_error():
    with pytest.raises(ValueError, match=r"n_embd=10 is not divisible by model.n_head=3.*1, 2, 5, 10"):
        CausalSelfAttention(n_embd=10, n_head=3)


def test_mha_equals_torch_sdpa_with_the_same_projections():
    torch.manual_seed(0)
    mha = CausalSelfAttention(n_embd=16, n_head=4)
    x = torch.randn(2, 9, 16)
    q, k, v = (split_heads(t, 4) for t in mha.c_attn(x).split(16, dim=-1))
    ref = mha.c_proj(merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True)))
    torch.testing.assert_close(mha(x), ref, atol=1e-5, rtol=1e-5)
    mha.backend = "torch"
    torch.testing.assert_close(mha(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["manual", "torch"])
def test_future_tokens_never_change_the_past(backend):
    mha = CausalSelfAttention(n_embd=16, n_head=2, backend=backend)
    x = torch.randn(1, 10, 16)
    x2 = x.clone()
    x2[:, 6:] = torch.randn(1, 4, 16)
    torch.testing.assert_close(mha(x)[:, :6], mha(x2)[:, :6], atol=0, rtol=0)
    assert not torch.allclose(mha(x)[:, 6:], mha(x2)[:, 6:])


def test_padded_keys_are_ignored():
    mha = CausalSelfAttention(n_embd=8, n_head=2)
    x = torch.randn(2, 6, 8)
    mask = padding_mask(torch.tensor([6, 3]), 6)
    x2 = x.clone()
    x2[1, 3:] = 99.0  # padding content must not matter to the real tokens
    torch.testing.assert_close(mha(x, mask)[1, :3], mha(x2, mask)[1, :3], atol=1e-6, rtol=0)
    torch.testing.assert_close(mha(x, mask)[1, :3], mha(x[1:, :3])[0], atol=1e-6, rtol=0)
