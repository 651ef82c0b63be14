"""The engine benchmark on the debug GPT: every system's tokens equal decoding each prompt alone, the rows carry
their sizes, a too-long request is refused."""

import pytest
import torch

from shared.models.gpt import GPT, GPTConfig
from week11_inference.bench_engine import EngineBenchConfig, answer_lengths, bench_engine


def _gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()


def test_engine_static_batch_and_hf_generate_agree_with_decoding_alone():
    tokens = torch.randint(0, 97, (500,), generator=torch.Generator().manual_seed(0))
    cfg = EngineBenchConfig(concurrency=[1, 3], prompt_tokens=8, new_tokens=16, block_size=4, requests_per_slot=2)
    rows = bench_engine(_gpt(), tokens, cfg, "debug")
    systems = ["engine", "static_batch", "hf_generate"]
    assert [(r["workload"], r["concurrency"], r["system"]) for r in rows] == [
        (w, c, s) for w in ("equal", "mixed") for c in (1, 3) for s in systems]
    for r in rows:
        assert r["same_as_alone"] == r["requests"], r
        assert r["tokens_per_sec"] > 0
    mixed = {r["concurrency"]: (r["requests"], r["useful_tokens"]) for r in rows if r["workload"] == "mixed"}
    assert mixed == {1: (2, 2 + 16), 3: (6, 2 + 5 + 8 + 10 + 13 + 16)}, "answers spread from new_tokens/8 up"
    assert [r["leaked_blocks"] for r in rows if r["system"] == "engine"] == [0, 0, 0, 0]


def test_answer_lengths_and_a_bad_workload():
    assert answer_lengths(3, 8, "equal") == [8, 8, 8]
    assert sorted(answer_lengths(5, 40, "mixed")) == [5, 14, 22, 31, 40]
    with pytest.raises(ValueError, match="unknown workload 'bursty'"):
        answer_lengths(2, 8, "bursty")


def test_a_request_longer_than_the_context_is_refused():
    with pytest.raises(ValueError, match="block_size=64"):
        bench_engine(_gpt(), torch.zeros(100, dtype=torch.long), EngineBenchConfig(prompt_tokens=40, new_tokens=40),
                     "debug")
