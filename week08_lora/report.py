"""Week 8's log body: the harness table, the memory breakdown and step times, the runs, the loss and grad-norm
curves, the rank sweep and the alpha x lr grid, the bitsandbytes check, the Q&A, the decision table, the export."""

from __future__ import annotations

from typing import Any

import pandas as pd

from shared.report import WeeklyLog
from week08_lora.experiments import LABELS, WeekResults

MEM = ("weights", "gradients", "optimizer", "activations")


def _fig(w: float = 6.5, h: float = 3.6) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h))


def harness_section(log: WeeklyLog, res: WeekResults) -> None:
    keys = ("format_compliance", "rougeL", "exact_match", "instruction_following", "items", "seconds")
    rows = [{"model": label, **{k: r.get(k) for k in keys}} for label, r in res.scored.items()]
    log.section("Harness (week 7's 40 frozen items, greedy)",
                "Every row is scored by week 7's harness on the same items; the rows also go to `runs/harness.csv`.")
    log.table(pd.DataFrame(rows), "harness")


def memory_section(log: WeeklyLog, res: WeekResults) -> None:
    if not res.bench:
        return
    df = pd.DataFrame(res.bench)
    shown = df[["variant", "compute dtype", "trainable params", *MEM, "total", "s/step", "tokens/s"]].copy()
    for k in (*MEM, "total"):
        shown[k] = (shown[k] / 2**20).round(1)
    shown = shown.rename(columns={k: f"{k} (MiB)" for k in (*MEM, "total")})
    b = res.bench[0]
    log.section("Memory and speed per step",
                f"One step on one fixed batch ({b['batch']} examples, {b['tokens']} real tokens), counted from the "
                "tensors: weights and buffers, gradients, optimizer state, and the activations autograd saved for "
                f"backward (saved-tensor hooks); then {b['steps timed']} timed steps (median).")
    log.table(shown, "memory")
    fig, ax = _fig()
    bottom = [0.0] * len(df)
    for k in MEM:
        vals = (df[k] / 2**30).tolist()
        ax.bar(df["variant"], vals, bottom=bottom, label=k)
        bottom = [x + y for x, y in zip(bottom, vals, strict=True)]
    ax.set_ylabel("GiB")
    ax.legend()
    log.plot(fig, "memory", "Memory of one training step by where it goes (counted bytes)")


def runs_section(log: WeeklyLog, res: WeekResults) -> None:
    log.section("Runs", "Every run of the week; `reused` runs were finished before (same config hash).")
    log.table(pd.DataFrame([r.row() for r in res.runs.values()]), "runs")
    if res.skipped:
        log.table(pd.DataFrame([{"variant": k, "why not run": v} for k, v in res.skipped.items()]), "skipped")
    main = [m for m in ("full", "lora", "peft", "qlora", "bnb") if m in res.runs] + ["sft+lora"] * ("sft+lora" in res.runs)
    for key, name, ylabel in (("loss", "loss_curves", "train loss (nats/token)"), ("grad_norm", "grad_norms",
                                                                                   "grad norm (before clipping)")):
        fig, ax = _fig()
        for m in main:
            rows = [r for r in res.runs[m].train_rows if key in r]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=LABELS.get(m, m), lw=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend()
        log.plot(fig, name, f"{ylabel} per step, same batches for every variant")


def sweep_section(log: WeeklyLog, res: WeekResults, val_records: int) -> None:
    if res.sweep:
        rs = [res.runs[n] for n in res.sweep]
        log.section("Rank sweep", f"Hand LoRA at alpha = {rs[0].spec.alpha / rs[0].spec.r:g} x r (alpha/r fixed), "
                    f"{rs[0].steps} steps each; val loss on the first {val_records} val records.")
        log.table(pd.DataFrame([{"r": r.spec.r, "trainable params": r.trainable_params,
                                 "adapter MiB": round(r.adapter_bytes / 2**20, 2),
                                 "final val loss": round(r.final_val_loss, 4), "run id": r.run_id} for r in rs]),
                  "rank_sweep")
        fig, ax = _fig()
        ax.plot([r.spec.r for r in rs], [r.final_val_loss for r in rs], "o-")
        ax.axhline(rs[0].first_val_loss, ls=":", c="gray", label="before training")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("rank r")
        ax.set_ylabel("final val loss")
        ax.legend()
        log.plot(fig, "rank_sweep", "Final val loss vs LoRA rank")
    if res.grid:
        gs = [res.runs[n] for n in res.grid]
        log.section("Alpha x learning rate", f"Hand LoRA at r = {gs[0].spec.r}: alpha scales the update like the lr.")
        log.table(pd.DataFrame([{"alpha": r.spec.alpha, "alpha/r": r.spec.alpha / r.spec.r, "lr": r.spec.lr,
                                 "final val loss": round(r.final_val_loss, 4),
                                 "drop": round(r.first_val_loss - r.final_val_loss, 4), "run id": r.run_id}
                                for r in gs]), "alpha_lr")


def bnb_section(log: WeeklyLog, res: WeekResults) -> None:
    log.section("bitsandbytes QLoRA vs the hand-written QLoRA (adapter gradients, one batch)")
    log.table(pd.DataFrame([{"key": k, "value": v} for k, v in res.bnb.items()]), "bnb_check")


def qa_section(log: WeeklyLog, items: list[dict[str, Any]], cells: list[dict[str, Any]], doc: str) -> None:
    log.section("Decision table", f"Also in [{doc}]({doc}).")
    log.table(pd.DataFrame([{**c, "runs": ", ".join(c["runs"])} for c in cells]), "decision")
    log.section("Failure modes (Q&A)")
    log.table(pd.DataFrame([{"question": i["question"], "measured": i["measured"], "fix": i["fix"],
                             "reproduction": i["reproduction"],
                             "shown": "n/a: " + i["skip"] if i["skip"] else i["shown"]} for i in items]), "qa")


def build_log(log: WeeklyLog, cfg: Any, res: WeekResults, items: list, cells: list, doc: str) -> None:
    harness_section(log, res)
    memory_section(log, res)
    runs_section(log, res)
    n_val = res.val_records
    sweep_section(log, res, min(cfg.sweep.val_examples, n_val) if cfg.sweep.val_examples else n_val)
    bnb_section(log, res)
    qa_section(log, items, cells, doc)
    if res.export:
        log.section("Export", f"`{res.export['path']}`: week 7's SFT model + this week's LoRA, merged (HF format, "
                    "safetensors): week 11 serves it.")
        log.table(pd.DataFrame([res.export]), "export")
    if res.rerun:
        log.section("Rerun", f"`{res.rerun['command']}` re-trains `{res.rerun['name']}` into a fresh run folder.")
        log.table(pd.DataFrame({"step": range(1, len(res.rerun["train_original"]) + 1),
                                "original": res.rerun["train_original"], "rerun": res.rerun["train_rerun"]}), "rerun")
    log.section("Timings (s)")
    log.table(pd.DataFrame([{"stage": k, "seconds": round(v, 1)} for k, v in res.timings.items()]), "timings")
    log.section("Config")
    log.config(cfg)
