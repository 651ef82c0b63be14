"""The KV cache and the decoding loop: greedy decoding with the cache equals decoding without it token for token, with
logits equal to 1e-5 (fp32) at every step, for learned positions and RoPE, both attention backends, a batch with
left padding (each row as if alone); the cache's bytes equal the formula; the sampler's pieces against hand-made
logits; bad inputs named."""

import pytest
import torch

from shared.models.decode import SamplingConfig, apply_repetition_penalty, generate, left_pad, sample_next, stream
from shared.models.gpt import GPT, GPTConfig


def _gpt(pos: str = "learned", backend: str = "manual", block_size: int = 600) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, block_size=block_size, n_layer=2, n_head=2, n_embd=32, pos=pos,
                         attn_backend=backend)).eval()


def _both(model, ids, cfg, mask=None):
    with_cache, without = [], []
    a = torch.stack(list(stream(model, ids, cfg, mask, True, logits_out=with_cache)), 1)
    b = torch.stack(list(stream(model, ids, cfg, mask, False, logits_out=without)), 1)
    # fp32: the cached path computes the same dot products over the same keys, in chunks of one query instead of
    # a full (T, T) matmul; the sums' order differs at most by reduction blocking: ~1e-7, far below 1e-5
    gap = max((x - y).abs().max().item() for x, y in zip(with_cache, without, strict=True))
    return a, b, gap


def test_greedy_with_the_cache_equals_without_it_for_512_new_tokens():
    model = _gpt()
    ids = torch.randint(0, 97, (1, 8), generator=torch.Generator().manual_seed(1))
    a, b, gap = _both(model, ids, SamplingConfig(max_new_tokens=512))
    assert a.shape == (1, 512)
    assert torch.equal(a, b)
    assert gap <= 1e-5, f"logits differ by {gap:.2e}"


@pytest.mark.parametrize(("pos", "backend"), [("rope", "manual"), ("learned", "torch"), ("rope", "torch")])
def test_cache_equality_holds_for_rope_and_the_torch_backend(pos, backend):
    model = _gpt(pos, backend, block_size=128)
    ids = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(2))
    a, b, gap = _both(model, ids, SamplingConfig(max_new_tokens=64))
    assert torch.equal(a, b)
    assert gap <= 1e-5


@pytest.mark.parametrize(("pos", "penalty"), [("learned", 1.0), ("rope", 1.0), ("learned", 1.3)])
def test_a_left_padded_batch_decodes_each_row_as_if_alone(pos, penalty):
    model = _gpt(pos, block_size=128)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, 97, (n,), generator=g).tolist() for n in (3, 9, 6)]
    ids, mask = left_pad(prompts, pad_id=0)  # 0 is a real token: the penalty must not see the padding
    cfg = SamplingConfig(max_new_tokens=24, repetition_penalty=penalty)
    a, b, gap = _both(model, ids, cfg, mask)
    assert torch.equal(a, b)
    assert gap <= 1e-5
    for row, p in enumerate(prompts):
        alone = generate(model, torch.tensor([p]), cfg)[0, len(p):]
        assert torch.equal(a[row], alone), f"row {row} decodes differently in the batch"


def test_the_repetition_penalty_ignores_left_padding():
    model = _gpt(block_size=64)
    short, long_ = [5, 17, 42], [8, 9, 10, 11, 12, 13]
    with torch.no_grad():
        x = int(model(torch.tensor([short]))[0, -1].argmax())
        model.wte.weight[0] = model.wte.weight[x]  # tied head: token 0 now ties x, and argmax picks 0 alone
    cfg = SamplingConfig(max_new_tokens=4, repetition_penalty=2.0)
    alone = generate(model, torch.tensor([short]), cfg)[0, 3:]
    assert alone[0] == 0  # the pad id is the token this row wants next
    ids, mask = left_pad([short, long_], pad_id=0)
    batched = generate(model, ids, cfg, mask)[0, ids.shape[1]:]
    assert torch.equal(batched, alone), "the padding was penalised as if the row had seen token 0"


def test_the_cache_holds_two_tensors_per_layer_of_the_formula_size():
    model = _gpt(block_size=256)
    cache = model.new_kv_cache(batch=3, max_len=200)
    c = model.cfg
    assert cache.nbytes == 2 * c.n_layer * 3 * 200 * c.n_embd * 4  # 2 · n_layer · B · T · n_embd · bytes
    model(torch.zeros(3, 10, dtype=torch.long), kv_cache=cache)
    assert cache.length == 10


def test_bad_inputs_are_named():
    model = _gpt(block_size=32)
    with pytest.raises(ValueError, match="block_size=32"):
        model.new_kv_cache(1, 64)
    cache = model.new_kv_cache(1, 8)
    with pytest.raises(ValueError, match="holds 8 positions"):
        model(torch.zeros(1, 9, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="> model.block_size=32"):
        generate(model, torch.zeros(1, 20, dtype=torch.long), SamplingConfig(max_new_tokens=20))
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0).validate()


def test_sampler_pieces_on_hand_made_logits():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    greedy = SamplingConfig(temperature=0)
    assert sample_next(logits, greedy).item() == 0
    g = torch.Generator().manual_seed(0)
    assert all(sample_next(logits, SamplingConfig(temperature=1.0, top_k=1), generator=g).item() == 0
               for _ in range(20))
    # top_p: p(token 0) = 0.61 > 0.5, so only token 0 survives; at 0.9 tokens 0 and 1 (0.61 + 0.22 >= 0.9 fails) ...
    assert all(sample_next(logits, SamplingConfig(temperature=1.0, top_p=0.5), generator=g).item() == 0
               for _ in range(20))
    drawn = {sample_next(logits, SamplingConfig(temperature=1.0, top_p=0.8), generator=g).item() for _ in range(200)}
    assert drawn == {0, 1}
    penalised = apply_repetition_penalty(logits, torch.tensor([[0, 3]]), 2.0)
    assert torch.equal(penalised, torch.tensor([[1.0, 1.0, 0.5, -2.0]]))
    a = sample_next(logits.repeat(4, 1), SamplingConfig(temperature=1.0), generator=torch.Generator().manual_seed(5))
    b = sample_next(logits.repeat(4, 1), SamplingConfig(temperature=1.0), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)  # a seeded generator: the same draws


def test_a_stop_id_ends_its_row_and_the_stream_when_every_row_stopped():
    model = _gpt(block_size=128)
    ids = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(4))
    free = generate(model, ids, SamplingConfig(max_new_tokens=20))[:, 4:]
    stop = int(free[0, 2])  # row 0 emits it at step 2
    out = generate(model, ids, SamplingConfig(max_new_tokens=20, stop_ids=[stop]))[:, 4:]
    assert (out[0, 2:] == stop).all()
    assert torch.equal(out[0, :3], free[0, :3])
    if stop not in free[1].tolist():
        assert out.shape[1] == 20  # row 1 never stops: the stream runs to max_new_tokens
