"""Week 5's log: corpus and tokenizer, packing, training curves, perplexity against the unigram baseline, a sample."""

from __future__ import annotations

import math
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from shared.report import WeeklyLog  # noqa: E402
from week05_lm_pipeline.config import Week05Config  # noqa: E402
from week05_lm_pipeline.experiments import ShortRun  # noqa: E402

WORD = re.compile(r"[A-Za-z]+")


def known_word_share(text: str, vocabulary: set[str]) -> float:
    """Share of the words of ``text`` that occur in ``vocabulary`` (lower-case letters only)."""
    words = [w.lower() for w in WORD.findall(text)]
    return sum(w in vocabulary for w in words) / len(words) if words else 0.0


def bits_per_byte(loss: float, tokens: int, utf8_bytes: int) -> float:
    """Nats per token -> bits per byte of text: comparable across tokenizers (and with a char model)."""
    return loss * tokens / (utf8_bytes * math.log(2))


def plot_curves(metrics: pd.DataFrame, unigram: float):
    tr, va = metrics[metrics.phase == "train"], metrics[metrics.phase == "val"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tr.step, tr.loss, lw=0.8, alpha=0.6, label="train (batch)")
    ax.plot(va.step, va.val_loss, "s-", label="val (estimate)")
    ax.axhline(unigram, color="grey", ls="--", lw=0.8, label="unigram baseline (val)")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="GPT pre-training")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _loss(run: ShortRun) -> str:
    return f"{run.final_loss:.4f}" if run.final_loss is not None else f"diverged at step {run.diverged_at}"


def ablation_table(runs: list[ShortRun]) -> pd.DataFrame:
    return pd.DataFrame([{"variant": x.name, "settings": x.settings, "val loss": _loss(x),
                          "max train loss": round(x.max_train_loss, 3), "seconds": round(x.train_time_s, 1)} for x in runs])


def stabilisers(runs: list[ShortRun]) -> tuple[bool, str]:
    """Whether warm-up + clipping rescued the too-high lr, and a sentence naming what the ablation shows."""
    by = {x.name: x for x in runs}
    safe, bare, base = by["high lr, stabilised"], by["high lr, unprotected"], by["baseline"]
    bare_loss = float("inf") if bare.final_loss is None else bare.final_loss
    rescued = safe.final_loss is not None and safe.final_loss < bare_loss
    parts = [f"At the too-high lr, warm-up + clipping {'helped' if rescued else 'did NOT help'}: val loss "
             f"{_loss(safe)} with them against {_loss(bare)} without."]
    for name in ("no warm-up", "no clipping"):
        x = by[name]
        if x.final_loss is not None and base.final_loss is not None:
            parts.append(f"At the normal lr, {name} changes the val loss by {x.final_loss - base.final_loss:+.4f}.")
    accum = next(x for x in runs if x.name.startswith("accumulation"))
    if accum.final_loss is not None and base.final_loss is not None:
        parts.append(f"{accum.name} at the same global batch: {accum.final_loss - base.final_loss:+.4f} "
                     "(the same optimisation, computed in smaller pieces).")
    return rescued, " ".join(parts)


def ladder_table(runs: list[ShortRun]) -> pd.DataFrame:
    rows, prev, base = [], None, None
    for name in dict.fromkeys(x.name for x in runs):
        rr = [x for x in runs if x.name == name]
        losses = [x.final_loss for x in rr if x.final_loss is not None]
        mean = float(np.mean(losses)) if len(losses) == len(rr) else float("nan")
        base = mean if base is None else base
        rows.append({"rung": name, "change": rr[0].settings, "val loss (mean)": round(mean, 4),
                     "per seed": ", ".join(_loss(x) for x in rr), "vs previous": "" if prev is None else round(mean - prev, 4),
                     "vs baseline": round(mean - base, 4)})
        prev = mean
    return pd.DataFrame(rows)


def plot_ladder(table: pd.DataFrame, runs: list[ShortRun]):
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar(range(len(table)), table["val loss (mean)"], color="tab:blue", alpha=0.7)
    for i, name in enumerate(table.rung):
        ys = [x.final_loss for x in runs if x.name == name and x.final_loss is not None]
        ax.plot([i] * len(ys), ys, "k.", ms=6)
    ax.set_xticks(range(len(table)), table.rung, rotation=20, ha="right")
    lo, hi = table["val loss (mean)"].min(), table["val loss (mean)"].max()
    ax.set_ylim(lo - 0.2 * (hi - lo + 0.05), hi + 0.1 * (hi - lo + 0.05))
    ax.set(ylabel="val loss (nats/token)", title="Modernisation ladder (bars: mean; dots: seeds)")
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_bench(bench: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (b, compiled), g in bench.groupby(["micro_batch", "compile"]):
        ax.plot(g.seq_len, g.tokens_per_sec, "o-", label=f"micro-batch {b}{' (compiled)' if compiled else ''}")
    ax.set(xlabel="sequence length T", ylabel="tokens/s", title="Training throughput", xscale="log")
    ax.set_xticks(sorted(bench.seq_len.unique()), [str(t) for t in sorted(bench.seq_len.unique())])
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def build_log(log: WeeklyLog, cfg: Week05Config, r: dict[str, Any]) -> None:
    """Every section and check of the week."""
    corpus, tk, packed, trained = r["corpus"], r["tokenizer"], r["packed"], r["trained"]
    tok, c, t, o, sc = tk.tokenizer, cfg.model, cfg.loop, cfg.optim, cfg.schedule
    log.section("Stages", "Each stage is skipped when its verified output already exists.")
    log.table(pd.DataFrame([
        {"stage": "tokenizer", "output": f"`{tk.path.name}`", "skipped (verified output found)": tk.skipped,
         "seconds": round(tk.seconds, 1)},
        {"stage": "pack", "output": f"`{packed.dir.name}/{{train,val}}.bin`", "skipped (verified output found)": packed.skipped,
         "seconds": round(packed.seconds, 1)},
        {"stage": "train", "output": f"`{trained.run.run_id}`", "skipped (verified output found)": trained.skipped,
         "seconds": round(r["timings"]["train"], 1)},
    ]), "stages")
    log.section("Corpus and tokenizer", (
        f"`{corpus.name}`: {len(corpus.train):,} training and {len(corpus.val):,} val documents after removing "
        f"{corpus.n_duplicates:,} exact duplicates; the split is by document (seed {cfg.data.split_seed}), so no val "
        f"document is in training. BPE (sentencepiece, byte fallback, no normalisation) with {tok.vocab_size:,} ids "
        f"(BOS {tok.bos_id}, EOS {tok.eos_id}, PAD {tok.pad_id}), trained on the training documents only: "
        f"{tk.chars_per_token:.2f} characters per token on val."))
    stats = pd.DataFrame([{"split": k, "documents": v.documents, "tokens": v.tokens, "tokens before packing": v.tokens_before,
                           "BOS found": v.bos_count, "UTF-8 bytes": v.utf8_bytes,
                           f"naive padding at T={c.block_size}": f"{v.naive_padding:.1%}", "packed padding": "0.0%"}
                          for k, v in packed.splits.items()])
    log.table(stats, "packing", "Packed streams (concatenate-and-chunk) vs one padded row per document")
    log.config(cfg)
    m = trained.metrics
    log.section("Training", (
        f"GPT {c.n_layer} x {c.n_embd} (heads {c.n_head}, context {c.block_size}, vocab {c.vocab_size} = "
        f"{tok.vocab_size} padded to a multiple of {cfg.data.pad_vocab_to}): {trained.model.num_params():,} "
        f"non-embedding parameters. AdamW, lr {o.lr:g}, {sc.warmup_steps} warm-up steps, {sc.name} to {sc.min_lr:g}, "
        f"clip {t.grad_clip}, {t.precision}{', compiled' if t.compile else ''}; {t.max_steps:,} steps of "
        f"{t.micro_batch} x {t.grad_accum_steps} x {c.block_size} tokens. Median {trained.tokens_per_sec:,.0f} tokens/s"
        + (f", MFU {trained.mfu:.1%} ({trained.mfu_source})" if trained.mfu is not None else "")
        + f"; peak memory {trained.peak_mem_gib:.2f} GiB."))
    log.plot(plot_curves(m, r["unigram"]["loss"]), "loss_curves", "Training loss and val estimates, nats per token")
    ev, val = r["evals"], packed.splits["val"]
    n_tok = ev[0]["tokens"]
    bpb = bits_per_byte(ev[0]["loss"], val.tokens, val.utf8_bytes)
    log.section("Perplexity on the fixed val set", (
        f"`python -m week05_lm_pipeline.eval {trained.run.dir.name}/checkpoints/best`: every window of the val "
        f"stream in order ({n_tok:,} predicted tokens)."))
    log.table(pd.DataFrame([
        {"model": "unigram (training frequencies)", "val loss (nats/token)": round(r["unigram"]["loss"], 4),
         "perplexity": round(r["unigram"]["perplexity"], 2),
         "bits per byte": round(bits_per_byte(r["unigram"]["loss"], val.tokens, val.utf8_bytes), 4)},
        {"model": "GPT, best checkpoint", "val loss (nats/token)": round(ev[0]["loss"], 4),
         "perplexity": round(ev[0]["perplexity"], 2), "bits per byte": round(bpb, 4)},
        {"model": "GPT, final weights", "val loss (nats/token)": round(r["final_eval"]["loss"], 4),
         "perplexity": round(r["final_eval"]["perplexity"], 2), "bits per byte": ""},
    ]), "perplexity", "Val perplexity against the unigram baseline")
    log.section("Sample", f"From the final weights, BOS + {cfg.sample.prompt!r}, temperature {cfg.sample.temperature}, "
                          f"top-k {cfg.sample.top_k}:\n\n```text\n{r['sample'].strip()}\n```")
    bench, source = r["bench"]
    log.section("Throughput and memory", f"The main model, {cfg.bench.steps} timed training steps per setting after "
                                         f"{cfg.bench.warmup} warm-up steps, {t.precision}. MFU against: {source}.")
    log.table(bench.round(4), "bench", "Throughput and peak memory per (sequence length, micro-batch)")
    log.plot(plot_bench(bench), "bench", "tokens/s against sequence length")
    sh = cfg.short
    budget = f"{sh.n_layer} layers x {sh.n_embd} wide, T = {sh.block_size}, {sh.max_steps} steps of {sh.micro_batch} x {sh.block_size} tokens"
    log.section("Stabilisation ablation", f"Short runs ({budget}, seed {cfg.ladder.seeds[0]}); val loss on the first "
                                          f"{sh.eval_tokens:,} val tokens, every window.")
    log.table(ablation_table(r["ablation"]), "ablation", "One setting changed per row")
    rescued, notes = stabilisers(r["ablation"])
    log.text(notes)
    lt = ladder_table(r["ladder"])
    log.section("Modernisation ladder", f"One change per rung, each rung on seeds {list(cfg.ladder.seeds)} with the same "
                                        f"budget ({budget}). The last rung's lr is the best of {cfg.optim.lr:g} and "
                                        f"{', '.join(f'{x:g}' for x in cfg.ladder.tuned_lrs)} on seed {cfg.ladder.seeds[0]}.")
    log.table(lt, "ladder", "Val loss per rung (nats/token)")
    worse = [f"'{row.rung}' ({row['vs previous']:+.4f})" for _, row in lt.iloc[1:].iterrows() if row["vs previous"] > 0]
    if worse:
        log.text("Rungs that made the loss worse at this budget: " + ", ".join(worse) + ". A change that helps a long "
                 "run can hurt a short one: a cosine decay to lr/10 over a few hundred steps, for example, spends most "
                 "of them at a small lr. Each rung keeps the changes below it, so the later rungs carry it too.")
    log.table(ablation_table(r["tuning"]), "lr_tuning", "lr candidates for the last rung (seed 0)")
    log.plot(plot_ladder(lt, r["ladder"]), "ladder", "Modernisation ladder")
    log.section("Timings", "")
    log.table(pd.DataFrame([{"stage": k, "seconds": round(v, 1)} for k, v in r["timings"].items()]), "timings")

    edge = "and every edge case (whitespace, CRLF, unicode, control characters)" if tk.edge_cases_ok else "; an EDGE CASE FAILED"
    log.check("tokenizer round trip", tk.roundtrip_ok == tk.roundtrip_n and tk.edge_cases_ok,
              f"{tk.roundtrip_ok}/{tk.roundtrip_n} val documents {edge}", "decode(encode(x)) == x for all")
    lost = {k: v.tokens_before - v.tokens for k, v in packed.splits.items()}
    framed = all(v.bos_count == v.documents for v in packed.splits.values())
    log.check("packing loses no token", all(d == 0 for d in lost.values()) and framed,
              ", ".join(f"{k}: {v.tokens_before:,} before, {v.tokens:,} after, {v.bos_count:,} BOS for {v.documents:,} "
                        f"documents" for k, v in packed.splits.items()), "equal counts; one BOS per document")
    rel = abs(ev[2]["loss"] - ev[0]["loss"]) / ev[0]["loss"]
    log.check("perplexity is reproducible", ev[0]["loss"] == ev[1]["loss"] and rel <= 1e-4,
              f"two calls: {ev[0]['loss']:.6f} and {ev[1]['loss']:.6f}; batch {cfg.eval.batch_size} vs 1: relative "
              f"difference {rel:.1e}", "identical twice; ≤ 1e-4 relative across batch sizes")
    log.check("throughput and memory recorded", trained.tokens_per_sec > 0 and trained.peak_mem_gib > 0,
              f"{trained.tokens_per_sec:,.0f} tokens/s, peak {trained.peak_mem_gib:.2f} GiB", "both measured")
    log.check("beats the unigram baseline", ev[0]["perplexity"] < r["unigram"]["perplexity"],
              f"perplexity {ev[0]['perplexity']:.1f} vs unigram {r['unigram']['perplexity']:.1f}", "lower")
    vocabulary = {w.lower() for d in corpus.train for w in WORD.findall(d)}
    share = known_word_share(r["sample"], vocabulary)
    log.check("the sample is made of real words", share >= cfg.check.sample_known_words,
              f"{share:.0%} of its {len(WORD.findall(r['sample']))} words occur in the training text",
              f"≥ {cfg.check.sample_known_words:.0%}")
    log.check("the ablation names the stabilising settings", rescued, notes.split(". ")[0] + ".",
              "at the too-high lr, warm-up + clipping end lower than (or survive where) the unprotected run")
    best = lt.iloc[1:]["val loss (mean)"].idxmin()
    gain = lt["val loss (mean)"].iloc[0] - lt["val loss (mean)"].iloc[best]
    log.check("the ladder beats its baseline", gain >= cfg.ladder.margin and gain > 0,
              f"best rung '{lt.rung.iloc[best]}' {lt['val loss (mean)'].iloc[best]:.4f} vs baseline "
              f"{lt['val loss (mean)'].iloc[0]:.4f}: {gain:.4f} nats/token lower (mean of {len(cfg.ladder.seeds)} seeds)",
              f"lower by ≥ {cfg.ladder.margin} nats/token (and by more than 0)")
    total = r["end_to_end_s"]
    log.check("time budget", total <= cfg.check.time_budget_s, f"{total:.0f} s end to end",
              f"≤ {cfg.check.time_budget_s:.0f} s")
