"""The pre-flight estimate: its FLOPs are the model's own count (which equals torch's FLOP counter: test_gpt.py), its
memory terms follow their formula, and estimate vs actual are set side by side."""

import pytest

from shared.models.gpt import GPT, GPTConfig
from shared.testing import DEBUG_GPT, debug_token_stream
from shared.train.config import LoopConfig, OptimConfig
from shared.train.preflight import GIB, compare, memory_bytes, preflight


def test_the_estimate_counts_parameters_tokens_and_both_flop_formulas():
    cfg = GPTConfig(**DEBUG_GPT)
    loop = LoopConfig(micro_batch=4, device="cpu")
    est = preflight(cfg, OptimConfig(), loop, tokens=10_000, probe_stream=debug_token_stream())
    model = GPT(cfg)
    assert (est.n_params, est.n_params_non_embedding) == (model.num_params(False), model.num_params())
    assert est.flops == pytest.approx(model.flops_per_token() * 10_000)
    assert est.flops_6nd == pytest.approx(6 * model.num_params() * 10_000)
    assert est.probe_tokens_per_sec > 0
    assert est.seconds == pytest.approx(10_000 / est.probe_tokens_per_sec)
    assert est.memory_bytes == est.weights_bytes + est.activation_bytes
    assert "pre-flight: N" in est.describe()


def test_memory_terms_follow_their_formulas():
    cfg = GPTConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=8, attn_backend="manual")
    loop = LoopConfig(micro_batch=4)
    weights, acts = memory_bytes(cfg, OptimConfig(name="adamw"), loop, n_params=1000)
    assert weights == 1000 * 16  # fp32 weight + gradient + two AdamW moments
    assert memory_bytes(cfg, OptimConfig(name="sgd"), loop, 1000)[0] == 1000 * 12
    per_layer = 4 * 16 * 8 * (34 + 5 * 2 * 16 / 8)
    assert acts == int(2 * per_layer * 2 + 2 * 4 * 16 * 100 * 4)
    sdpa = memory_bytes(GPTConfig(**{**cfg.__dict__, "attn_backend": "torch"}), OptimConfig(), loop, 1000)[1]
    assert sdpa == int(2 * 4 * 16 * 8 * 34 * 2 + 2 * 4 * 16 * 100 * 4)  # no T x T probabilities kept


def test_compare_sets_estimate_beside_actual():
    cfg = GPTConfig(**DEBUG_GPT)
    est = preflight(cfg, OptimConfig(), LoopConfig(micro_batch=2), tokens=1000, probe_stream=debug_token_stream(),
                    probe_steps=1, probe_warmup=0)
    row = compare(est, train_time_s=2 * est.seconds, tokens=990, peak_memory_gib=3 * est.memory_bytes / GIB)
    assert row["time_ratio"] == pytest.approx(2.0)
    assert row["memory_ratio"] == pytest.approx(3.0)
    assert (row["tokens"], row["actual_tokens"]) == (1000, 990)
    assert compare(est, 1.0, 990, None)["memory_ratio"] is None
    with pytest.raises(ValueError, match="tokens >= 1"):
        preflight(cfg, OptimConfig(), LoopConfig(), tokens=0, probe_stream=debug_token_stream())
