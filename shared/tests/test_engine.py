"""The paged KV cache and the continuous-batching engine: every request's greedy output equals decoding it alone
(the contiguous cache of :mod:`shared.models.decode`), while requests join and leave mid-batch; every block goes
back to the pool; admission waits for memory instead of failing; bad requests are named."""

import pytest
import torch

from shared.models.decode import SamplingConfig, generate
from shared.models.gpt import GPT, GPTConfig
from shared.serve.engine import Engine, EngineConfig
from shared.serve.paged_kv import BlockAllocator, OutOfBlocks, PagedKVCache


def _gpt(pos: str = "learned", backend: str = "manual") -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, block_size=128, n_layer=2, n_head=2, n_embd=32, pos=pos,
                         attn_backend=backend)).eval()


def _prompts(n: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 97, (int(torch.randint(1, 20, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def _alone(model: GPT, prompt: list[int], n: int) -> list[int]:
    return generate(model, torch.tensor([prompt]), SamplingConfig(max_new_tokens=n))[0, len(prompt):].tolist()


@pytest.mark.parametrize(("pos", "backend"), [("learned", "manual"), ("rope", "torch")])
def test_requests_joining_and_leaving_mid_batch_decode_as_if_alone(pos, backend):
    model = _gpt(pos, backend)
    prompts, lengths = _prompts(7), [5, 23, 1, 40, 12, 3, 30]
    # 5 blocks of 8 positions per request at most: a pool of 20 holds about three at once, so requests queue
    engine = Engine(model, EngineConfig(num_blocks=20, block_size=8, max_batch=4))
    ids = [engine.add_request(p, SamplingConfig(max_new_tokens=n)) for p, n in zip(prompts[:4], lengths[:4],
                                                                                      strict=True)]
    batch_sizes = []
    for step in range(500):
        if step == 3:  # arrivals while others are mid-answer
            ids += [engine.add_request(p, SamplingConfig(max_new_tokens=n))
                    for p, n in zip(prompts[4:], lengths[4:], strict=True)]
        batch_sizes.append(len(engine.running))
        engine.step()
        if not engine.has_work and step > 3:
            break
    for i, p, n in zip(ids, prompts, lengths, strict=True):
        assert engine.finished[i].output == _alone(model, p, n), f"request {i} differs from decoding it alone"
        assert engine.finished[i].finish_reason == "length"
    assert len(set(batch_sizes)) > 2, f"the batch never changed size ({batch_sizes}): not continuous"
    assert engine.cache.allocator.num_free == 20, "KV blocks leaked"
    assert engine.cache.tables == {}
    assert engine.cache.lengths == {}


def test_stop_ids_end_a_request_early_and_free_its_blocks():
    model = _gpt()
    prompt = _prompts(1)[0]
    full = _alone(model, prompt, 30)
    stop = full[10]
    engine = Engine(model, EngineConfig(num_blocks=16, block_size=4))
    rid = engine.add_request(prompt, SamplingConfig(max_new_tokens=30, stop_ids=[stop]))
    events = list(engine.stream())
    out = engine.finished[rid]
    assert out.output == full[: full.index(stop) + 1]
    assert out.finish_reason == "stop"
    assert [e.token for e in events] == out.output
    assert events[-1].finish_reason == "stop"
    assert engine.cache.allocator.num_free == 16


def test_seeded_sampling_matches_decoding_alone_with_the_same_generator():
    model = _gpt()
    prompt = _prompts(1)[0]
    cfg = SamplingConfig(max_new_tokens=20, temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.3)
    alone = generate(model, torch.tensor([prompt]), cfg, generator=torch.Generator().manual_seed(5))[0, len(prompt):]
    engine = Engine(model)
    rid = engine.add_request(prompt, cfg, torch.Generator().manual_seed(5))
    engine.add_request(_prompts(1, seed=9)[0], SamplingConfig(max_new_tokens=20))  # a greedy neighbour
    assert engine.run()[rid] == alone.tolist()


def test_admission_waits_for_blocks_and_never_runs_out():
    model = _gpt()
    engine = Engine(model, EngineConfig(num_blocks=6, block_size=4, max_batch=8))
    for p in _prompts(5):  # each needs <= ceil((19 + 4) / 4) = 6 blocks: at most one or two at a time
        engine.add_request(p, SamplingConfig(max_new_tokens=4))
    most = 0
    while engine.has_work:
        engine.step()
        most = max(most, len(engine.running))
        assert engine.cache.allocator.num_free >= 0
    assert len(engine.finished) == 5
    assert engine.cache.allocator.num_free == 6
    assert most < 5, "admission control let every request in at once"


def test_generate_returns_outputs_in_prompt_order():
    model = _gpt()
    prompts = _prompts(3)
    outs = Engine(model, EngineConfig(max_batch=2)).generate(prompts, SamplingConfig(max_new_tokens=6))
    assert outs == [_alone(model, p, 6) for p in prompts]


def test_bad_requests_are_named():
    engine = Engine(_gpt(), EngineConfig(num_blocks=4, block_size=4))
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        engine.add_request([1, 2], SamplingConfig(max_new_tokens=0))
    with pytest.raises(ValueError, match="block_size=128"):
        engine.add_request([1] * 120, SamplingConfig(max_new_tokens=10))
    with pytest.raises(ValueError, match="raise engine.num_blocks"):
        engine.add_request([1] * 10, SamplingConfig(max_new_tokens=10))
    with pytest.raises(ValueError, match="empty prompt"):
        engine.add_request([], SamplingConfig(max_new_tokens=1))
    with pytest.raises(ValueError, match="engine.max_batch"):
        Engine(_gpt(), EngineConfig(max_batch=0))


def test_block_allocator_accounting():
    alloc = BlockAllocator(3)
    a = alloc.allocate(2)
    assert alloc.num_free == 1
    assert len(set(a)) == 2
    with pytest.raises(OutOfBlocks, match="need 2 KV blocks, 1 of 3"):
        alloc.allocate(2)
    alloc.release(a)
    assert alloc.num_free == 3
    with pytest.raises(ValueError, match="double free"):
        alloc.release(a[:1])


def test_paged_cache_grows_by_blocks_and_its_bytes_follow_the_formula():
    cache = PagedKVCache(n_layer=2, n_head=2, head_dim=16, num_blocks=10, block_size=4)
    assert cache.nbytes == 2 * 2 * 10 * 4 * 32 * 4  # 2 · n_layer · blocks · block_size · n_embd · 4 bytes
    cache.add_sequence(0)
    view = cache.batch([0], 5)  # 5 positions -> 2 blocks
    assert len(cache.tables[0]) == 2
    assert view.t_k == 5
    k = torch.randn(1, 2, 5, 16)
    keys, _ = view.update(0, k, k)
    assert torch.equal(keys, k)
    view.advance(5)
    assert cache.lengths[0] == 5
    cache.free_sequence(0)
    assert cache.allocator.num_free == 10
