"""Week 11's log and memo: tables (each a CSV with the run id of every row), plots, the checks, and
``docs/inference-memo.md``, all from :class:`week11_inference.experiments.WeekResults`."""

from __future__ import annotations

import os
import time
from typing import Any

import pandas as pd

from shared.paths import REPO_ROOT
from week11_inference import checks, memo
from week11_inference.config import Week11Config
from week11_inference.experiments import WeekResults, serving_results
from week11_inference.serving import serving_checks

GPU_ONLY = ("efficient", "cudnn")  # SDPA backends without a CPU kernel (bench_attention's names)


class _Tables:
    """The log's tables, remembering each CSV's run ids (for the check and the memo's links)."""

    def __init__(self, log: Any) -> None:
        self.log, self.paths, self.run_ids = log, {}, {}

    def add(self, rows: list[dict[str, Any]], name: str, caption: str, columns: list[str] | None = None,
            show: bool = True) -> None:
        if not rows:
            return
        df = pd.DataFrame(rows)
        if columns:
            df = df[[c for c in columns if c in df.columns] + (["run_id"] if "run_id" in df.columns else [])]
        df = df.drop(columns=[c for c in ("table",) if c in df.columns])
        self.paths[name] = self.log.table(df, name, caption, show)
        if "run_id" in df.columns:
            self.run_ids[name] = [str(x) for x in df["run_id"]]


def _engine_plot(rows: list[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for system in dict.fromkeys(r["system"] for r in rows):
        pts = sorted((r["concurrency"], r["tokens_per_sec"]) for r in rows if r["system"] == system)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", label=system)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("aggregate tokens/s")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def write_log(cfg: Week11Config, profile: str, overrides: list[str], res: WeekResults, t0: float) -> int:
    """Write the week's log (and the memo); returns the week's exit code (0 = no check failed)."""
    from shared.atomic import atomic_write_text
    from shared.cli import command_line
    from shared.report import WeeklyLog, log_dir
    from shared.repro import environment
    from shared.results import read_runs

    env = environment()
    log = WeeklyLog("week11", "Week 11 — Inference: KV cache, attention backends, an engine, serving, quantisation",
                    log_dir("week11", profile))
    t = _Tables(log)
    res.timings["total (before the log)"] = time.perf_counter() - t0
    log.header(env, profile, command_line("week11_inference", profile, overrides), {
        "wall clock (s)": f"{res.timings['total (before the log)']:.1f}", **res.facts,
        "runs": ", ".join(f"{k}: {m.run_id}" + (f" (reused, commit {m.git_commit[:12]})" if m.reused else "")
                          for k, m in res.measured.items())})

    cache_rows = res.rows("cache-check")
    cells = res.rows("cache-bench", "cells") + res.rows("hf-cache-bench", "cells")
    speed = res.rows("cache-bench", "speedup") + res.rows("hf-cache-bench", "speedup")
    memory = res.rows("cache-bench", "memory") + res.rows("hf-cache-bench", "memory")
    attn = res.rows("attention")
    engine = res.rows("engine")
    serving = serving_results(res)
    quant, quant_hf = res.rows("quantize"), res.rows("quantize-hf")
    agree, ex_speed = res.rows("export", "agreement"), res.rows("export", "speed")

    log.section("KV cache: equal to no cache", "Greedy decoding with the hand-written cache (`shared.nn.kv_cache`, "
                "`shared.models.decode`) against rerunning the whole prefix, on the project's GPT with both attention "
                "backends (a left-padded batch, each row at its own positions) and through `transformers` "
                "(`generate(use_cache=True/False)`): tokens and every step's logits.")
    t.add(cache_rows, "cache_check", "Cache vs no cache.", ["model", "attn_backend", "batch", "prompt_lens",
                                                            "new_tokens", "n_steps", "tokens_equal", "max_abs_diff",
                                                            "max_rel_diff", "tol", "tol_kind", "ok"])
    log.section("KV cache: speed and memory", "Tokens/s, time to first token and per-token latency with and without "
                "the cache (random weights of the GPT-2-small shape, and SmolLM2-135M through `transformers`); cells "
                "that would not fit the profile's time budget are listed with their estimate and reason.")
    t.add(speed, "cache_speedup", "Speed-up = no-cache time / cache time.")
    t.add(cells, "cache_cells", "Every cell.", show=False)
    t.add(memory, "cache_memory", "Cache bytes, measured beside the formula.")
    if cells:
        from week11_inference.bench_cache import plot as cache_plot

        cache_plot([c for c in cells if c["status"] == "ok"], log.asset_dir / "cache_speed.png",
                   [m for m in memory if m["model"] == "gpt"])
        log.text("![tokens/s and per-token latency with and without the cache](week11/cache_speed.png)")

    log.section("Attention backends", "The hand-written attention and `torch.nn.attention.sdpa_kernel`'s backends "
                "against an fp64 reference, causal, vs sequence length; time and peak memory.")
    t.add(attn, "attention", "Attention backends.", ["backend", "dtype", "device", "seq_len", "status", "reason",
                                                     "time_ms", "peak_bytes", "score_bytes", "rel_err", "tol",
                                                     "agree", "threads"])
    if any(r["status"] == "ok" for r in attn):
        from week11_inference.bench_attention import plot as attn_plot

        attn_plot(attn, log.asset_dir / "attention.png")
        log.text("![attention time and memory vs sequence length](week11/attention.png)")
    log.text(f"Default chosen: **{res.attention_default[0] or 'none'}** — {res.attention_default[1]}")

    log.section("The engine: continuous batching over a paged KV cache", "`shared.serve.engine` (a request queue, "
                "iteration-level scheduling, `shared.serve.paged_kv` block tables) against static batching with the "
                "contiguous cache and Hugging Face `generate` on the same weights; same prompts, same lengths, greedy.")
    t.add(engine, "engine", "Aggregate tokens/s; same_as_alone = requests whose tokens equal decoding them alone.")
    if engine:
        log.plot(_engine_plot(engine), "engine", "Aggregate tokens/s vs concurrent requests")

    log.section("Serving: vLLM and llama.cpp on 127.0.0.1", "OpenAI-compatible servers started by "
                "`shared.serve.server` and measured by `shared.serve.client` (streaming requests).")
    t.add(serving.engines, "serving_engines", "Engines.", show=True,
          columns=["engine", "status", "reason", "model", "ready_s", "threads", "load_1m"])
    t.add(serving.bench, "serving_bench", "Client benchmark per concurrency level.")
    t.add(serving.agreement, "serving_agreement", "Greedy completions vs HF generate fp32, by log-prob.")
    for note in serving.notes:
        log.text(f"- {note}")

    log.section("Models of weeks 7–9", "Each export answered the same questions greedily through `transformers` "
                "(KV cache, batch 1).")
    stage = [{**{k: v for k, v in r.items() if k != "answers"},
              "first answer": (r.get("answers") or [""])[0][:160]} for r in res.rows("stage-models")]
    t.add(stage, "stage_models", "Load time, tokens/s and the first answer.")

    log.section("Quantisation (int8 dynamic, `torch.ao`)", "Linear layers in int8 with per-token activation scales "
                "computed at run time; the tied LM head stays fp32.")
    t.add(quant, "quantize", "The project's GPT, fp32 vs int8.")
    t.add([{k: v for k, v in r.items() if k != "answers"} for r in quant_hf], "quantize_hf",
          "The week-7 SFT model, fp32 vs int8, with the week-7 harness.")
    log.section("Exported inference: torch.export and ONNX")
    t.add(agree, "export_agreement", "onnxruntime vs eager logits.")
    t.add(ex_speed, "export_speed", "Forward speed.")

    log.section("Chat page", "`make chat`'s page (FastAPI, server-sent events) opened in headless Chromium over the "
                "project's GPT: the answer's length at every update while it streamed.")
    if res.chat:
        log.text(f"Answer ({len(res.chat['answer'])} characters, {len(set(res.chat['lengths']) - {0})} updates): "
                 f"`{res.chat['answer'][:200]!r}`; stats line: {res.chat['stats']}")
    else:
        log.text(f"Not run: {res.skipped.get('chat', 'not in this profile')}.")

    registry = {r["run_id"] for r in read_runs()}
    memo_path = (REPO_ROOT / "docs" / ("inference-memo.md" if profile == "cpu" else f"inference-memo-{profile}.md")) \
        if profile != "smoke" else log.asset_dir / "inference-memo.md"
    links = {n: os.path.relpath(p, memo_path.parent) for n, p in t.paths.items()}
    hardware = f"Measured on {env.get('cpu') or 'this machine'} at commit {str(env.get('git_commit'))[:12]}" \
               f"{' (dirty)' if env.get('git_dirty') else ''}, profile {profile}; the log: " \
               f"[{os.path.relpath(log.md_path, memo_path.parent)}]({os.path.relpath(log.md_path, memo_path.parent)})."
    text = memo.render_memo({
        "cache_speedup": speed, "cache_memory": memory, "attention": attn,
        "attention_choice": res.attention_default, "flash_attn": res.facts.get("flash_attn", ""),
        "engine": engine, "serving_bench": serving.bench, "serving_engines": serving.engines,
        "quantize": quant, "quantize_hf": quant_hf, "quant_ratio_max": cfg.check.int8_ppl_ratio_max,
        "export_agreement": agree, "export_speed": ex_speed}, links, hardware)
    atomic_write_text(memo_path, text)
    log.text(f"The memo: [{os.path.relpath(memo_path, log.out_dir)}]({os.path.relpath(memo_path, log.out_dir)})")

    backend, reason = res.attention_default
    recorded = [r["tokens"] for r in res.rows("greedy")]
    greedy = res.measured.get("greedy")
    source = "this run's first decode" if greedy and not greedy.reused else \
        f"recorded by {greedy.run_id} at {greedy.git_commit[:12]}" if greedy else ""
    log.add(
        checks.cache_matches(cache_rows),
        checks.speedup_and_memory(speed, memory, cfg.cache_bench.name, cfg.check.cache_speedup_tokens,
                                  cfg.check.cache_speedup_min, cfg.check.memory_rtol),
        checks.sdpa_agree(attn),
        checks.gpu_backends(attn, GPU_ONLY),
        checks.default_decided(backend, reason, attn),
        checks.engine_matches(engine),
        *serving_checks(serving),
        checks.int8_tradeoff(quant, cfg.check.int8_ppl_ratio_max),
        checks.onnx_agrees(agree, cfg.check.onnx_atol),
        checks.chat_page_streams(res.chat, res.skipped.get("chat", "")),
        checks.greedy_rerun(recorded, res.greedy_now, source),
        checks.memo_cites(text, list(links), memo.SECTIONS, registry, memo.NOT_MEASURED),
        checks.data_links_runs(t.run_ids, registry),
    )
    log.section("Timings")
    t.add([{"stage": k, "seconds": round(v, 1)} for k, v in res.timings.items()], "timings", "Wall time per stage.")
    log.config(cfg)
    total = time.perf_counter() - t0
    reused = sum(m.seconds for m in res.measured.values() if m.reused)
    log.add(checks.within_time(total, cfg.check.time_budget_s, reused))
    return log.finish(total)
