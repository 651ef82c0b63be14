"""Week 11's measurement modules at tiny sizes: the cache benchmark's rows (fields, greedy tokens equal with and without
the cache, skipped cells recorded with their reason, cache bytes = formula), the attention benchmark (which SDPA
backends run here, agreement with the fp64 reference, the memory cap, the profiler's peak-memory accounting),
choose_default on hand-made rows, cache = no cache on the debug GPT with a left-padded batch, CSVs and plots."""

from __future__ import annotations

import pytest
import torch

from shared.models.gpt import GPT, GPTConfig
from shared.profiling import torch_threads
from shared.testing import DEBUG_GPT
from week11_inference import bench_attention as ba
from week11_inference import bench_cache as bc
from week11_inference.cache_check import cache_equality, hf_cache_equality, random_prompts

TINY = {"name": "tiny", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64, "vocab_size": 97,
        "new_tokens": (8, 16), "batches": (1, 2), "prompt_len": 4, "warmup_tokens": 2, "calib_len": 32}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread, and much faster on a busy machine."""
    with torch_threads(1):
        yield


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                        initializer_range=0.2, pad_token_id=0, bos_token_id=1,
                                        eos_token_id=2)).eval()


def test_bench_gpt_rows_have_the_fields_equal_tokens_and_the_cache_formula():
    cfg = bc.CacheBenchConfig(**TINY, max_cell_s=1e9, budget_s=1e9)
    rows = bc.bench_gpt(bc.build_gpt(cfg), cfg)
    assert len(rows) == 2 * 2 * 2  # batches x new_tokens x cache on/off
    for r in rows:
        assert set(bc.FIELDS) <= set(r)
        assert r["status"] == "ok", r
        assert r["tokens_equal"] is True, r
        assert r["ttft_s"] > 0
        assert r["total_s"] >= r["ttft_s"]
        assert r["tokens_per_sec"] > 0
        assert r["threads"] == 1
    cached = [r for r in rows if r["use_cache"]]
    assert all(r["cache_bytes"] == r["cache_formula_bytes"] == 2 * 2 * r["batch"] * (4 + r["new_tokens"]) * 32 * 4
               for r in cached)
    sp = bc.speedup(rows)
    assert len(sp) == 4
    assert all(s["measured"] and s["speedup"] > 0 for s in sp)


def test_skipped_cells_are_recorded_with_their_reason_and_forced_cells_run():
    cfg = bc.CacheBenchConfig(**{**TINY, "new_tokens": (8, 100)}, budget_s=0.0,
                              force_cells=((1, 8, True), (1, 8, False), [1, 100, True]))  # YAML gives lists
    rows = bc.bench_gpt(bc.build_gpt(cfg), cfg)
    ran = {(r["batch"], r["new_tokens"], r["use_cache"]): r for r in rows if r["status"] == "ok"}
    assert set(ran) == {(1, 8, True), (1, 8, False), (1, 100, True)}
    assert ran[(1, 8, True)]["tokens_equal"]
    assert ran[(1, 8, False)]["tokens_equal"]
    assert ran[(1, 100, True)]["tokens_equal"] is None  # its no-cache twin did not run: nothing to compare
    skipped = [r for r in rows if r["status"] == "skip"]
    assert len(skipped) == len(rows) - 3
    assert all("budget_s=0" in r["reason"] and r["est_s"] > 0 and r["total_s"] is None for r in skipped)
    capped = [r for r in rows if r["new_tokens"] == 100]
    assert all(r["new_tokens_run"] == 60 for r in capped)  # block 64 - prompt 4
    # a skipped no-cache cell: the speedup uses its estimate and says so
    sp = {(s["batch"], s["new_tokens"]): s for s in bc.speedup(rows)}
    assert set(sp) == {(1, 8), (1, 100)}
    assert sp[(1, 8)]["measured"]
    assert not sp[(1, 100)]["measured"]
    assert sp[(1, 100)]["no_cache_s"] == next(r["est_s"] for r in rows if (r["batch"], r["new_tokens"], r["use_cache"])
                                               == (1, 100, False))


def test_plan_skips_cells_over_max_cell_s_and_then_the_most_expensive_past_the_budget():
    costs = bc.Costs(a=0.1, c=0.001, step={1: 0.05})
    cfg = bc.CacheBenchConfig(prompt_len=10, max_cell_s=30.0, budget_s=10.0)
    assert costs.estimate(1, 10, 100, False) == pytest.approx(100 * 0.1 + 0.001 * (100 * 10 + 100 * 99 / 2))
    assert costs.estimate(1, 10, 100, True) == pytest.approx(0.1 + 0.01 + 99 * 0.05)
    cells = [(1, n, n, uc) for n in (50, 100, 400) for uc in (True, False)]
    out = bc.plan(cells, costs, cfg)
    assert "max_cell_s=30" in out[(1, 400, False)][1]  # 40 + 0.001·(4000 + 79800) = 123.8 s
    # left: 20.1 (cache, 400), 16.0 (no cache, 100), 6.7 (no cache, 50), 5.1 and 2.6 (cache, 100 and 50) = 50.4 s;
    # the most expensive go first until the rest fits 10 s
    for key in ((1, 400, True), (1, 100, False), (1, 50, False)):
        assert "budget_s=10" in out[key][1], key
    assert out[(1, 50, True)][1] == ""
    assert out[(1, 100, True)][1] == ""
    kept = sum(s for s, why in out.values() if not why)
    assert kept <= cfg.budget_s


def test_the_hf_path_rows_equal_tokens_and_measure_past_key_values():
    pytest.importorskip("transformers")
    cfg = bc.CacheBenchConfig(**{**TINY, "batches": (2,), "new_tokens": (6,)}, max_cell_s=1e9, budget_s=1e9)
    rows = bc.bench_hf(_tiny_llama(), cfg, name="tiny-llama")
    assert [r["use_cache"] for r in rows] == [True, False]
    assert all(r["status"] == "ok" and r["tokens_equal"] for r in rows)
    c = rows[0]
    # DynamicCache after 6 new tokens holds prompt + 5 positions; GQA: 2 KV heads x head_dim 8 per layer
    assert c["cache_bytes"] == c["cache_formula_bytes"] == 2 * 2 * 2 * (4 + 5) * 2 * 8 * 4
    mem = bc.cache_memory_rows(GPT(GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=2, n_embd=32)),
                               batches=(1, 3), lengths=(16, 64, 128), hf_rows=rows)
    assert all(m["equal"] for m in mem)
    assert [m["seq_len"] for m in mem if m["model"] == "gpt"] == [16, 64, 16, 64]  # 128 > block_size: left out
    assert [m["seq_len"] for m in mem if m["model"] == "tiny-llama"] == [9]


def test_rows_carry_every_field_and_the_plots_are_written(tmp_path):
    cfg = bc.CacheBenchConfig(**{**TINY, "batches": (1,)}, max_cell_s=1e9, budget_s=1e9)
    model = bc.build_gpt(cfg)
    rows = bc.bench_gpt(model, cfg)
    mem = bc.cache_memory_rows(model, (1,), (16, 32))
    assert all(set(bc.FIELDS) <= set(r) for r in rows)
    assert all(set(bc.MEMORY_FIELDS) <= set(m) for m in mem)
    assert bc.plot(rows, tmp_path / "cache.png", mem).stat().st_size > 1000

    att = ba.bench_attention(ba.AttentionBenchConfig(seq_lens=(16, 32), n_head=2, head_dim=8, repeats=1,
                                                     dtypes=("float32",)))
    assert all(set(ba.FIELDS) <= set(r) for r in att)
    assert ba.plot(att, tmp_path / "att.png").stat().st_size > 1000


def test_attention_backends_agree_or_skip_with_the_error():
    cfg = ba.AttentionBenchConfig(seq_lens=(16, 64), n_head=2, head_dim=8, repeats=1)
    rows = ba.bench_attention(cfg)
    assert len(rows) == 2 * 2 * len(ba.BACKENDS)
    for r in rows:
        assert set(ba.FIELDS) <= set(r)
        if r["status"] == "ok":
            assert r["agree"] is True, r
            assert r["rel_err"] <= ba.TOLERANCES[r["dtype"]]
            assert r["time_ms"] > 0
            assert r["peak_bytes"] > 0
        else:
            assert r["reason"]
            assert r["time_ms"] is None
    ran = {r["backend"] for r in rows if r["status"] == "ok"}
    assert {"manual", "math", "flash"} <= ran  # the CPU has MATH and its own flash kernel
    if not torch.cuda.is_available():
        for r in rows:
            if r["backend"] in ("efficient", "cudnn"):
                assert r["status"] == "skip"
                assert "No viable backend" in r["reason"]


def test_the_memory_cap_skips_score_materialising_backends_with_the_reason():
    cfg = ba.AttentionBenchConfig(seq_lens=(16, 128), n_head=2, head_dim=8, repeats=1, dtypes=("float32",),
                                  backends=("manual", "math", "flash"), max_score_bytes=2 * 16 * 16 * 4)
    rows = {(r["backend"], r["seq_len"]): r for r in ba.bench_attention(cfg)}
    assert rows[("manual", 16)]["status"] == rows[("math", 16)]["status"] == "ok"
    for b in ("manual", "math"):
        assert rows[(b, 128)]["status"] == "skip"
        assert "max_score_bytes" in rows[(b, 128)]["reason"]
    assert rows[("flash", 128)]["status"] == "ok"  # no (T, T) scores: not capped


def test_cpu_peak_bytes_is_the_running_peak_of_allocations():
    def fn():
        a = torch.empty(1 << 20)  # 4 MiB
        del a
        b = torch.empty(1 << 19)  # 2 MiB, returned
        return b

    assert ba.cpu_peak_bytes(fn) == 4 << 20
    assert ba.cpu_peak_bytes(lambda: (torch.empty(1 << 18), torch.empty(1 << 18))) == 2 << 20


def _rows(times: dict[str, list[float]], errs: dict[str, float] | None = None, tol: float = 1e-5):
    errs = errs or {}
    out = []
    for b, ts in times.items():
        for t, ms in zip((128, 256, 512), ts, strict=False):
            status = "ok" if ms is not None else "skip"
            err = errs.get(b, 1e-7)
            out.append({"backend": b, "dtype": "float32", "seq_len": t, "status": status, "time_ms": ms,
                        "rel_err": err if ms else None, "tol": tol, "agree": (err <= tol) if ms else None})
    return out


def test_choose_default_picks_the_fastest_agreeing_backend_and_rejects_a_disagreeing_one():
    rows = _rows({"manual": [2.0, 8.0, 30.0], "math": [1.5, 6.0, 25.0], "flash": [0.5, 1.0, 2.0],
                  "fast_but_wrong": [0.1, 0.2, 0.4]}, errs={"fast_but_wrong": 3e-2})
    best, why = ba.choose_default(rows)
    assert best == "flash"
    assert "fast_but_wrong" in why
    assert "rejected" in why
    assert "0.03" in why
    assert "math" in why
    assert "manual" in why
    # a backend skipped at the longest T (memory cap) is not the default even if faster where it ran
    rows = _rows({"manual": [0.1, 0.2, None], "flash": [0.5, 1.0, 2.0]})
    best, why = ba.choose_default(rows)
    assert best == "flash"
    assert "manual (up to T=256; 0.2× flash's time" in why
    with pytest.raises(ValueError, match="no backend"):
        ba.choose_default(_rows({"x": [1.0]}, errs={"x": 1.0}))


def test_flash_attn_availability_is_explained(monkeypatch):
    monkeypatch.setattr(ba.importlib.util, "find_spec", lambda name: None)
    ok, why = ba.flash_attn_available()
    assert not ok
    assert "no wheel" in why
    assert "FLASH_ATTENTION" in why


@pytest.mark.parametrize("backend", ["manual", "torch"])
def test_cache_equality_on_the_debug_gpt_with_a_left_padded_batch(backend):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**DEBUG_GPT, "vocab_size": 97, "block_size": 64})).eval()
    prompts = random_prompts((3, 11, 6), 97, seed=2)
    row = cache_equality(model, prompts, new_tokens=40, attn_backend=backend)
    assert row["tokens_equal"], row
    assert row["max_abs_diff"] <= 1e-5, row
    assert row["ok"]
    assert row["n_steps"] == 40
    assert row["prompt_lens"] == [3, 11, 6]
    assert row["attn_backend"] == backend
    assert model.cfg.attn_backend == "manual"  # restored


def test_hf_cache_equality_on_a_tiny_llama():
    pytest.importorskip("transformers")
    from shared.models.decode import left_pad

    ids, mask = left_pad(random_prompts((2, 7), 97, seed=3, low=3), 0)
    row = hf_cache_equality(_tiny_llama(), ids, 24, mask)
    assert row["tokens_equal"], row
    assert row["max_abs_diff"] <= 1e-5, row
    assert row["ok"]
    assert row["n_steps"] == 24


def test_forced_cells_run_on_top_of_the_budget():
    costs = bc.Costs(a=0.0, c=0.0, step={1: 1.0})  # a cached cell of n tokens costs n - 1 s; a no-cache one 0 s
    cfg = bc.CacheBenchConfig(budget_s=20.0, force_cells=([1, 100, True],))
    cells = [(1, 100, 100, True), (1, 10, 10, True), (1, 30, 30, True)]
    plan = bc.plan(cells, costs, cfg)
    assert plan[(1, 100, True)] == (99.0, "")  # forced, though alone it is 5x the budget
    assert plan[(1, 10, True)][1] == ""  # 9 s fits the 20 s budget: the forced 99 s do not count against it
    assert "budget_s=20" in plan[(1, 30, True)][1]  # 9 + 29 would not
