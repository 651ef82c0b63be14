"""The week's stages: each measurement runs inside its own run (:func:`week11_inference.runs.measure`) and leaves
plain rows on :class:`WeekResults`; the log, the checks and the memo read only those rows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.models.gpt import GPT, GPTConfig
from shared.paths import models_root
from shared.profiling import torch_threads
from shared.tracking import console
from week11_inference.config import Week11Config
from week11_inference.runs import Measured, measure

# The week-7 eval set, read as data by path (never imported): its pinned sha256, as week 7 records it.
EVAL_SET = Path("week07_sft/data/eval_set.jsonl")
EVAL_SET_SHA256 = "19c7a0726842071f9c1a1acc36c2ed96e6f6ee323099a0884ea8e246d62133e2"


@dataclass
class Subject:
    """The project's GPT the week measures: the model, its tokenizer (None for the debug GPT), tokens its prompts
    are cut from (the val stream), and its identity for the run keys."""

    name: str
    model: GPT
    tokenizer: Any
    tokens: np.ndarray
    weights: str


@dataclass
class WeekResults:
    """Everything the log reads."""

    profile: str
    measured: dict[str, Measured] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    chat: dict[str, Any] | None = None
    greedy_now: list[list[int]] | None = None
    attention_default: tuple[str, str] = ("", "")

    def rows(self, name: str, table: str | None = None) -> list[dict[str, Any]]:
        """The rows of measurement ``name`` (those of one ``table`` when the measurement holds several)."""
        m = self.measured.get(name)
        if m is None:
            return []
        return [r for r in m.rows if table is None or r.get("table") == table]


def load_subject(cfg: Week11Config) -> Subject:
    """The project's GPT of ``models.gpt`` (an HF-format export with its tokenizer, e.g. week 10's FSDP2-trained
    week-5 recipe) with its val tokens, or the seeded debug GPT over random tokens when ``models.gpt`` is empty.

    Raises:
        FileNotFoundError: the export is missing (the message names the command that writes it).
    """
    if not cfg.models.gpt:
        d = cfg.debug_gpt
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=d.vocab_size, block_size=d.block_size, n_layer=d.n_layer, n_head=d.n_head,
                              n_embd=d.n_embd)).eval()
        tokens = np.random.default_rng(0).integers(0, d.vocab_size, 20_000)
        return Subject("debug-gpt", model, None, tokens, "seed0")
    from shared.data.corpus import CorpusConfig
    from shared.data.tokenizer import load_tokenizer
    from shared.models.hf import load_hf
    from shared.models.loading import weights_sha256
    from week11_inference.quantize import lm_val_tokens

    folder = models_root() / cfg.models.gpt
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"models.gpt={cfg.models.gpt}: {folder} holds no exported model. Run `make week10 "
                                "PROFILE=cpu` (it exports models/week10/lm-fsdp2), or set models.gpt= to use the "
                                "random debug GPT")
    tok = load_tokenizer(folder)
    tokens = lm_val_tokens(CorpusConfig(corpus=cfg.models.gpt_corpus), tok)
    return Subject(cfg.models.gpt, load_hf(folder).eval(), tok, np.asarray(tokens), weights_sha256(folder)[:16])


def _hf_folder(cfg: Week11Config) -> Path | None:
    """SmolLM2's converted folder (``make models``), or None when ``models.hf`` is empty (smoke)."""
    if not cfg.models.hf:
        return None
    from shared.models.fetch import prepare_model

    return prepare_model(cfg.models.hf)


def _timed(res: WeekResults, label: str, fn: Any) -> Any:
    t = time.perf_counter()
    try:
        return fn()
    finally:
        res.timings[label] = time.perf_counter() - t


def cache_check_stage(cfg: Week11Config, subj: Subject, res: WeekResults) -> None:
    """Cache = no cache on the project's GPT (both attention backends, a left-padded batch) and through
    transformers (SmolLM2, or a tiny random Llama in smoke)."""
    from week11_inference.cache_check import cache_equality, hf_cache_equality, random_prompts

    c = cfg.cache_check
    hf_dir = _hf_folder(cfg)

    def run() -> list[dict[str, Any]]:
        m = subj.model
        n = min(c.gpt_new_tokens, m.cfg.block_size - max(c.prompt_lengths))
        prompts = random_prompts(c.prompt_lengths, m.cfg.vocab_size)
        rows = [cache_equality(m, prompts, n, attn_backend=b, name=subj.name) for b in ("manual", "torch")]
        if c.hf:
            from transformers import AutoModelForCausalLM

            from shared.models.tiny import tiny_llama

            hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), local_files_only=True, dtype=torch.float32) \
                if hf_dir else tiny_llama(512)
            ids = torch.tensor(random_prompts([16], hf.config.vocab_size, seed=1))
            # SmolLM2's 30 layers give logits up to ~36: judged relative to their scale (cache_check's docstring)
            rows.append(hf_cache_equality(hf.eval(), ids, c.hf_new_tokens, name=cfg.models.hf or "tiny-llama",
                                          relative=bool(hf_dir)))
        return rows

    res.measured["cache-check"] = _timed(res, "cache = no cache", lambda: measure(
        "cache-check", res.profile, c, run, lambda r: {"all_ok": all(x["ok"] for x in r)}, cfg.runs.fresh,
        {"gpt": f"{subj.name}@{subj.weights}", "hf": cfg.models.hf}))


def cache_bench_stage(cfg: Week11Config, res: WeekResults) -> None:
    """With vs without the cache on the GPT-2-small shape (random weights) and on SmolLM2; cache bytes beside the
    formula."""
    from week11_inference.bench_cache import bench_gpt, bench_hf, build_gpt, cache_memory_rows, speedup

    def run_gpt() -> list[dict[str, Any]]:
        model = build_gpt(cfg.cache_bench)
        with torch_threads(0):  # the bench sets cache_bench.threads; the next stage gets the count back
            rows = bench_gpt(model, cfg.cache_bench)
        return ([{"table": "cells", **r} for r in rows] + [{"table": "speedup", **r} for r in speedup(rows)]
                + [{"table": "memory", **r} for r in cache_memory_rows(model, cfg.cache_bench.batches,
                                                                        cfg.cache_bench.new_tokens)])

    res.measured["cache-bench"] = _timed(res, "cache benchmark (124M shape)", lambda: measure(
        "cache-bench", res.profile, cfg.cache_bench, run_gpt, _speedup_summary, cfg.runs.fresh))
    hf_dir = _hf_folder(cfg)
    if hf_dir is None:
        res.skipped["hf-cache-bench"] = "models.hf is empty in this profile (no SmolLM2)"
        return

    def run_hf() -> list[dict[str, Any]]:
        with torch_threads(0):
            rows = bench_hf(hf_dir, cfg.hf_cache_bench, name=cfg.models.hf)
        return ([{"table": "cells", **r} for r in rows] + [{"table": "speedup", **r} for r in speedup(rows)]
                + [{"table": "memory", **r} for r in cache_memory_rows(None, hf_rows=rows)])

    res.measured["hf-cache-bench"] = _timed(res, "cache benchmark (SmolLM2)", lambda: measure(
        "hf-cache-bench", res.profile, cfg.hf_cache_bench, run_hf, _speedup_summary, cfg.runs.fresh,
        {"hf": cfg.models.hf}))


def _restoring_threads(fn: Any, *args: Any) -> Any:
    with torch_threads(0):
        return fn(*args)


def _speedup_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {f"speedup_b{r['batch']}_n{r['new_tokens']}": round(r["speedup"], 3)
            for r in rows if r.get("table") == "speedup"}


def attention_stage(cfg: Week11Config, res: WeekResults) -> None:
    """The attention backends vs sequence length; the default chosen from the numbers."""
    from week11_inference.bench_attention import bench_attention, choose_default, flash_attn_available

    res.measured["attention"] = _timed(res, "attention backends", lambda: measure(
        "attention", res.profile, cfg.attention, lambda: _restoring_threads(bench_attention, cfg.attention),
        lambda r: {"cells_ran": sum(x["status"] == "ok" for x in r)}, cfg.runs.fresh))
    rows = res.rows("attention")
    res.attention_default = choose_default(rows) if any(r["status"] == "ok" for r in rows) else ("", "")
    res.facts["flash_attn"] = flash_attn_available()[1]


def engine_stage(cfg: Week11Config, subj: Subject, res: WeekResults) -> None:
    """The engine vs static batching vs HF generate at each concurrency, on the project's GPT."""
    from week11_inference.bench_engine import bench_engine

    tokens = torch.as_tensor(subj.tokens[: 50_000].astype(np.int64))
    res.measured["engine"] = _timed(res, "engine benchmark", lambda: measure(
        "engine", res.profile, cfg.engine, lambda: bench_engine(subj.model, tokens, cfg.engine, subj.name),
        lambda r: {f"{x['system']}_c{x['concurrency']}_tok_s": x["tokens_per_sec"] for x in r}, cfg.runs.fresh,
        {"gpt": f"{subj.name}@{subj.weights}"}))


def stage_models_stage(cfg: Week11Config, res: WeekResults) -> None:
    """Greedy answers and tokens/s of SmolLM2 and the weeks 7–9 exports."""
    from shared.models.loading import weights_sha256
    from week11_inference.stage_models import stage_models_rows

    if not cfg.stage_models.models:
        res.skipped["stage-models"] = "stage_models.models is empty in this profile"
        return
    inputs = {m: weights_sha256(models_root() / m)[:16] if (models_root() / m / "config.json").is_file() else "missing"
              for m in cfg.stage_models.models}
    res.measured["stage-models"] = _timed(res, "weeks 7-9 models", lambda: measure(
        "stage-models", res.profile, cfg.stage_models, lambda: stage_models_rows(cfg.stage_models),
        lambda r: {x["model"]: x.get("tokens_per_sec") for x in r}, cfg.runs.fresh, inputs))


def quantize_stage(cfg: Week11Config, subj: Subject, res: WeekResults) -> None:
    """int8 dynamic quantisation: the project's GPT (size, speed, val perplexity) and, when configured, the week-7
    SFT export (size, speed, the week-7 harness)."""
    from week11_inference.quantize import compare_gpt, compare_hf

    val = subj.tokens  # compare_gpt scores its first quantize.ppl_tokens
    res.measured["quantize"] = _timed(res, "int8 quantisation (GPT)", lambda: measure(
        "quantize", res.profile, cfg.quantize, lambda: compare_gpt(subj.model, val, subj.name, cfg.quantize),
        lambda r: {f"{x['variant']}_ppl": x.get("ppl") for x in r}, cfg.runs.fresh,
        {"gpt": f"{subj.name}@{subj.weights}"}))
    q = cfg.quantize_hf
    folder = models_root() / q.model
    if not q.items:
        res.skipped["quantize-hf"] = "quantize_hf.items = 0 in this profile"
        return
    if not (folder / "config.json").is_file() or not EVAL_SET.is_file():
        res.skipped["quantize-hf"] = f"{folder} or {EVAL_SET} is missing: run `make week07 PROFILE=cpu` first"
        return

    def run_hf() -> list[dict[str, Any]]:
        from shared.evals.instruct import HarnessConfig, read_pinned_items
        from shared.models.loading import load_any_lm

        lm = load_any_lm(str(folder))
        items, _ = read_pinned_items(str(EVAL_SET), EVAL_SET_SHA256, q.items)
        return compare_hf(lm.model, lm.tokenizer, items, q.template,
                          HarnessConfig(max_new_tokens=q.max_new_tokens, batch_size=q.items), q.model, cfg.quantize)

    from shared.models.loading import weights_sha256

    res.measured["quantize-hf"] = _timed(res, "int8 quantisation (week-7 SFT model)", lambda: measure(
        "quantize-hf", res.profile, q, run_hf, lambda r: {f"{x['variant']}_rougeL": x.get("rougeL") for x in r},
        cfg.runs.fresh, {"sft": f"{q.model}@{weights_sha256(folder)[:16]}", "quant": str(cfg.quantize)}))


def export_stage(cfg: Week11Config, subj: Subject, res: WeekResults) -> None:
    """``torch.export`` + ONNX of the project's GPT into ``models/week11/``; onnxruntime's agreement and speed."""
    from week11_inference.export import export_and_check

    out_dir = models_root() / "week11" / "onnx"

    def run() -> list[dict[str, Any]]:
        got = export_and_check(subj.model, out_dir, cfg.export)
        path = str(Path(got["onnx_path"]).relative_to(models_root().parent)) \
            if Path(got["onnx_path"]).is_relative_to(models_root().parent) else got["onnx_path"]
        common = {"onnx_path": path, "onnx_bytes": got["onnx_bytes"], "dynamic": got["dynamic"]}
        return ([{"table": "agreement", **common, **r} for r in got["agreement"]]
                + [{"table": "speed", **common, **r} for r in got["speed"]])

    res.measured["export"] = _timed(res, "torch.export + ONNX", lambda: measure(
        "export", res.profile, cfg.export, run, lambda r: {"max_abs_diff": max(
            x["max_abs_diff"] for x in r if x["table"] == "agreement")}, cfg.runs.fresh,
        {"gpt": f"{subj.name}@{subj.weights}"}))


def serving_stage(cfg: Week11Config, res: WeekResults) -> None:
    """vLLM and llama.cpp on localhost (each SKIP with the exact reason when not installed or not started)."""
    from week11_inference.serving import run_serving

    def run() -> list[dict[str, Any]]:
        logs = _serving_dir(res.profile)
        logs.mkdir(parents=True, exist_ok=True)
        res.facts["serving_logs"] = str(logs)
        got = run_serving(cfg.serving, logs)
        return ([{"table": "engines", **r} for r in got.engines] + [{"table": "bench", **r} for r in got.bench]
                + [{"table": "agreement", **r} for r in got.agreement]
                + [{"table": "notes", "note": n} for n in got.notes])

    res.measured["serving"] = _timed(res, "serving (vLLM, llama.cpp)", lambda: measure(
        "serving", res.profile, cfg.serving, run, lambda r: {
            f"{x['engine']}_c{x['concurrency']}_tok_s": x.get("agg_tok_s") for x in r if x["table"] == "bench"},
        cfg.runs.fresh, {"hf": cfg.serving.model}))


def _serving_dir(profile: str) -> Path:
    from shared.paths import runs_root

    return runs_root() / "week11" / profile / "serve-logs"


def serving_results(res: WeekResults) -> Any:
    """The recorded serving rows back as :class:`week11_inference.serving.ServingResults` (for its checks)."""
    from week11_inference.serving import ServingResults

    part = {t: [{k: v for k, v in r.items() if k != "table"} for r in res.rows("serving", t)]
            for t in ("engines", "bench", "agreement")}
    return ServingResults(part["engines"], part["bench"], part["agreement"],
                          [r["note"] for r in res.rows("serving", "notes")])


def chat_stage(cfg: Week11Config, subj: Subject, res: WeekResults) -> None:
    """The chat page over the project's GPT (its own tokenizer), opened in headless Chromium."""
    from week11_inference.chat.app import LocalBackend, create_app
    from week11_inference.chat.browser_check import browser_missing, browser_roundtrip, serve_in_thread

    why = browser_missing() if cfg.chat.browser else "chat.browser=false in this profile"
    if why:
        res.skipped["chat"] = why
        return
    if subj.tokenizer is None:
        from shared.data.text import CharTokenizer

        backend = LocalBackend.from_model(subj.model, CharTokenizer(_ALPHABET * 8), subj.name)
    else:
        backend = LocalBackend.from_model(subj.model, subj.tokenizer, subj.name)
    t = time.perf_counter()
    with serve_in_thread(create_app(backend)) as url:
        res.chat = browser_roundtrip(url, cfg.chat.prompt, cfg.chat.max_tokens)
    res.timings["chat page in Chromium"] = time.perf_counter() - t
    console(f"week11: chat page answered {len(res.chat['answer'])} characters in {res.chat['seconds']:.1f} s")


_ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?:\n'ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def greedy_stage(cfg: Week11Config, subj: Subject, res: WeekResults) -> None:
    """Fixed prompts decoded greedily (the engine) are recorded once; every run decodes them again and compares."""
    from shared.models.decode import SamplingConfig
    from shared.serve.engine import Engine

    g = cfg.greedy
    length = min(16, subj.model.cfg.block_size - g.new_tokens)
    stride = max(1, (len(subj.tokens) - length) // g.prompts)
    prompts = [subj.tokens[i * stride: i * stride + length].tolist() for i in range(g.prompts)]

    def decode() -> list[list[int]]:
        return Engine(subj.model).generate(prompts, SamplingConfig(max_new_tokens=g.new_tokens))

    res.measured["greedy"] = measure("greedy", res.profile, g, lambda: [{"prompt": p, "tokens": t} for p, t in
                                                                        zip(prompts, decode(), strict=True)],
                                     None, False, {"gpt": f"{subj.name}@{subj.weights}"})
    res.greedy_now = decode()
