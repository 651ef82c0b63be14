"""Week 11's checks on hand-made rows (no model runs): each check with a passing input, a failing input, and a SKIP
input where it can skip; every test asserts the status and what ``measured`` (or the SKIP reason) says."""

from __future__ import annotations

from typing import Any

import pytest

from shared.report import FAIL, PASS, SKIP
from week11_inference import checks

GPU_ONLY = ("efficient", "cudnn")
NOT_MEASURED = "Not measured in this run"
SECTIONS = ("## 1. Decoding: the KV cache", "## 2. Attention backend", "## Summary")
RUN_A, RUN_B = "week11/cpu/cache-bench-0123abcd", "week11/cpu/attention-89abcdef"


# ---- rows in the producers' formats -------------------------------------------------------------------------------


def cache_row(tokens_equal: bool = True, gap: float = 2e-6, tol: float = 1e-5, relative: bool = False,
              **kw: Any) -> dict[str, Any]:
    """A :func:`week11_inference.cache_check.cache_equality` row; ``ok`` judged as ``cache_check._judge`` does."""
    scale = 20.0
    rel = gap / scale
    return {"model": "gpt", "attn_backend": "manual", "batch": 3, "prompt_lens": [5, 9, 12], "new_tokens": 16,
            "n_steps": 16, "tokens_equal": tokens_equal, "max_abs_diff": gap, "logit_scale": scale,
            "max_rel_diff": rel, "tol": tol, "tol_kind": "relative" if relative else "absolute",
            "ok": bool(tokens_equal and (rel if relative else gap) <= tol), **kw}


def speed_row(speedup: float = 7.5, measured: bool = True, new_tokens: int = 512, batch: int = 1,
              model: str = "gpt2-small") -> dict[str, Any]:
    """A :func:`week11_inference.bench_cache.speedup` row."""
    cache_s = 4.0
    return {"model": model, "batch": batch, "new_tokens": new_tokens, "cache_s": cache_s,
            "no_cache_s": speedup * cache_s, "speedup": speedup, "measured": measured, "tokens_equal": True}


def memory_row(measured: int = 2 * 12 * 1 * 512 * 768 * 4, formula: int = 2 * 12 * 1 * 512 * 768 * 4,
               batch: int = 1) -> dict[str, Any]:
    """A :func:`week11_inference.bench_cache.cache_memory_rows` row."""
    return {"model": "gpt", "kind": "KVCache (static, shared.nn.kv_cache)", "batch": batch, "seq_len": 512,
            "dtype": "float32", "measured_bytes": measured, "formula_bytes": formula,
            "formula": "2·n_layer·B·T·n_embd·bytes", "equal": measured == formula}


def attn_row(backend: str = "manual", dtype: str = "float32", seq_len: int = 128, status: str = "ok",
             rel_err: float | None = 1e-7, reason: str = "", time_ms: float | None = 2.0) -> dict[str, Any]:
    """A :func:`week11_inference.bench_attention.bench_attention` row (``status='skip'`` rows carry a reason)."""
    tol = {"float32": 1e-5, "bfloat16": 1e-2}[dtype]
    ran = status == "ok"
    return {"backend": backend, "dtype": dtype, "device": "cpu", "seq_len": seq_len, "batch": 1, "n_head": 12,
            "head_dim": 64, "status": status, "reason": reason, "time_ms": time_ms if ran else None,
            "peak_bytes": 1 << 20 if ran else None, "score_bytes": 4 * 12 * seq_len**2,
            "rel_err": rel_err if ran else None, "tol": tol, "agree": bool(ran and rel_err <= tol), "threads": 2}


def engine_row(system: str = "engine", workload: str = "equal", concurrency: int = 4, same: int | None = None,
               leaked: int = 0, tok_s: float = 300.0) -> dict[str, Any]:
    """A :func:`week11_inference.bench_engine` row (``leaked_blocks`` on the engine's rows only)."""
    requests = 2 * concurrency
    row = {"model": "gpt", "workload": workload, "concurrency": concurrency, "requests": requests,
           "prompt_tokens": 16, "new_tokens": 32, "useful_tokens": 32 * requests, "system": system, "seconds": 1.5,
           "tokens_per_sec": tok_s, "same_as_alone": requests if same is None else same}
    if system == "engine":
        row.update(engine_steps=40, leaked_blocks=leaked)
    return row


def quant_row(variant: str, nbytes: int, ppl: float | None, decode_tok_s: float) -> dict[str, Any]:
    """A :func:`week11_inference.quantize.compare_gpt` row (no ``ppl`` key when no val tokens were scored)."""
    row = {"model": "gpt-cpu", "variant": variant, "per_channel": False if variant == "int8" else None,
           "bytes": nbytes, "mb": nbytes / 2**20, "decode_tok_s": decode_tok_s}
    if ppl is not None:
        row.update(loss=1.0, ppl=ppl, eval_tokens=4096)
    return row


def agreement_row(diff: float, batch: int = 2, seq_len: int = 64, backend: str = "onnxruntime") -> dict[str, Any]:
    """An ``export_and_check(...)["agreement"]`` row."""
    return {"backend": backend, "batch": batch, "seq_len": seq_len, "max_abs_diff": diff, "ok": diff <= 1e-4}


def chat_result(lengths: list[int] | None = None, errors: list[str] | None = None,
                answer: str = "Hello there, friend.") -> dict[str, Any]:
    """A :func:`week11_inference.chat.browser_check.browser_roundtrip` result."""
    return {"model_label": "gpt-cpu", "user_text": "Hi", "answer": answer,
            "stats": "12 tokens · 31.4 tokens/s", "status_line": "done",
            "lengths": [0, 6, 13, 20, 20] if lengths is None else lengths,
            "page_errors": [] if errors is None else errors, "seconds": 2.46}


# ---- cache_matches ------------------------------------------------------------------------------------------------


def test_cache_matches_passes_when_tokens_equal_and_gaps_within_tol():
    rows = [cache_row(), cache_row(attn_backend="torch", gap=3e-6),
            cache_row(model="llama", attn_backend="sdpa", batch=2, gap=4e-3, tol=1e-3, relative=True)]
    c = checks.cache_matches(rows)
    assert c.status == PASS
    assert "gpt/manual B=3 16 steps: equal tokens, max |Δ| 2.0e-06" in c.measured
    assert "llama/sdpa B=2" in c.measured
    assert "(rel 2.0e-04)" in c.measured


def test_cache_matches_fails_on_different_tokens():
    c = checks.cache_matches([cache_row(), cache_row(attn_backend="torch", tokens_equal=False)])
    assert c.status == FAIL
    assert "gpt/torch B=3 16 steps: DIFFERENT tokens" in c.measured


def test_cache_matches_fails_on_a_gap_above_tol():
    c = checks.cache_matches([cache_row(gap=3e-5)])
    assert c.status == FAIL
    assert "equal tokens, max |Δ| 3.0e-05" in c.measured


def test_cache_matches_skips_without_rows():
    c = checks.cache_matches([])
    assert c.status == SKIP
    assert c.reason == "no cache-equality row ran"


# ---- speedup_and_memory -------------------------------------------------------------------------------------------


def _speedup(speed, memory, target: float = 5.0):
    return checks.speedup_and_memory(speed, memory, "gpt2-small", 512, target, 0.0)


def test_speedup_and_memory_passes_at_the_target_with_exact_memory():
    c = _speedup([speed_row(7.5, new_tokens=128), speed_row(7.5)], [memory_row(), memory_row(batch=8)])
    assert c.status == PASS
    assert c.measured.startswith("7.5× (30.0 s without the cache, 4.0 s with it; tokens equal)")
    assert "2 of 2 cache sizes equal their formula" in c.measured


def test_speedup_below_the_target_fails():
    c = _speedup([speed_row(4.9)], [memory_row()])
    assert c.status == FAIL
    assert c.measured.startswith("4.9×")
    assert "≥ 5" in c.criterion


def test_a_memory_row_off_its_formula_fails():
    c = _speedup([speed_row(7.5)], [memory_row(), memory_row(measured=1000, formula=1024)])
    assert c.status == FAIL
    assert "1 of 2 cache sizes equal their formula" in c.measured


def test_speedup_cell_timed_with_the_cache_only_skips():
    c = _speedup([speed_row(9.0, measured=False)], [memory_row()])
    assert c.status == SKIP
    assert "ran with the cache only" in c.reason
    assert "(gpt2-small, batch 1, 512 tokens)" in c.reason


def test_missing_speedup_cell_skips():
    c = _speedup([speed_row(7.5, new_tokens=128), speed_row(7.5, batch=8)], [memory_row()])
    assert c.status == SKIP
    assert "was not measured" in c.reason


# ---- sdpa_agree / gpu_backends ------------------------------------------------------------------------------------


def test_sdpa_agree_passes_when_every_cell_agrees():
    rows = [attn_row("manual"), attn_row("math", rel_err=4e-6), attn_row("flash", "bfloat16", rel_err=3e-3),
            attn_row("efficient", status="skip", reason="No available kernel. Aborting execution.")]
    c = checks.sdpa_agree(rows)
    assert c.status == PASS
    assert c.measured.startswith("3 of 3 cells agree (flash, manual, math)")
    assert "closest to its tolerance: math float32 T=128 4.0e-06 (tol 1e-05)" in c.measured


def test_sdpa_agree_fails_naming_the_disagreeing_cell():
    rows = [attn_row("manual"), attn_row("flash", "bfloat16", seq_len=512, rel_err=3e-2)]
    c = checks.sdpa_agree(rows)
    assert c.status == FAIL
    assert "1 of 2 cells agree" in c.measured
    assert "off: flash/bfloat16/T=512" in c.measured


def test_sdpa_agree_skips_when_nothing_ran():
    c = checks.sdpa_agree([attn_row("efficient", status="skip", reason="no kernel")])
    assert c.status == SKIP
    assert c.reason == "no attention backend ran"


def test_gpu_backends_skip_with_the_error_when_only_skip_rows():
    rows = [attn_row("manual"), attn_row("efficient", status="skip", reason="No available kernel on cpu"),
            attn_row("cudnn", status="skip", reason="cuDNN attention needs CUDA")]
    c = checks.gpu_backends(rows, GPU_ONLY)
    assert c.status == SKIP
    assert c.reason == "none ran here: No available kernel on cpu"


def test_gpu_backends_skip_when_not_in_the_run():
    c = checks.gpu_backends([attn_row("manual")], GPU_ONLY)
    assert c.status == SKIP
    assert "not in this run's backends" in c.reason


def test_gpu_backends_pass_when_they_ran_and_agree():
    rows = [attn_row("efficient", "bfloat16", rel_err=2e-3), attn_row("cudnn", "bfloat16", rel_err=5e-3),
            attn_row("manual")]
    c = checks.gpu_backends(rows, GPU_ONLY)
    assert c.status == PASS
    assert c.measured == "2 of 2 cells agree"


def test_gpu_backends_fail_when_one_disagrees():
    rows = [attn_row("efficient", "bfloat16", rel_err=2e-3), attn_row("cudnn", "bfloat16", rel_err=5e-2)]
    c = checks.gpu_backends(rows, GPU_ONLY)
    assert c.status == FAIL
    assert c.measured == "1 of 2 cells agree"


# ---- default_decided ----------------------------------------------------------------------------------------------

REASON = "math: fastest backend that agrees with the fp64 reference (float32): geometric-mean time 1.23 ms"


def test_default_decided_passes_for_an_agreeing_backend_and_a_measured_reason():
    rows = [attn_row("math", seq_len=t) for t in (128, 256)] + [attn_row("manual")]
    c = checks.default_decided("math", REASON, rows)
    assert c.status == PASS
    assert c.measured == REASON


def test_default_decided_fails_when_the_choice_disagreed_somewhere():
    rows = [attn_row("math", seq_len=128), attn_row("math", seq_len=256, rel_err=2e-5)]
    c = checks.default_decided("math", REASON, rows)
    assert c.status == FAIL
    assert "1.23 ms" in c.measured


def test_default_decided_fails_on_a_reason_without_a_number():
    c = checks.default_decided("math", "it felt fastest", [attn_row("math")])
    assert c.status == FAIL
    assert c.measured == "math: it felt fastest"


def test_default_decided_fails_when_the_choice_did_not_run():
    rows = [attn_row("manual"), attn_row("flash", status="skip", reason="needs CUDA")]
    c = checks.default_decided("flash", "flash: 0.5 ms", rows)
    assert c.status == FAIL
    assert c.measured == "'flash' did not run"


def test_default_decided_skips_without_rows():
    c = checks.default_decided("", "", [])
    assert c.status == SKIP
    assert "none ran" in c.reason


def test_default_decided_skips_when_every_backend_was_skipped():
    rows = [attn_row("manual", status="skip", reason="estimated 900 s > budget"),
            attn_row("math", status="skip", reason="estimated 900 s > budget")]
    c = checks.default_decided("", "", rows)
    assert c.status == SKIP


# ---- engine_matches -----------------------------------------------------------------------------------------------


def test_engine_matches_passes_when_every_request_equals_decoding_alone():
    rows = [engine_row(), engine_row("static_batch"), engine_row("hf_generate"),
            engine_row(workload="mixed", concurrency=8)]
    c = checks.engine_matches(rows)
    assert c.status == PASS
    assert c.measured == "4 of 4 rows equal; engine: equal ×4 8/8 equal, 0 leaked, mixed ×8 16/16 equal, 0 leaked"


def test_engine_matches_fails_when_a_request_differs():
    c = checks.engine_matches([engine_row(), engine_row("static_batch", same=7)])
    assert c.status == FAIL
    assert c.measured.startswith("1 of 2 rows equal")


def test_engine_matches_fails_on_leaked_blocks():
    c = checks.engine_matches([engine_row(leaked=2), engine_row("static_batch")])
    assert c.status == FAIL
    assert "equal ×4 8/8 equal, 2 leaked" in c.measured


def test_engine_matches_skips_without_rows():
    c = checks.engine_matches([])
    assert c.status == SKIP
    assert c.reason == "the engine benchmark did not run"


# ---- greedy_rerun -------------------------------------------------------------------------------------------------


def test_greedy_rerun_passes_on_identical_tokens():
    c = checks.greedy_rerun([[1, 2, 3], [4, 5]], [(1, 2, 3), (4, 5)], "this run's first decode")
    assert c.status == PASS
    assert c.measured == "2 of 2 prompts equal (this run's first decode)"


def test_greedy_rerun_fails_when_one_token_differs():
    c = checks.greedy_rerun([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 6]], "recorded by week11/cpu/greedy-0123abcd")
    assert c.status == FAIL
    assert c.measured == "1 of 2 prompts equal (recorded by week11/cpu/greedy-0123abcd)"


def test_greedy_rerun_fails_when_a_prompt_is_missing():
    c = checks.greedy_rerun([[1, 2, 3], [4, 5]], [[1, 2, 3]], "x")
    assert c.status == FAIL
    assert c.measured.startswith("1 of 2 prompts equal")


@pytest.mark.parametrize(("recorded", "rerun"), [(None, [[1]]), ([[1]], None), (None, None)])
def test_greedy_rerun_skips_without_tokens(recorded, rerun):
    c = checks.greedy_rerun(recorded, rerun, "")
    assert c.status == SKIP
    assert c.reason == "no recorded greedy tokens to compare with"


# ---- memo_cites ---------------------------------------------------------------------------------------------------


def memo_text(*bodies: str) -> str:
    """A memo with :data:`SECTIONS` in order, each followed by its body."""
    return "# Inference memo\n\nheader\n\n" + "\n\n".join(f"{h}\n\n{b}" for h, b in zip(SECTIONS, bodies, strict=True))


def cite(table: str, run: str | None = RUN_A) -> str:
    return f"Evidence: [{table}.csv](weekly-logs/week11/{table}.csv)" + (f"; run `{run}`." if run else ".")


def _memo_cites(memo: str, registry: set[str] | None = None, tables=("cache_speedup", "attention", "engine")):
    return checks.memo_cites(memo, list(tables), SECTIONS, {RUN_A, RUN_B} if registry is None else registry,
                             NOT_MEASURED)


def test_memo_cites_passes_when_every_section_links_a_table_and_registered_runs():
    c = _memo_cites(memo_text(f"Cache on. {cite('cache_speedup')}", f"math. {cite('attention', RUN_B)}",
                              f"| table | {cite('engine', None)}"))
    assert c.status == PASS
    assert c.measured == "3 recommending sections, 3 cite a table; 2 run ids quoted, 0 unregistered"


def test_memo_cites_fails_on_a_section_without_a_csv_link():
    c = _memo_cites(memo_text(f"Cache on. {cite('cache_speedup')}", "Default: math (fastest).", cite("engine")))
    assert c.status == FAIL
    assert "3 recommending sections, 2 cite a table" in c.measured
    assert "uncited ['2. Attention backend']" in c.measured


def test_memo_cites_fails_on_an_unregistered_run_id():
    unknown = "week11/cpu/attention-deadbeef"
    c = _memo_cites(memo_text(cite("cache_speedup"), cite("attention", unknown), cite("engine")))
    assert c.status == FAIL
    assert "2 run ids quoted, 1 unregistered" in c.measured
    assert f"unknown runs ['{unknown}']" in c.measured


def test_memo_cites_fails_on_a_missing_section():
    memo = f"# Inference memo\n\n{SECTIONS[0]}\n\n{cite('cache_speedup')}\n\n{SECTIONS[2]}\n\n{cite('engine')}"
    c = _memo_cites(memo)
    assert c.status == FAIL
    assert "missing ['## 2. Attention backend']" in c.measured


def test_memo_cites_exempts_sections_marked_not_measured():
    c = _memo_cites(memo_text(cite("cache_speedup"), f"{NOT_MEASURED}: no attention backend ran.", cite("engine")))
    assert c.status == PASS
    assert c.measured.startswith("2 recommending sections, 2 cite a table")


def test_memo_cites_skips_when_every_section_is_not_measured():
    c = _memo_cites(memo_text(*[f"{NOT_MEASURED}."] * 3))
    assert c.status == SKIP
    assert c.reason == "no stage the memo draws on ran"


# ---- data_links_runs ----------------------------------------------------------------------------------------------


def test_data_links_runs_passes_when_every_row_has_a_registered_run():
    c = checks.data_links_runs({"cache_speedup": [RUN_A, RUN_A], "attention": [RUN_B]}, {RUN_A, RUN_B})
    assert c.status == PASS
    assert c.measured == "2 of 2 CSVs linked (2 runs)"


@pytest.mark.parametrize("ids", [[RUN_A, ""], [RUN_A, "week11/cpu/engine-00000000"], []],
                         ids=["row without run id", "unregistered run id", "no rows"])
def test_data_links_runs_fails_on_an_unlinked_csv(ids):
    c = checks.data_links_runs({"cache_speedup": [RUN_A], "engine": ids}, {RUN_A, RUN_B})
    assert c.status == FAIL
    assert c.measured.startswith("1 of 2 CSVs linked")
    assert c.measured.endswith("; unlinked: engine")


def test_data_links_runs_skips_without_csvs():
    c = checks.data_links_runs({}, {RUN_A})
    assert c.status == SKIP
    assert c.reason == "no benchmark CSV was written"


# ---- int8_tradeoff ------------------------------------------------------------------------------------------------

FP32_BYTES, INT8_BYTES = 500 * 2**20, 200 * 2**20


def test_int8_tradeoff_passes_when_smaller_and_within_the_bound():
    rows = [quant_row("fp32", FP32_BYTES, 30.0, 200.0), quant_row("int8", INT8_BYTES, 30.3, 260.0)]
    c = checks.int8_tradeoff(rows, 1.10)
    assert c.status == PASS
    assert c.measured == ("size 500.00 → 200.00 MiB; perplexity 30.000 → 30.300 (×1.0100); "
                          "decode 200 → 260 tokens/s")


def test_int8_tradeoff_fails_on_a_ppl_ratio_above_the_bound():
    rows = [quant_row("fp32", FP32_BYTES, 30.0, 200.0), quant_row("int8", INT8_BYTES, 36.0, 260.0)]
    c = checks.int8_tradeoff(rows, 1.10)
    assert c.status == FAIL
    assert "(×1.2000)" in c.measured


def test_int8_tradeoff_fails_when_int8_is_not_smaller():
    rows = [quant_row("fp32", FP32_BYTES, 30.0, 200.0), quant_row("int8", FP32_BYTES, 30.1, 260.0)]
    c = checks.int8_tradeoff(rows, 1.10)
    assert c.status == FAIL
    assert "size 500.00 → 500.00 MiB" in c.measured


def test_int8_tradeoff_skips_when_perplexity_was_not_measured():
    rows = [quant_row("fp32", FP32_BYTES, None, 200.0), quant_row("int8", INT8_BYTES, None, 260.0)]
    c = checks.int8_tradeoff(rows, 1.10)
    assert c.status == SKIP
    assert "perplexity not measured" in c.reason


def test_int8_tradeoff_skips_when_the_stage_did_not_run():
    c = checks.int8_tradeoff([], 1.10)
    assert c.status == SKIP
    assert c.reason == "the quantisation stage did not run"


# ---- onnx_agrees --------------------------------------------------------------------------------------------------


def test_onnx_agrees_passes_within_atol():
    c = checks.onnx_agrees([agreement_row(3e-6), agreement_row(5e-6, batch=1, seq_len=17)], 1e-4)
    assert c.status == PASS
    assert c.measured == "max |Δ| 5.0e-06 over shapes onnxruntime (2, 64), onnxruntime (1, 17)"


def test_onnx_agrees_fails_above_atol():
    c = checks.onnx_agrees([agreement_row(3e-6), agreement_row(2e-4, batch=1, seq_len=17)], 1e-4)
    assert c.status == FAIL
    assert c.measured.startswith("max |Δ| 2.0e-04")
    assert c.criterion.startswith("max |Δ logits| ≤ 0.0001")


def test_onnx_agrees_skips_without_rows():
    c = checks.onnx_agrees([], 1e-4)
    assert c.status == SKIP
    assert c.reason == "the export stage did not run"


# ---- chat_page_streams --------------------------------------------------------------------------------------------


def test_chat_page_streams_passes_on_several_updates():
    c = checks.chat_page_streams(chat_result(), "")
    assert c.status == PASS
    assert c.measured == "20 characters in 3 updates, 0 page errors, 2.5 s"


def test_chat_page_fails_on_one_update_only():
    c = checks.chat_page_streams(chat_result(lengths=[0, 20, 20]), "")
    assert c.status == FAIL
    assert "in 1 updates" in c.measured


def test_chat_page_fails_on_a_page_error():
    c = checks.chat_page_streams(chat_result(errors=["TypeError: x is undefined"]), "")
    assert c.status == FAIL
    assert "1 page errors" in c.measured


def test_chat_page_fails_on_an_empty_answer():
    c = checks.chat_page_streams(chat_result(answer="   "), "")
    assert c.status == FAIL
    assert c.measured.startswith("3 characters")


def test_chat_page_skips_with_the_given_reason():
    c = checks.chat_page_streams(None, "chat.browser=false in this profile")
    assert c.status == SKIP
    assert c.reason == "chat.browser=false in this profile"
    assert checks.chat_page_streams(None, "").reason == "the chat stage did not run"


# ---- within_time --------------------------------------------------------------------------------------------------


def test_within_time_passes_inside_the_budget():
    c = checks.within_time(1234.4, 1800.0)
    assert c.status == PASS
    assert (c.measured, c.criterion) == ("1,234 s", "≤ 1,800 s")


def test_within_time_fails_over_the_budget():
    c = checks.within_time(2500.0, 1800.0)
    assert c.status == FAIL
    assert c.measured == "2,500 s"


def test_within_time_counts_the_recorded_time_of_reused_runs():
    c = checks.within_time(60.0, 1800.0, reused_s=1790.0)  # a quick rerun of an over-budget week still fails
    assert c.status == FAIL
    assert c.measured == "1,850 s (this run 60 s + 1,790 s recorded by the reused runs)"
