"""Week 5's log: corpus and tokenizer, packing, training curves, perplexity against the unigram baseline, a sample."""

from __future__ import annotations

import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from shared.report import WeeklyLog  # noqa: E402
from shared.stats import compare  # noqa: E402
from shared.train.perplexity import bits_per_byte  # noqa: E402
from week05_lm_pipeline import checks  # noqa: E402
from week05_lm_pipeline.config import Week05Config  # noqa: E402
from week05_lm_pipeline.experiments import Ladder, ShortRun, Stabilisation, TokenizerComparison  # noqa: E402

WORD = re.compile(r"[A-Za-z]+")
TOKENIZERS = {"bpe": "Byte-level BPE written by hand (GPT-2 pre-tokenisation, `shared.data.bpe`)",
              "sentencepiece": "sentencepiece BPE (byte fallback, no normalisation)"}


def known_word_share(text: str, vocabulary: set[str]) -> float:
    """Share of the words of ``text`` that occur in ``vocabulary`` (lower-case letters only)."""
    words = [w.lower() for w in WORD.findall(text)]
    return sum(w in vocabulary for w in words) / len(words) if words else 0.0


def plot_curves(metrics: pd.DataFrame, unigram: float):
    tr, va = metrics[metrics.phase == "train"], metrics[metrics.phase == "val"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tr.step, tr.loss, lw=0.8, alpha=0.6, label="train (batch)")
    ax.plot(va.step, va.val_loss, "s-", label="val (estimate)")
    ax.axhline(unigram, color="grey", ls="--", lw=0.8, label="unigram baseline (val)")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="GPT pre-training")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _loss(run: ShortRun) -> str:
    return f"{run.final_loss:.4f}" if run.final_loss is not None else f"diverged at step {run.diverged_at}"


def ablation_table(runs: list[ShortRun]) -> pd.DataFrame:
    return pd.DataFrame([{"variant": x.name, "seed": x.seed, "settings": x.settings, "val loss": _loss(x),
                          "held-out train loss": "" if x.select_loss is None else round(x.select_loss, 4),
                          "max train loss": round(x.max_train_loss, 3), "seconds": round(x.train_time_s, 1)} for x in runs])


def stabilisation_text(st: Stabilisation) -> str:
    """What the ablation shows, in sentences generated from its numbers."""
    base = st.baseline_loss
    parts = []
    for x in st.one_at_a_time[1:]:
        if x.final_loss is not None and base is not None:
            parts.append(f"At the normal lr, {x.name} changes the val loss by {x.final_loss - base:+.4f} ({x.settings}).")
    swept = ", ".join(f"{r.lr:g} → {_loss(r)}" for r in st.sweep)
    if st.high_lr is None:
        parts.append(f"Raising the lr without warm-up and clipping ({swept}) never broke the run: this sweep shows "
                     "no protection.")
        return " ".join(parts)
    parts.append(f"Raising the lr without warm-up and clipping (seed {st.sweep[0].seed}: {swept}) first breaks it at "
                 f"lr {st.high_lr:g}: diverged, or a val loss of {st.bar:.4f} or more, i.e. not {st.margin:g} nats/token "
                 f"below the unigram baseline ({st.unigram_loss:.4f} on the same tokens): it learned nothing beyond "
                 "token frequencies.")
    un = ", ".join(f"seed {r.seed}: {_loss(r)}" for r in st.unprotected)
    pr = ", ".join(f"seed {r.seed}: {_loss(r)}" for r in st.protected)
    survived = all(not st.broken(r) for r in st.protected)
    parts.append(f"At lr {st.high_lr:g}, unprotected: {un}; with warm-up and clipping: {pr} — the protected run "
                 f"{'survives on every seed' if survived else 'does NOT survive on every seed'}.")
    alone = [(f"warm-up alone ({st.warmup_only[0].settings})", st.warmup_only),
             (f"clipping alone ({st.clip_only[0].settings})", st.clip_only)] if st.warmup_only and st.clip_only else []
    for what, runs in alone:
        n_ok = sum(not st.broken(r) for r in runs)
        parts.append(f"With {what}: {', '.join(f'seed {r.seed}: {_loss(r)}' for r in runs)} — it survives on {n_ok} "
                     f"of {len(runs)} seeds.")
    return " ".join(parts)


def rung_losses(runs: list[ShortRun]) -> dict[str, list[float]]:
    """Rung -> val loss per seed (a diverged seed counts as +inf, so the rung cannot win)."""
    out: dict[str, list[float]] = {}
    for x in runs:
        out.setdefault(x.name, []).append(float("inf") if x.final_loss is None else x.final_loss)
    return out


def ladder_table(runs: list[ShortRun]) -> pd.DataFrame:
    rows, prev, base = [], None, None
    settings = {x.name: x.settings for x in runs}
    for name, losses in rung_losses(runs).items():
        mean = float(np.mean(losses))
        base = mean if base is None else base
        rows.append({"rung": name, "change": settings[name], "val loss (mean)": round(mean, 4),
                     "seed range": round(max(losses) - min(losses), 4),
                     "per seed": ", ".join(_loss(x) for x in runs if x.name == name),
                     "vs previous": "" if prev is None else round(mean - prev, 4), "vs baseline": round(mean - base, 4)})
        prev = mean
    return pd.DataFrame(rows)


def plot_ladder(table: pd.DataFrame, runs: list[ShortRun]):
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar(range(len(table)), table["val loss (mean)"], color="tab:blue", alpha=0.7)
    for i, name in enumerate(table.rung):
        ys = [x.final_loss for x in runs if x.name == name and x.final_loss is not None]
        ax.plot([i] * len(ys), ys, "k.", ms=6)
    ax.set_xticks(range(len(table)), table.rung, rotation=20, ha="right")
    ax.set_ylim(0, 1.05 * max(x.final_loss for x in runs if x.final_loss is not None))  # bars start at 0 nats
    ax.set(ylabel="val loss (nats/token)", title="Modernisation ladder (bars: mean; dots: seeds)")
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_bench(bench: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (b, compiled), g in bench.groupby(["micro_batch", "compile"]):
        ax.plot(g.seq_len, g.tokens_per_sec, "o-", label=f"micro-batch {b}{' (compiled)' if compiled else ''}")
    ax.set(xlabel="sequence length T", ylabel="tokens/s", title="Training throughput", xscale="log")
    ax.set_ylim(bottom=0)
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
        f"document is in training. {TOKENIZERS.get(cfg.data.tokenizer, cfg.data.tokenizer)} with {tok.vocab_size:,} ids "
        f"(BOS {tok.bos_id}, EOS {tok.eos_id}, PAD {tok.pad_id}), trained on the training documents only: "
        f"{tk.chars_per_token:.2f} characters per token on val."))
    stats = pd.DataFrame([{"split": k, "documents": v.documents, "tokens": v.tokens, "tokens before packing": v.tokens_before,
                           "BOS found": v.bos_count, "UTF-8 bytes": v.utf8_bytes,
                           f"naive padding at T={c.block_size}": f"{v.naive_padding:.1%}",
                           "packed padding (PAD tokens in the .bin)": f"{r['pack_padding'][k]:.1%}"}
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
    st: Stabilisation = r["ablation"]
    log.section("Stabilisation ablation", f"Short runs ({budget}); val loss on the first {sh.eval_tokens:,} val tokens, "
                                          f"every window. One setting changed at a time at the normal lr (seed "
                                          f"{cfg.ablation.seeds[0]}), then the lr raised through "
                                          f"{[f'{x:g}' for x in cfg.ablation.high_lrs]} without warm-up and clipping "
                                          "until the run breaks, and at that lr both variants, and each "
                                          f"protection alone, on seeds {list(cfg.ablation.seeds)}.")
    log.table(ablation_table(st.one_at_a_time + st.sweep + st.unprotected[1:] + st.protected + st.warmup_only
                             + st.clip_only), "ablation",
              "One setting changed per row; the sweep and the breaking lr below the baseline rows")
    log.text(stabilisation_text(st))
    lad: Ladder = r["ladder"]
    lt = ladder_table(lad.runs)
    ss, ad = lad.sgd_search, lad.adamw_search
    log.section("Modernisation ladder", (
        f"One change per rung, each rung on seeds {list(cfg.ladder.seeds)} with the same budget ({budget}), reported "
        f"on val. The baseline's SGD lr ({ss.best_lr:g}, from {[f'{x:g}' for x in ss.grid]}) and the last rung's "
        f"AdamW lr ({ad.best_lr:g}, from {[f'{x:g}' for x in ad.grid]}) were searched on seed {cfg.ladder.seeds[0]} "
        f"and chosen on the last {sh.select_tokens:,} tokens of train.bin, which no short run trains on; a search "
        "whose best lay at an edge of its grid was extended past it."))
    log.table(lt, "ladder", "Val loss per rung (nats/token)")
    worse = [f"'{row.rung}' ({row['vs previous']:+.4f})" for _, row in lt.iloc[1:].iterrows() if row["vs previous"] > 0]
    if worse:
        log.text("Rungs whose mean val loss is higher than the rung before at this budget: " + ", ".join(worse) + ". "
                 "Each rung keeps the changes below it, so the later rungs carry the change too.")
    log.table(ablation_table(ss.runs + ad.runs), "lr_tuning", "The lr searches (seed 0), chosen on held-out train loss")
    log.plot(plot_ladder(lt, lad.runs), "ladder", "Modernisation ladder")
    tc: TokenizerComparison = r["tokenizers"]
    b = tc.bench.set_index("tokenizer")
    tok_rows = []
    for kind, bpbs in tc.bits_per_byte.items():
        row = b.loc[kind]
        tok_rows.append({"tokenizer": kind, "vocab": int(row.vocab_size), "train (s)": row.train_s,
                         "encode (MB/s, first pass)": row.encode_mb_per_s,
                         "encode (MB/s, cached)": row.encode_warm_mb_per_s, "val bytes per token": row.bytes_per_token,
                         "val bits per byte (mean)": round(float(np.mean(bpbs)), 4),
                         "per seed": ", ".join(f"{x:.4f}" for x in bpbs)})
    bpb_cmp = compare(tc.bits_per_byte, higher_is_better=False)
    hand, lib = b.loc["bpe"], b.loc["sentencepiece"]
    log.section("Tokenizers: the hand-written BPE against sentencepiece", (
        f"Both trained on the training documents with {int(hand.vocab_size):,} / {int(lib.vocab_size):,} ids "
        f"(`python -m week05_lm_pipeline.bench_tokenizer`). The hand-written BPE trains in {hand.train_s:.1f} s "
        f"(sentencepiece {lib.train_s:.1f} s) and encodes the val text at {hand.encode_mb_per_s:.2f} MB/s on a first "
        f"pass ({hand.encode_warm_mb_per_s:.2f} MB/s cached; sentencepiece {lib.encode_mb_per_s:.2f}); it packs "
        f"{hand.bytes_per_token:.2f} bytes per token against {lib.bytes_per_token:.2f}. The same short-run model "
        f"({budget}) on each one's packed data, val bits per byte over seeds {list(cfg.ladder.seeds)}: "
        + bpb_cmp.describe(fmt=lambda x: f"{x:.4f}", unit=" bits/byte") + "."))
    log.table(pd.DataFrame(tok_rows), "tokenizers", "Bits per byte do not depend on the vocabulary, so they compare "
              "the two tokenizers' models directly")
    log.section("Timings", "")
    log.table(pd.DataFrame([{"stage": k, "seconds": round(v, 1)} for k, v in r["timings"].items()]), "timings")

    readback = r["pack_readback"]
    peak, peak_source = r["peak"]
    vocabulary = {w.lower() for d in corpus.train for w in WORD.findall(d)}
    losses = rung_losses(lad.runs)
    base_rung = lt.rung.iloc[0]
    best_rung = min(list(losses)[1:], key=lambda k: float(np.mean(losses[k])))
    log.add(
        checks.tokenizer_roundtrip(tk.roundtrip_ok, tk.roundtrip_n, tk.edge_cases_ok),
        checks.packing_lossless(readback),
        checks.perplexity_reproducible(ev[0]["loss"], ev[1]["loss"], ev[2]["loss"]),
        checks.throughput_plausible(trained.tokens_per_sec, trained.flops_per_token, peak, peak_source),
        checks.memory_plausible(trained.peak_mem_gib, trained.model.num_params(False)),
        checks.beats_unigram(ev[0]["perplexity"], r["unigram"]["perplexity"]),
        checks.sample_real_words(known_word_share(r["sample"], vocabulary), len(WORD.findall(r["sample"])),
                                 cfg.check.sample_known_words),
        checks.stabilisation_shown(st.high_lr, st.bar, [x.final_loss for x in st.unprotected],
                                   [x.final_loss for x in st.protected], list(cfg.ablation.high_lrs),
                                   "" if cfg.ablation.judge else f"{sh.max_steps}-step runs are too short to show it; "
                                   "the cpu and gpu profiles judge it"),
        checks.lr_search_inside({"SGD (rung 0)": (ss.best_lr, ss.grid), "AdamW (last rung)": (ad.best_lr, ad.grid)}),
        checks.ladder_beats_baseline(compare({base_rung: losses[base_rung], best_rung: losses[best_rung]},
                                             higher_is_better=False), base_rung, cfg.ladder.margin),
        checks.bpe_speed(hand.train_s, hand.encode_mb_per_s, cfg.check.bpe_max_train_s, cfg.check.bpe_min_mb_per_s),
        checks.time_budget(r["pipeline_s"], cfg.check.time_budget_s),
        checks.export_matches(r["exported"]["path"], r["exported"]["max_abs_diff_gpt"], r["exported"]["max_abs_diff_hf"]),
    )
