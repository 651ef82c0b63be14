"""The GPT: shapes, tied weights, gradients to every parameter in each variant, causality, generate()."""

import math

import pytest
import torch
import torch.nn.functional as F

from shared.models.gpt import GPT, GPTConfig
from shared.testing import DEBUG_GPT

TINY = {"vocab_size": 11, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}  # the debug model


def _gpt(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **kw}))


def _ids(b=3, t=16, seed=0):
    return torch.randint(0, TINY["vocab_size"], (b, t), generator=torch.Generator().manual_seed(seed))


def _loss(logits, y):
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def test_logits_shape_and_initial_loss_near_ln_vocab():
    logits = _gpt()(_ids(), _ids(seed=1).bool())  # the second argument is the attention mask (all ones here)
    assert logits.shape == (3, 16, 11)
    assert abs(_loss(logits, _ids(seed=1)).item() - math.log(11)) < 0.1
    assert _gpt()(_ids(t=1)).shape == (3, 1, 11)


@pytest.mark.parametrize("variant", [{}, {"norm": "rmsnorm", "pos": "rope", "mlp": "swiglu"}], ids=["learned", "rope"])
def test_explicit_positions_and_the_attention_mask(variant):
    m = _gpt(**variant).eval()
    x = _ids(b=2, t=8)
    full = m(x)
    torch.testing.assert_close(m(x, position_ids=torch.arange(8)), full, atol=0, rtol=0)
    # a left-padded row: 3 pad tokens, masked, and positions that start at 0 on the first real token
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), x], dim=1)
    mask = torch.cat([torch.zeros(2, 3), torch.ones(2, 8)], dim=1)
    pos = (mask.cumsum(1) - 1).clamp_min(0).long()
    torch.testing.assert_close(m(padded, mask, pos)[:, 3:], full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="block_size=16"):
        m(x, position_ids=torch.arange(9, 17))


def test_d_ff_sets_the_mlp_width():
    assert _gpt(d_ff=24).blocks[0].mlp.c_fc.weight.shape == (24, 16)
    assert _gpt(mlp="swiglu", d_ff=40).blocks[0].mlp.c_gate.weight.shape == (40, 16)
    assert _gpt(mlp="swiglu").blocks[0].mlp.c_gate.weight.shape == (64, 16)  # 8C/3 rounded up to 64


def test_lm_head_is_tied_to_the_token_embedding():
    m = _gpt()
    assert m.lm_head.weight is m.wte.weight
    untied = _gpt(tie_weights=False)
    total = sum(p.numel() for p in m.parameters())
    assert sum(p.numel() for p in untied.parameters()) == total + 11 * 16
    assert m.num_params() == total - 11 * 16 - 16 * 16  # minus token and position embeddings


VARIANTS = [
    {}, {"norm_placement": "post"}, {"norm": "rmsnorm", "pos": "rope", "mlp": "swiglu", "bias": False},
    {"attn_backend": "torch"},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=["gpt2", "post-ln", "llama-like", "sdpa"])
def test_gradients_reach_every_parameter(variant):
    m = _gpt(**variant)
    _loss(m(_ids()), _ids(seed=1)).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


@pytest.mark.parametrize("variant", VARIANTS, ids=["gpt2", "post-ln", "llama-like", "sdpa"])
def test_a_later_token_never_changes_earlier_logits(variant):
    m = _gpt(**variant).eval()
    x = _ids(b=1)
    x2 = x.clone()
    x2[0, 9] = (x[0, 9] + 1) % 11
    a, b = m(x), m(x2)  # (1, T, V)
    torch.testing.assert_close(a[:, :9], b[:, :9], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_manual_and_torch_backends_give_the_same_loss_and_gradients():
    m = _gpt()
    x, y = _ids(), _ids(seed=1)
    loss_manual = _loss(m(x), y)
    g_manual = torch.autograd.grad(loss_manual, m.parameters())
    m.set_attn_backend("torch")
    loss_torch = _loss(m(x), y)
    g_torch = torch.autograd.grad(loss_torch, m.parameters())
    torch.testing.assert_close(loss_manual, loss_torch, atol=1e-5, rtol=0)
    for a, b in zip(g_manual, g_torch, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_few_adamw_steps_fit_one_batch():
    m = _gpt()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    x, y = _ids(), _ids(seed=1)
    losses = []
    for _ in range(30):
        loss = _loss(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_generate_appends_tokens_greedy_is_deterministic_and_top1_is_greedy():
    m = _gpt()
    prompt = _ids(b=2, t=3)
    out = m.generate(prompt, 20)  # longer than block_size: the context is cropped
    assert out.shape == (2, 23)
    assert torch.equal(out[:, :3], prompt)
    assert out.max() < 11
    greedy = m.generate(prompt, 5, temperature=0)
    assert torch.equal(greedy, m.generate(prompt, 5, temperature=0))
    top1 = m.generate(prompt, 5, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(top1, greedy)
    g1, g2 = (m.generate(prompt, 8, generator=torch.Generator().manual_seed(s)) for s in (1, 1))
    assert torch.equal(g1, g2)
    assert m.training  # generate restores the mode


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match="not divisible by model.n_head"):
        _gpt(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="model.pos 'sinusoid'"):
        _gpt(pos="sinusoid")
    with pytest.raises(ValueError, match="block_size=16"):
        _gpt()(_ids(t=17))
    with pytest.raises(ValueError, match="temperature"):
        _gpt().generate(_ids(t=2), 1, temperature=-1)


def test_flops_per_token_is_6n_plus_the_attention_term():
    m = _gpt()
    c = m.cfg
    per_layer = 3 * 16 * 16 + 16 * 16 + 2 * 4 * 16 * 16  # c_attn, c_proj, the MLP's two matmuls (d_ff = 4C)
    n = c.n_layer * per_layer + 11 * 16  # + the tied LM head (V x C); no biases, norms or position table
    assert m.flops_per_token() == 6 * n + 12 * 2 * 2 * 8 * 16  # L=2, H=2, Q=16/2, T=16


@pytest.mark.parametrize("tie", [True, False])
def test_flops_per_token_equals_torch_flop_counter_on_a_training_step(tie):
    """One forward + backward of B x T tokens, counted by ``torch.utils.flop_counter`` (every matmul, the T x T
    attention ones included): exactly 6 N' + 12 L H Q T per token with the hand-written attention."""
    from torch.utils.flop_counter import FlopCounterMode

    from shared.tasks.lm import causal_lm_loss

    model = GPT(GPTConfig(**{**DEBUG_GPT, "n_layer": 2, "tie_weights": tie, "attn_backend": "manual"}))
    b, t = 3, model.cfg.block_size
    x = torch.randint(0, model.cfg.vocab_size, (b, t + 1))
    with FlopCounterMode(display=False) as counter:
        causal_lm_loss(model(x[:, :-1]), x[:, 1:]).backward()
    assert counter.get_total_flops() == model.flops_per_token() * b * t
