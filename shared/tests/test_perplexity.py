"""Perplexity on a token stream: a uniform model scores exactly V, and the batch size does not matter."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from shared.models.gpt import GPT, GPTConfig
from shared.train.perplexity import stream_loss


class Uniform(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab) + self.dummy


def test_a_uniform_model_has_perplexity_equal_to_the_vocab_size():
    data = np.random.default_rng(0).integers(0, 50, size=1000).astype(np.uint16)
    out = stream_loss(Uniform(50), data, block_size=32)
    assert out["perplexity"] == pytest.approx(50, rel=1e-3)
    assert out["loss"] == pytest.approx(math.log(50), rel=1e-6)
    assert out["tokens"] == (999 // 32) * 32


def test_the_result_is_reproducible_and_independent_of_the_batch_size():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16))
    data = torch.randint(0, 30, (2000,))
    results = [stream_loss(model, data, 16, batch_size=b)["loss"] for b in (1, 7, 64)]
    assert results[0] == pytest.approx(results[1], rel=1e-4)
    assert results[0] == pytest.approx(results[2], rel=1e-4)
    assert stream_loss(model, data, 16, batch_size=7)["loss"] == results[1]
    with pytest.raises(ValueError, match="too few"):
        stream_loss(model, data[:10], 16)
