"""``docs/inference-memo.md``: the recommended inference settings for a latency or a throughput goal, generated from
the week's measurements. Every number is read from a row, every recommendation is a comparison of rows, and every
section links the CSV (and names the run) it stands on; a measurement that did not run says so instead of guessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]

NOT_MEASURED = "Not measured in this run"  # a section that recommends nothing (its stage did not run) says this
SECTIONS = ("## 1. Decoding: the KV cache", "## 2. Attention backend", "## 3. Batching: latency or throughput",
            "## 4. Which engine to deploy", "## 5. Quantisation", "## 6. Exported inference", "## Summary")


def _cite(tables: Mapping[str, str], names: str | Sequence[str], runs: Sequence[str]) -> str:
    names = [names] if isinstance(names, str) else list(names)
    links = ", ".join(f"[{n}.csv]({tables[n]})" if n in tables else f"{n}.csv (not written)" for n in names)
    ids = sorted(set(runs))
    return f"Evidence: {links}" + (f"; run {', '.join(f'`{r}`' for r in ids)}." if ids else ".")


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def _secs(s: float) -> str:
    return f"{s:.2f} s" if s >= 1 else f"{s * 1000:.0f} ms"


def _versus(items: Sequence[str]) -> str:
    return f", vs {', '.join(items)}" if items else " (the only engine measured)"


def _runs(rows: Sequence[Row]) -> list[str]:
    return [r["run_id"] for r in rows if r.get("run_id")]


def _cache(speed: Sequence[Row], memory: Sequence[Row], tables: Mapping[str, str]) -> tuple[list[str], str]:
    lines = [SECTIONS[0]]
    measured = [r for r in speed if r.get("measured")]
    if not measured:
        return lines + [f"{NOT_MEASURED}."], "not measured"
    best = max(measured, key=lambda r: (r["new_tokens"], -r["batch"]))
    lines.append(
        f"Decode with the cache, always: at {best['new_tokens']} new tokens (batch {best['batch']}, {best['model']}) it "
        f"is **{best['speedup']:.1f}×** faster than rerunning the prefix ({_secs(best['no_cache_s'])} → "
        f"{_secs(best['cache_s'])}), with {'identical' if best['tokens_equal'] else 'DIFFERENT'} greedy tokens. "
        "The gain grows with the answer's length: " + ", ".join(
            f"{r['new_tokens']} tokens ×{r['speedup']:.1f}" for r in sorted(measured, key=lambda r: r["new_tokens"])
            if r["batch"] == best["batch"] and r["model"] == best["model"]) + ".")
    gpt = [r for r in memory if r["model"] == "gpt"]
    if gpt:
        big = max(gpt, key=lambda r: r["measured_bytes"])
        per_token = big["measured_bytes"] / (big["batch"] * big["seq_len"])
        lines.append(
            f"Its price is memory, linear in batch × length: {_bytes(per_token)} per token for this shape "
            f"(2 · n_layer · n_embd · 4 bytes), {_bytes(big['measured_bytes'])} at batch {big['batch']} × "
            f"{big['seq_len']} tokens; every measured size equals the formula "
            f"({sum(r['equal'] for r in memory)} of {len(memory)} rows). Budget it before raising the batch.")
    lines.append(_cite(tables, ["cache_speedup", "cache_memory"], _runs(speed)))
    return lines, f"cache on ({best['speedup']:.1f}× at {best['new_tokens']} tokens)"


def _attention(choice: str, reason: str, rows: Sequence[Row], flash: str, tables: Mapping[str, str]) -> tuple[list[str], str]:
    lines = [SECTIONS[1]]
    if not choice:
        return lines + [f"{NOT_MEASURED}: no attention backend ran."], "not measured"
    lines.append(f"Default: **{choice}** — {reason.removeprefix(choice + ': ')}.")
    ran = {r["backend"] for r in rows if r["status"] == "ok"}
    never = {r["backend"]: r["reason"] for r in rows if r["backend"] not in ran}
    longest = {b: max(r["seq_len"] for r in rows if r["backend"] == b and r["status"] == "ok") for b in sorted(ran)}
    top = max(r["seq_len"] for r in rows)
    partial = [f"{b} up to T={t}" for b, t in longest.items() if t < top]
    if partial:
        lines.append(f"Cut short (memory or time cap of the profile, reasons in the CSV): {', '.join(partial)}.")
    if never:
        lines.append("Not runnable here: " + "; ".join(f"{b} ({why})" for b, why in sorted(never.items())) + ".")
    lines.append(f"The `flash-attn` package: {flash}")
    lines.append(_cite(tables, "attention", _runs(rows)))
    return lines, choice


def _batching(rows: Sequence[Row], tables: Mapping[str, str]) -> tuple[list[str], str]:
    lines = [SECTIONS[2]]
    eng = sorted((r for r in rows if r["system"] == "engine" and r["workload"] == "equal"),
                 key=lambda r: r["concurrency"])
    if not eng:
        return lines + [f"{NOT_MEASURED}."], "not measured"
    one, most = eng[0], eng[-1]
    gain = most["tokens_per_sec"] / one["tokens_per_sec"]
    lines.append(
        f"For latency, serve one request at a time: a token every {1000 / one['tokens_per_sec']:.1f} ms "
        f"({one['tokens_per_sec']:.0f} tokens/s at concurrency {one['concurrency']}). For throughput, batch: "
        f"{most['concurrency']} concurrent requests give **{most['tokens_per_sec']:.0f} tokens/s** in aggregate, "
        f"{gain:.1f}× one request's, while each request's own rate drops to "
        f"{most['tokens_per_sec'] / most['concurrency']:.0f} tokens/s.")
    at = {(r["workload"], r["system"], r["concurrency"]): r["tokens_per_sec"] for r in rows}
    for workload, what in (("equal", "answers of one length"), ("mixed", "answers of different lengths")):
        levels = sorted({c for (w, s, c) in at if w == workload and s == "engine"})
        if not levels:
            continue
        top = levels[-1]
        e, st = at[(workload, "engine", top)], at.get((workload, "static_batch", top))
        if st is None:
            continue
        verdict = f"the engine is {e / st:.2f}× static batching" if e >= st else \
            f"static batching is {st / e:.2f}× the engine"
        hf = at.get((workload, "hf_generate", top))
        lines.append(f"With {what} at {top} concurrent requests, {verdict} ({e:.0f} vs {st:.0f} useful tokens/s"
                     + (f"; HF generate {hf:.0f}" if hf is not None else "") + ").")
    mixed = [c for (w, s, c) in at if w == "mixed" and s == "engine"]
    pick = f"batch {most['concurrency']} for throughput ({gain:.1f}×), 1 for latency"
    if mixed:
        top = max(mixed)
        better = at[("mixed", "engine", top)] >= at.get(("mixed", "static_batch", top), math.inf)
        pick += "; continuous batching when answer lengths vary" if better else \
            "; static batching still wins here at mixed lengths"
    lines.append(_cite(tables, "engine", _runs(rows)))
    return lines, pick


def _engines(bench: Sequence[Row], engines: Sequence[Row], tables: Mapping[str, str]) -> tuple[list[str], str]:
    lines = [SECTIONS[3]]
    ran = [r for r in bench if not math.isnan(r.get("agg_tok_s", math.nan))]
    skipped = [f"{e['engine']}: {e['reason']}" for e in engines if e["status"] != "ok"]
    if not ran:
        return lines + [f"{NOT_MEASURED}: no serving engine ran (" + ("; ".join(skipped) or "none configured")
                        + ")."], "not measured"
    single = {r["engine"]: r for r in ran if r["concurrency"] == 1}
    top = max(r["concurrency"] for r in ran)
    busy = {r["engine"]: r for r in ran if r["concurrency"] == top}
    fast1 = max(single.values(), key=lambda r: r["agg_tok_s"]) if single else None
    fastn = max(busy.values(), key=lambda r: r["agg_tok_s"])
    if fast1:
        lines.append(f"One user at a time: **{fast1['engine']}** ({fast1['agg_tok_s']:.1f} tokens/s, first token in "
                     f"{_secs(fast1['ttft_p50_s'])} at p50)" + _versus(
                         [f"{e} {r['agg_tok_s']:.1f} tokens/s" for e, r in single.items() if e != fast1["engine"]]) + ".")
    lines.append(f"Many users ({top} at once): **{fastn['engine']}** ({fastn['agg_tok_s']:.1f} tokens/s in aggregate, "
                 f"latency p50 {_secs(fastn['latency_p50_s'])} / p95 {_secs(fastn['latency_p95_s'])})" + _versus(
                     [f"{e} {r['agg_tok_s']:.1f}" for e, r in busy.items() if e != fastn["engine"]]) + ".")
    if skipped:
        lines.append("Not measured: " + "; ".join(skipped) + ".")
    lines.append(_cite(tables, "serving_bench", _runs(bench)))
    pick = f"{fast1['engine']} for one user, " if fast1 else ""
    return lines, pick + f"{fastn['engine']} at {top} concurrent"


def _quant(gpt: Sequence[Row], hf: Sequence[Row], ratio_max: float, tables: Mapping[str, str]) -> tuple[list[str], str]:
    lines = [SECTIONS[4]]
    by = {r["variant"]: r for r in gpt}
    if "int8" not in by:
        return lines + [f"{NOT_MEASURED}."], "not measured"
    f, q = by["fp32"], by["int8"]
    measured_ppl = f.get("ppl") is not None and q.get("ppl") is not None
    ppl = q["ppl"] / f["ppl"] if measured_ppl else math.nan
    speed = q["decode_tok_s"] / f["decode_tok_s"]
    quality = f"changes val perplexity ×{ppl:.4f}" if measured_ppl else "its perplexity was not measured"
    lines.append(
        f"The project's GPT ({f['model']}): int8 dynamic quantisation of the linear layers shrinks the weights "
        f"{f['bytes'] / q['bytes']:.1f}× ({_bytes(f['bytes'])} → {_bytes(q['bytes'])}), {quality} and decodes at "
        f"×{speed:.2f} the fp32 speed.")
    if not measured_ppl:
        verdict = "int8 only where memory is the limit and its quality is checked first (not measured here)"
    elif ppl <= ratio_max:
        verdict = "int8 when memory is the limit"
    else:
        verdict = "fp32 (int8 costs too much perplexity)"
    hb = {r["variant"]: r for r in hf}
    if "int8" in hb:
        hf32, hq = hb["fp32"], hb["int8"]
        lines.append(
            f"The week-7 SFT model ({hf32['model']}, {hf32.get('items', '?')} harness items): ROUGE-L "
            f"{hf32['rougeL']:.3f} → {hq['rougeL']:.3f}, format compliance {hf32['format_compliance']:.2f} → "
            f"{hq['format_compliance']:.2f}, decode {hf32['decode_tok_s']:.1f} → {hq['decode_tok_s']:.1f} tokens/s, "
            f"{_bytes(hf32['bytes'])} → {_bytes(hq['bytes'])}.")
        if hq["rougeL"] < 0.9 * hf32["rougeL"]:
            verdict += (f"; not for {hf32['model']} (ROUGE-L {hf32['rougeL']:.3f} → {hq['rougeL']:.3f}: keep fp32 or "
                        "try weight-only int8)")
    lines.append(f"Recommendation: {verdict}.")
    lines.append(_cite(tables, ["quantize", "quantize_hf"] if hf else "quantize", _runs([*gpt, *hf])))
    return lines, verdict


def _export(agree: Sequence[Row], speed: Sequence[Row], tables: Mapping[str, str]) -> tuple[list[str], str]:
    lines = [SECTIONS[5]]
    if not speed:
        return lines + [f"{NOT_MEASURED}."], "not measured"
    by = {r["backend"]: r for r in speed}
    eager = by.get("eager")
    worst = max((r["max_abs_diff"] for r in agree if r.get("backend", "onnxruntime") == "onnxruntime"),
                default=math.nan)
    fastest = max(speed, key=lambda r: r["forward_tok_s"])
    rel = ", ".join(f"{b} {r['forward_tok_s']:,.0f} tokens/s" + (f" (×{r['forward_tok_s'] / eager['forward_tok_s']:.2f})"
                                                                 if eager else "") for b, r in by.items())
    lines.append(f"ONNX through onnxruntime reproduces the eager logits to {worst:.1e} (fp32). Forward speed, same "
                 f"input and threads: {rel}. Fastest: **{fastest['backend']}**, for a deployment without Python's "
                 "PyTorch (the file holds the whole graph); PyTorch eager stays the path for development.")
    lines.append(_cite(tables, ["export_agreement", "export_speed"], _runs(agree)))
    return lines, f"{fastest['backend']} for a forward-only deployment"


def render_memo(data: Mapping[str, Any], tables: Mapping[str, str], header: str) -> str:
    """The memo's Markdown. ``data``: the week's rows by measurement (``cache_speedup``, ``cache_memory``,
    ``attention``, ``attention_choice`` (backend, reason), ``flash_attn``, ``engine``, ``serving_bench``,
    ``serving_engines``, ``quantize``, ``quantize_hf``, ``quant_ratio_max``, ``export_agreement``,
    ``export_speed``); ``tables``: CSV name → its link from ``docs/``; ``header``: the hardware/commit line."""
    parts, summary = [], []
    for title, (lines, pick) in (
        ("latency and throughput: decoding", _cache(data["cache_speedup"], data["cache_memory"], tables)),
        ("attention", _attention(*data["attention_choice"], data["attention"], data["flash_attn"], tables)),
        ("batch size", _batching(data["engine"], tables)),
        ("serving engine", _engines(data["serving_bench"], data["serving_engines"], tables)),
        ("quantisation", _quant(data["quantize"], data["quantize_hf"], data["quant_ratio_max"], tables)),
        ("export", _export(data["export_agreement"], data["export_speed"], tables)),
    ):
        parts.append("\n\n".join(lines))
        summary.append(f"| {title} | {pick} | {lines[0].removeprefix('## ')} |")
    cited = [n for n in tables if any(f"[{n}.csv]" in p for p in parts)]
    table = "| goal / choice | recommended | section |\n|---|---|---|\n" + "\n".join(summary)
    evidence = _cite(tables, cited, []) if cited else f"{NOT_MEASURED}: no stage the memo draws on ran."
    return (f"# Inference memo\n\n_Generated by `make week11` from its measurements; do not edit by hand._ {header}\n\n"
            + "\n\n".join(parts) + f"\n\n{SECTIONS[6]}\n\n{table}\n\n" + evidence + "\n")
