"""Learned positions and RoPE: norms preserved, scores depending only on the relative position."""

import pytest
import torch

from shared.nn.positions import LearnedPositions, RotaryEmbedding, rotate_half


def test_rope_preserves_the_norm_of_every_head_vector():
    rope = RotaryEmbedding(head_dim=16, block_size=64)
    x = torch.randn(2, 3, 64, 16)
    torch.testing.assert_close(rope(x).norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_only_on_the_relative_position():
    rope = RotaryEmbedding(head_dim=8, block_size=128)
    q, k = torch.randn(8), torch.randn(8)

    def score(m, n):  # q at position m, k at position n
        qs = rope(q.expand(1, 1, 128, 8))[0, 0, m]
        ks = rope(k.expand(1, 1, 128, 8))[0, 0, n]
        return qs @ ks

    for delta in (0, 1, 5, 37):
        scores = torch.stack([score(m + delta, m) for m in (0, 3, 50, 90)])
        torch.testing.assert_close(scores, scores[0].expand(4), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(10, 0), score(11, 0))  # but it does depend on the offset


def test_rope_at_position_zero_is_the_identity_and_offset_shifts_positions():
    rope = RotaryEmbedding(head_dim=4, block_size=16)
    x = torch.randn(1, 1, 16, 4)
    torch.testing.assert_close(rope(x)[..., 0, :], x[..., 0, :])
    torch.testing.assert_close(rope(x[..., 5:9, :], offset=5), rope(x)[..., 5:9, :])


def test_rotate_half_is_a_quarter_turn_of_each_pair():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rotate_half(x).tolist() == [-3.0, -4.0, 1.0, 2.0]
    torch.testing.assert_close(rotate_half(rotate_half(x)), -x)


def test_rope_needs_an_even_head_size_and_a_long_enough_table():
    with pytest.raises(ValueError, match="even head size"):
        RotaryEmbedding(head_dim=7, block_size=8)
    with pytest.raises(ValueError, match="block_size=8"):
        RotaryEmbedding(head_dim=4, block_size=8)(torch.randn(1, 1, 9, 4))


def test_learned_positions_give_one_vector_per_position():
    pos = LearnedPositions(block_size=10, dim=6)
    assert pos(4).shape == (4, 6)
    torch.testing.assert_close(pos(3, offset=2), pos.weight.weight[2:5])
    with pytest.raises(ValueError, match="block_size=10"):
        pos(11)
