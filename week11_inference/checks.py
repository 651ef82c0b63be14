"""The plan's checks for week 11, each a pure function of the run's results: rows in, a ``Check`` out."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from shared.report import Check

Row = Mapping[str, Any]


def cache_matches(rows: Sequence[Row]) -> Check:
    """Greedy decoding with the KV cache equals decoding without it: the same tokens, and logits within each row's
    tolerance at every step (rows of :mod:`week11_inference.cache_check`: the project's GPT with both attention
    backends, SmolLM2 through transformers)."""
    name = "cache outputs match no-cache (tokens equal, logits within tolerance at every step)"
    crit = "every model: tokens equal and max |Δ logits| ≤ tol (fp32 1e-5; relative to max |logit| for SmolLM2)"
    if not rows:
        return Check.skip(name, "no cache-equality row ran", crit)
    parts = [f"{r['model']}/{r.get('attn_backend') or '-'} B={r['batch']} {r['n_steps']} steps: "
             f"{'equal' if r['tokens_equal'] else 'DIFFERENT'} tokens, max |Δ| {r['max_abs_diff']:.1e}"
             + (f" (rel {r['max_rel_diff']:.1e})" if r.get("tol_kind") == "relative" else "") for r in rows]
    return Check.judge(name, all(bool(r["ok"]) for r in rows), "; ".join(parts), crit)


def speedup_and_memory(speedups: Sequence[Row], memory: Sequence[Row], model: str, new_tokens: int, target: float,
                       rtol: float) -> Check:
    """The cache's speed-up at ``new_tokens`` new tokens, batch 1, on ``model`` reaches ``target`` (the plan's CPU
    target: 5× for the 124M shape at 512), and every measured cache size equals its formula
    ``2 · n_layer · B · T · n_embd · bytes`` within ``rtol``."""
    name = f"KV cache speed-up ≥ {target:g}× at {new_tokens} new tokens (batch 1) and cache memory = its formula"
    crit = f"tokens/s with / without ≥ {target:g} on {model}; |measured / formula − 1| ≤ {rtol:g} for every row"
    cell = next((r for r in speedups if r["model"] == model and r["batch"] == 1 and r["new_tokens"] == new_tokens),
                None)
    if cell is None or not cell.get("measured"):
        why = "was not measured" if cell is None else "ran with the cache only (the no-cache time is an estimate)"
        return Check.skip(name, f"the ({model}, batch 1, {new_tokens} tokens) cell {why} in this profile", crit)
    off = [r for r in memory if abs(r["measured_bytes"] / r["formula_bytes"] - 1) > rtol]
    text = (f"{cell['speedup']:.1f}× ({cell['no_cache_s']:.1f} s without the cache, {cell['cache_s']:.1f} s with it; "
            f"tokens {'equal' if cell['tokens_equal'] else 'DIFFERENT'}); {len(memory) - len(off)} of {len(memory)} "
            "cache sizes equal their formula")
    return Check.judge(name, cell["speedup"] >= target and bool(cell["tokens_equal"]) and bool(memory) and not off,
                       text, crit)


def sdpa_agree(rows: Sequence[Row]) -> Check:
    """Every attention backend that ran (hand-written, SDPA math / Flash / memory-efficient / cuDNN) agrees with the
    fp64 reference within its dtype's tolerance at every sequence length (rows of
    :func:`week11_inference.bench_attention.bench_attention`)."""
    name = "SDPA backends numerically stable: each agrees with an fp64 reference within its dtype's tolerance"
    crit = "relative error ≤ tol (fp32 1e-5, bf16 1e-2) for every (backend, dtype, length) that ran"
    ran = [r for r in rows if r["status"] == "ok"]
    if not ran:
        return Check.skip(name, "no attention backend ran", crit)
    bad = [r for r in ran if not r["agree"]]
    backends = sorted({r["backend"] for r in ran})
    worst = max(ran, key=lambda r: r["rel_err"] / r["tol"])
    text = (f"{len(ran) - len(bad)} of {len(ran)} cells agree ({', '.join(backends)}); closest to its tolerance: "
            f"{worst['backend']} {worst['dtype']} T={worst['seq_len']} {worst['rel_err']:.1e} (tol {worst['tol']:g})")
    if bad:
        text += "; off: " + ", ".join(f"{r['backend']}/{r['dtype']}/T={r['seq_len']}" for r in bad[:4])
    return Check.judge(name, not bad, text, crit)


def gpu_backends(rows: Sequence[Row], gpu_only: Sequence[str]) -> Check:
    """The GPU-only SDPA backends (``gpu_only``) ran and agreed; SKIP with their error when none of them could run
    on this machine (a CPU)."""
    name = f"GPU-only attention backends ({', '.join(gpu_only)}) agree with the reference"
    crit = "every cell of these backends ran and agreed"
    mine = [r for r in rows if r["backend"] in gpu_only]
    ran = [r for r in mine if r["status"] == "ok"]
    if not ran:
        reason = next((r["reason"] for r in mine if r.get("reason")), "not in this run's backends")
        return Check.skip(name, f"none ran here: {reason}", crit)
    bad = [r for r in ran if not r["agree"]]
    return Check.judge(name, not bad, f"{len(ran) - len(bad)} of {len(ran)} cells agree", crit)


def default_decided(choice: str, reason: str, rows: Sequence[Row]) -> Check:
    """A default attention path was chosen from the numbers: it ran and agreed at every length, and the reason quotes
    a measurement."""
    name = "a default attention path decided from the numbers"
    crit = "the chosen backend ran and agreed at every measured length; the reason quotes a measured time"
    if not any(r["status"] == "ok" for r in rows):
        return Check.skip(name, "no backend could be chosen (none ran)", crit)
    mine = [r for r in rows if r["backend"] == choice and r["status"] == "ok"]
    if not mine:
        return Check.judge(name, False, f"'{choice}' did not run", crit)
    ok = all(r["agree"] for r in mine) and bool(re.search(r"\d", reason))
    return Check.judge(name, ok, reason if reason.startswith(choice) else f"{choice}: {reason}", crit)


def engine_matches(rows: Sequence[Row]) -> Check:
    """The engine (continuous batching, paged KV cache), static batching and HF ``generate`` give each request the
    tokens it gets decoded alone, at every concurrency, and the engine returns every KV block."""
    name = "engine = decoding each request alone (continuous batching, paged KV cache), no KV block leaked"
    crit = "same_as_alone = requests for every system, workload and level; leaked_blocks = 0"
    if not rows:
        return Check.skip(name, "the engine benchmark did not run", crit)
    bad = [r for r in rows if r["same_as_alone"] != r["requests"] or r.get("leaked_blocks", 0)]
    eng = [r for r in rows if r["system"] == "engine"]
    text = (f"{len(rows) - len(bad)} of {len(rows)} rows equal; engine: "
            + ", ".join(f"{r['workload']} ×{r['concurrency']} {r['same_as_alone']}/{r['requests']} equal, "
                        f"{r['leaked_blocks']} leaked" for r in eng))
    return Check.judge(name, not bad, text, crit)


def greedy_rerun(recorded: Sequence[Sequence[int]] | None, rerun: Sequence[Sequence[int]] | None,
                 source: str) -> Check:
    """Inference is reproducible: the same prompts decoded greedily again give the tokens ``source`` recorded."""
    name = "inference reproducible: a rerun gives the same greedy tokens"
    crit = "every prompt's tokens equal (==)"
    if not recorded or not rerun:
        return Check.skip(name, "no recorded greedy tokens to compare with", crit)
    same = sum(list(a) == list(b) for a, b in zip(recorded, rerun, strict=False))
    ok = same == len(recorded) == len(rerun)
    return Check.judge(name, ok, f"{same} of {len(recorded)} prompts equal ({source})", crit)


def memo_cites(memo: str, tables: Sequence[str], sections: Sequence[str], registry_ids: set[str],
               not_measured: str) -> Check:
    """The memo references measurements: every section exists, every section that recommends something (all but
    those saying ``not_measured``) links at least one table of ``tables`` (CSV names in the log's folder), and every
    run id it quotes is in the results registry."""
    name = "the inference memo references measurements (each recommendation cites its table and run)"
    crit = "every section present, each recommendation linking ≥ 1 measured CSV; every quoted run id registered"
    missing = [s for s in sections if s not in memo]
    chunks = [c for c in re.split(r"^## ", memo, flags=re.M)[1:] if not_measured not in c]
    if not chunks:
        return Check.skip(name, "no stage the memo draws on ran", crit)
    uncited = [c.splitlines()[0] for c in chunks if not any(f"{t}.csv" in c for t in tables)]
    quoted = set(re.findall(r"week11/[\w-]+/[\w.-]+-[0-9a-f]{8}", memo))
    unknown = sorted(quoted - registry_ids)
    text = (f"{len(chunks)} recommending sections, {len(chunks) - len(uncited)} cite a table; {len(quoted)} run ids quoted, "
            f"{len(unknown)} unregistered")
    if missing or uncited or unknown:
        text += f"; missing {missing}, uncited {uncited[:3]}, unknown runs {unknown[:3]}"
    return Check.judge(name, bool(chunks) and not missing and not uncited and not unknown and bool(quoted), text, crit)


def data_links_runs(csv_runs: Mapping[str, Sequence[str]], registry_ids: set[str]) -> Check:
    """Benchmark data links to runs: every CSV of the week has a ``run_id`` on every row, each in the registry.
    ``csv_runs``: CSV name → its rows' run ids."""
    name = "benchmark data links to runs (a registered run_id on every row of every CSV)"
    crit = "no CSV without run ids; every run id in runs/registry.jsonl"
    if not csv_runs:
        return Check.skip(name, "no benchmark CSV was written", crit)
    bad = {n: ids for n, ids in csv_runs.items() if not ids or any(not i or i not in registry_ids for i in ids)}
    text = f"{len(csv_runs) - len(bad)} of {len(csv_runs)} CSVs linked ({len(set().union(*csv_runs.values()))} runs)"
    if bad:
        text += "; unlinked: " + ", ".join(sorted(bad)[:4])
    return Check.judge(name, not bad, text, crit)


def int8_tradeoff(rows: Sequence[Row], ppl_ratio_max: float) -> Check:
    """int8 dynamic quantisation of the project's GPT is measured: smaller, and its val perplexity within
    ``ppl_ratio_max`` of fp32's. ``rows``: :func:`week11_inference.quantize.compare_gpt`'s, one per ``variant``
    (fp32, int8) with ``bytes``, ``ppl``, ``decode_tok_s``."""
    name = "int8 quantisation trade-off measured (size, speed, perplexity cost within bound)"
    crit = f"int8 bytes < fp32 bytes; int8 / fp32 perplexity ≤ {ppl_ratio_max:g}"
    by = {r["variant"]: r for r in rows}
    if "fp32" not in by or "int8" not in by:
        return Check.skip(name, "the quantisation stage did not run", crit)
    if by["fp32"].get("ppl") is None or by["int8"].get("ppl") is None:
        return Check.skip(name, "no val tokens were scored (perplexity not measured)", crit)
    f, q = by["fp32"], by["int8"]
    ratio = q["ppl"] / f["ppl"]
    text = (f"size {f['bytes'] / 2**20:.2f} → {q['bytes'] / 2**20:.2f} MiB; perplexity {f['ppl']:.3f} → {q['ppl']:.3f} "
            f"(×{ratio:.4f}); decode {f['decode_tok_s']:.0f} → {q['decode_tok_s']:.0f} tokens/s")
    return Check.judge(name, q["bytes"] < f["bytes"] and ratio <= ppl_ratio_max, text, crit)


def onnx_agrees(rows: Sequence[Row], atol: float) -> Check:
    """The ONNX export of the project's GPT run by onnxruntime (and the ``torch.export`` program) give the eager
    logits within ``atol`` (fp32) on every input shape compared."""
    name = "ONNX export (onnxruntime) and torch.export agree with PyTorch eager on logits"
    crit = f"max |Δ logits| ≤ {atol:g} for every compared (backend, B, T)"
    if not rows:
        return Check.skip(name, "the export stage did not run", crit)
    worst = max(r["max_abs_diff"] for r in rows)
    shapes = ", ".join(f"{r.get('backend', '')} ({r['batch']}, {r['seq_len']})" for r in rows)
    return Check.judge(name, worst <= atol, f"max |Δ| {worst:.1e} over shapes {shapes}", crit)


def chat_page_streams(result: Mapping[str, Any] | None, skip_reason: str) -> Check:
    """The chat page, opened in headless Chromium, streamed an answer in more than one piece, with no page error."""
    name = "chat page streams an answer in a real browser"
    crit = "answer non-empty, ≥ 2 distinct lengths while streaming, the done marker, no page error"
    if result is None:
        return Check.skip(name, skip_reason or "the chat stage did not run", crit)
    pieces = len(set(result["lengths"]) - {0})
    ok = bool(result["answer"].strip()) and pieces > 1 and not result["page_errors"] and "tokens/s" in result["stats"]
    return Check.judge(name, ok, f"{len(result['answer'])} characters in {pieces} updates, "
                                 f"{len(result['page_errors'])} page errors, {result['seconds']:.1f} s", crit)


def within_time(total_s: float, budget_s: float, reused_s: float = 0.0) -> Check:
    """The whole week within its profile's budget, as a fresh run would take it: this run's wall time plus the
    recorded wall time of every measurement it reused (a rerun that reuses everything cannot pass by being quick)."""
    cost = total_s + reused_s
    measured = f"{cost:,.0f} s" + (f" (this run {total_s:,.0f} s + {reused_s:,.0f} s recorded by the reused runs)"
                                   if reused_s else "")
    return Check.judge("the week finishes within its time budget (as a fresh run)", cost <= budget_s, measured,
                       f"≤ {budget_s:,.0f} s")
