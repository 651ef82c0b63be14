"""Week 6's log: the budget, the data versions, A vs B, the IsoFLOP sweep and its fit, the memo."""

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
from week06_budget.config import Week06Config  # noqa: E402
from week06_budget.data import Versions  # noqa: E402
from week06_budget.experiments import ABResult, BudgetDemo, IsoFLOP, iso_runs  # noqa: E402
from week06_budget.runs import BudgetRun, as_row  # noqa: E402

CHINCHILLA_A, CHINCHILLA_TOKENS_PER_PARAM = 0.5, 20.0  # Hoffmann et al. 2022, table 2 (approach 2: a = 0.49)


def estimate_table(runs: list[BudgetRun]) -> pd.DataFrame:
    return pd.DataFrame([{
        "run": r.name, "seed": r.seed, "budget": f"{r.budget}={r.budget_value:,.6g}", "stopped by": r.stopped_by,
        "steps": r.steps, "tokens": r.tokens, "N (all)": r.n_params, "N' (matmul)": r.n_params_matmul,
        "FLOPs": f"{r.flops:.3g}", "6ND (non-emb.)": f"{6 * r.estimate['n_params_non_embedding'] * r.tokens:.3g}",
        "est. s": round(r.actual["seconds"], 1), "actual s": round(r.train_time_s, 1),
        "time ratio": round(r.actual["time_ratio"], 2), "est. GiB": round(r.actual["memory_gib"], 4),
        "actual GiB": None if r.actual["actual_memory_gib"] is None else round(r.actual["actual_memory_gib"], 4),
        "val loss": round(r.val_loss, 4)} for r in runs])


def steps_table(v: Versions) -> pd.DataFrame:
    return pd.DataFrame([{"filter": s.name, "criterion": s.criterion, "removed documents": s.removed,
                          "removed bytes": s.removed_bytes} for s in v.steps])


def examples_table(v: Versions) -> pd.DataFrame:
    return pd.DataFrame([{"filter": s.name, "source": e["source"], "measured": e["value"], "text": e["text"]}
                         for s in v.steps for e in s.examples])


def version_table(v: Versions) -> pd.DataFrame:
    rows = []
    for name, ver in (("A", v.a), ("B", v.b)):
        c = ver.manifest["counts"]
        docs = v.docs[name]
        rows.append({"version": name, "train documents": c["train"]["documents"], "train tokens": c["train"]["tokens"],
                     "train bytes": c["train"]["bytes"], "duplicate rate": f"{v.duplicate_rate[name]:.2%}",
                     "median words": int(np.median([len(d.text.split()) for d in docs])),
                     "val documents": c["val"]["documents"], "val tokens": c["val"]["tokens"],
                     "manifest": f"`{ver.manifest_path.parent.name}/manifest.json`"})
    return pd.DataFrame(rows)


def source_table(v: Versions) -> pd.DataFrame:
    sources = sorted({d.source for d in v.docs["A"]} | {d.source for d in v.docs["val"]})
    return pd.DataFrame([{"source": s, **{f"{k} documents": sum(d.source == s for d in v.docs[k]) for k in ("A", "B", "val")}}
                         for s in sources])


def plot_lengths(v: Versions):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = np.logspace(0, math.log10(max(len(d.text.split()) for d in v.docs["A"]) + 1), 40)
    for name in ("A", "B"):
        ax.hist([max(1, len(d.text.split())) for d in v.docs[name]], bins=bins, histtype="step", lw=1.5, label=name)
    ax.set(xscale="log", xlabel="document length (words)", ylabel="documents", title="Document lengths, A vs B")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def ab_table(ab: ABResult) -> pd.DataFrame:
    return pd.DataFrame([{"version": name, "seed": r.seed, "val loss": round(r.val_loss, 4),
                          "bits per byte": round(r.bits_per_byte, 4), "tokens": r.tokens, "run": f"`{r.run_id}`"}
                         for name, runs in ab.runs.items() for r in runs])


def ab_text(ab: ABResult, alpha: float, budget: int, tokens: dict[str, int]) -> str:
    """The verdict, and how many passes over each version the budget is (the regime the verdict holds in)."""
    t, b = ab.loss, ab.bpb
    lower = "B" if t.diff > 0 else "A"
    verdict = (f"the difference is significant at {alpha:g} ({lower} is lower)" if t.p < alpha
               else f"the versions do not differ at {alpha:g}")
    epochs = {k: budget / n for k, n in tokens.items()}
    regime = (f"The budget is {epochs['A']:.2f} passes over A's training tokens and {epochs['B']:.2f} over B's"
              + (": under one epoch, a duplicated document is rarely drawn twice, so removing duplicates can change "
                 "little; repetition starts to matter once a run passes over its data several times (Hernandez et "
                 "al. 2022, https://arxiv.org/abs/2205.10487)." if max(epochs.values()) < 1 else "."))
    return (f"Val loss: A {t.mean_a:.4f}, B {t.mean_b:.4f} nats/token (A − B = {t.diff:+.4f}; Welch t = {t.t:.2f}, "
            f"df = {t.df:.1f}, p = {t.p:.2g}; Hedges' g = {t.hedges_g:.2f}): {verdict}. Bits per byte: A "
            f"{b.mean_a:.4f}, B {b.mean_b:.4f} (p = {b.p:.2g}). {regime}")


def isoflop_table(iso: IsoFLOP) -> pd.DataFrame:
    return pd.DataFrame([{"budget C": f"{c:.3g}", "size": size, "N'": r.n_params_matmul, "tokens D": r.tokens,
                          "D/N'": round(r.tokens / r.n_params_matmul, 1), "steps": r.steps, "FLOPs used": f"{r.flops:.3g}",
                          "val loss": round(r.val_loss, 4), "run": f"`{r.run_id}`"} for c, size, r in iso.points])


def plot_isoflop(iso: IsoFLOP):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    budgets = sorted({c for c, _, _ in iso.points})
    colors = plt.cm.viridis(np.linspace(0, 0.85, max(1, len(budgets))))
    for c, color in zip(budgets, colors, strict=True):
        pts = sorted((r.n_params_matmul, r.val_loss) for b, _, r in iso.points if b == c)
        ax.plot(*zip(*pts, strict=True), "o", color=color, label=f"C = {c:.2g}")
        curve = next((f for f in (iso.fit.curves if iso.fit else []) if f.budget == c), None)
        if curve:
            xs = np.exp(np.linspace(math.log(pts[0][0]), math.log(pts[-1][0]), 50))
            ax.plot(xs, curve.c2 * np.log(xs) ** 2 + curve.c1 * np.log(xs) + curve.c0, "-", color=color, lw=1)
            ax.plot([curve.n_opt], [curve.loss_min], "*", color=color, ms=12)
    ax.set(xscale="log", xlabel="N' (matmul parameters)", ylabel="val loss (nats/token)", title="IsoFLOP curves")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if iso.fit:
        cs = np.array([f.budget for f in iso.fit.curves])
        bx.plot(cs, [f.n_opt for f in iso.fit.curves], "o", label="N_opt (parabola minimum)")
        grid = np.logspace(math.log10(cs.min()) - 0.3, math.log10(cs.max()) + 0.3, 20)
        bx.plot(grid, [iso.fit.n_opt(g) for g in grid], "-", label=f"N_opt ∝ C^{iso.fit.n_opt.exponent:.2f}")
        bx.plot(cs, [f.d_opt for f in iso.fit.curves], "s", label="D_opt")
        bx.plot(grid, [iso.fit.d_opt(g) for g in grid], "--", label=f"D_opt ∝ C^{iso.fit.d_opt.exponent:.2f}")
        bx.set(xscale="log", yscale="log", xlabel="C (FLOPs)", ylabel="parameters / tokens", title="Fitted optima")
        bx.legend(fontsize=8)
        bx.grid(alpha=0.3)
    return fig


def isoflop_text(iso: IsoFLOP) -> str:
    """The fit against Chinchilla's, and the small-vs-large answer at the largest budget, from the numbers."""
    if iso.fit is None:
        return f"The sweep could not be fitted: {iso.fit_error}."
    f = iso.fit
    tpp = f.tokens_per_param
    inside = sum(c.inside for c in f.curves)
    parts = [f"Fitted exponents: N_opt ∝ C^a with a = {f.n_opt.exponent:.3f} ({f.level:.0%} bootstrap interval "
             f"{f.a_interval[0]:.3f} to {f.a_interval[1]:.3f}, {f.draws} of {f.draws_tried} draws fitted), D_opt ∝ "
             f"C^b with b = {f.d_opt.exponent:.3f} ({f.b_interval[0]:.3f} to {f.b_interval[1]:.3f}); Chinchilla "
             f"finds a ≈ b ≈ {CHINCHILLA_A}. Tokens per parameter at the optimum: "
             f"{', '.join(f'{x:.1f}' for x in tpp)} at the {len(tpp)} budgets (Chinchilla: about "
             f"{CHINCHILLA_TOKENS_PER_PARAM:.0f}). Loss: L_min ∝ C^-{-f.loss.exponent:.3f}. {inside} of "
             f"{len(f.curves)} minima lie inside the sizes trained."]
    for budget, why in f.excluded:
        why = re.sub(r"np\.float64\(([^)]*)\)", r"\1", why.split(": ", 1)[-1])
        parts.append(f"Left out of the fit: C = {budget:.2g}, whose curve has no minimum ({why}).")
    a_lo, a_hi = f.a_interval
    cs = [c.budget for c in f.curves]
    steps = [r.steps for _, _, r in iso.points]
    parts.append(f"How far to trust it: the exponents rest on {len(f.curves)} minima spanning "
                 f"{math.log10(max(cs) / min(cs)):.2f} orders of magnitude of C (a's interval {a_lo:.2f} to "
                 f"{a_hi:.2f}), from runs of {min(steps):,} to {max(steps):,} steps; Chinchilla fitted over 400 models "
                 "of 70M to 16B parameters.")
    top = max(c for c, _, _ in iso.points)
    at_top = [r for c, _, r in iso.points if c == top]
    best = min(at_top, key=lambda r: r.val_loss)
    small = min(at_top, key=lambda r: r.n_params_matmul)
    large = max(at_top, key=lambda r: r.n_params_matmul)
    curve = next((x for x in f.curves if x.budget == top), None)
    parts.append(f"Small model longer or larger model shorter? At C = {top:.2g}, the smallest model "
                 f"(N' = {small.n_params_matmul:,}, {small.tokens:,} tokens) reached {small.val_loss:.4f}, the largest "
                 f"(N' = {large.n_params_matmul:,}, {large.tokens:,} tokens) {large.val_loss:.4f}, and the best was "
                 f"N' = {best.n_params_matmul:,} on {best.tokens:,} tokens ({best.val_loss:.4f})"
                 + (f"; the fitted optimum there is N' ≈ {curve.n_opt:,.0f} on D ≈ {curve.d_opt:,.0f} tokens."
                    if curve else "."))
    return " ".join(parts)


def build_log(log: WeeklyLog, cfg: Week06Config, r: dict[str, Any]) -> None:
    v: Versions = r["versions"]
    demo: BudgetDemo = r["demo"]
    ab: ABResult = r["ab"]
    iso: IsoFLOP = r["iso"]
    log.section("Budget", "Day 36. Every run below has a budget the loop enforces (`loop.max_tokens` or "
                "`loop.max_seconds`) and a pre-flight estimate printed before it started: parameters, tokens, FLOPs "
                "(6N'·D + the attention term, N' = matmul weights; and Kaplan's 6ND on non-embedding parameters), "
                "time from a few timed steps, memory from weights + gradients + AdamW state + activations "
                "(`shared.train.preflight`). Actual memory is the process's resident-set growth during training on "
                "the CPU (tensors only on a GPU).")
    log.table(estimate_table([demo.by_tokens, demo.by_seconds]), "budget_demo",
              "The same model under a token budget and under a wall-clock budget: estimate beside actual")
    log.section("Data versions", f"Days 37-38. Sources: {', '.join(cfg.data.sources + cfg.data.extra)}. The val set "
                f"({cfg.data.val_frac:.0%} of document groups, seed {cfg.data.split_seed}) was held out before any "
                f"filter: {v.val_held_out:,} documents, {v.val_removed_exact} exact duplicates within it and "
                f"{v.val_removed_contaminated} with a duplicate in A's training documents removed, "
                f"{len(v.docs['val']):,} left. One byte-level BPE ({v.tokenizer.vocab_size} ids, trained on A's "
                f"training documents in {v.tokenizer_s:.1f} s) encodes everything.")
    log.table(version_table(v), "versions", "A and B (duplicate rate: exact + near duplicates among the training "
              "documents)")
    log.table(source_table(v), "sources", "Documents per source")
    log.table(steps_table(v), "filters", "What each filter removed on the way from A to B, in order "
              "(Gopher rules: Rae et al. 2021, appendix A.1.1; near dedup: MinHash + LSH)")
    log.table(examples_table(v), "filter_examples", f"Up to {cfg.data.examples} removed documents per filter")
    log.plot(plot_lengths(v), "lengths", "Document lengths in words, A vs B")
    log.section("A vs B at the same token budget", f"Days 39-40. The same model on each version, "
                f"{cfg.ab.max_tokens:,} tokens, seeds {list(cfg.ab.seeds)}; val loss on the whole common val set.")
    log.table(ab_table(ab), "ab", "Per run")
    log.text(ab_text(ab, cfg.ab.alpha, cfg.ab.max_tokens, {k: ver.manifest["counts"]["train"]["tokens"]
                                                          for k, ver in (("A", v.a), ("B", v.b))}))
    for name in ("A", "B"):
        log.text(f"Samples from {name} (seed-0 model, temperature {cfg.ab.temperature:g}, sample seeds 0-"
                 f"{cfg.ab.samples - 1}):\n\n" + "\n\n".join(f"```text\n{s.strip()}\n```" for s in ab.samples[name]))
    log.section("Model size under a fixed budget (IsoFLOP)", f"Chinchilla approach 2 on version B: sizes "
                f"{', '.join(f'{s.n_layer}x{s.n_embd}' for s in cfg.isoflop.sizes)} at budgets "
                f"{', '.join(f'{c:.2g}' for c in cfg.isoflop.budgets)} FLOPs, each on D = C / (FLOPs per token) "
                f"tokens (a cosine over its own steps). Left out for fewer than {cfg.isoflop.min_steps} steps: "
                + (", ".join(f"{s} at {c:.2g} ({n} steps)" for c, s, n in iso.skipped) or "none") + ".")
    log.table(isoflop_table(iso), "isoflop", "Every IsoFLOP run")
    log.plot(plot_isoflop(iso), "isoflop", "IsoFLOP curves with their parabolas (stars: minima), and the fitted optima")
    log.text(isoflop_text(iso))
    log.table(estimate_table(iso_runs(iso) + [x for runs in ab.runs.values() for x in runs]), "estimates",
              "Pre-flight estimate beside actual, every run")
    log.section("Memo", f"[{r['memo_path'].name}]({r['memo_link']}), generated from the registry: "
                f"recommends version {r['memo'].version}" + (
                    f", N' ≈ {r['memo'].n_opt:,.0f} and D ≈ {r['memo'].d_opt:,.0f} tokens" if r["memo"].n_opt else "")
                + f" for {cfg.memo.budget_flops:.3g} FLOPs.")
    log.table(pd.DataFrame([as_row(x) for x in r["all_runs"]]).drop(columns=["model"], errors="ignore"), "runs",
              "Every run of the week")
    log.table(pd.DataFrame([{"stage": k, "seconds": round(s, 1)} for k, s in r["timings"].items()]), "timings",
              "Where the time went")
    log.section("Config", "The resolved config of this run (defaults ← `configs/week06.yaml` ← the profile ← "
                "overrides).")
    log.config(cfg)
