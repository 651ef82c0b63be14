"""Week 9's log body: the data and its rubric, preference accuracy (SFT vs DPO), the training curves beside TRL's,
the step benchmark, the beta sweep, the variant, the failure analysis, the harness rows with samples side by side,
the HH deflection test, the decision, the runs and the timings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from shared.report import WeeklyLog
from week09_dpo.experiments import WeekResults


def _fig(w: float = 6.5, h: float = 3.6, n: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, n, figsize=(w * n if n > 1 else w, h))


def data_section(log: WeeklyLog, res: WeekResults) -> None:
    s = res.data_stats
    rows = []
    for src, st in s.items():
        if not isinstance(st, Mapping) or "pairs" not in st:
            continue
        rows.append({"source": src, "pairs": st["pairs"], "unique prompts": st["unique_prompts"],
                     **{f"{k} chars (median)": st["chars"][k]["median"] for k in ("prompt", "chosen", "rejected")},
                     "chosen longer": round(st["chosen_longer_share"], 3),
                     "dropped while reading": sum(s["read drops"].get(src, {}).values())})
    log.section("Preference data", "Both sources from the mirror through the registry, split by prompt (a fixed split: "
                "the prompts with the smallest sha256 go to the held-out side), encoded with EOS after each response; "
                "pairs longer than `dpo.max_length` are dropped and counted, never truncated.")
    log.table(pd.DataFrame(rows), "pairs")
    drops = [{"where": k, **v} for k, v in s.items() if k.startswith("encode drops") or k == "split"]
    drops += [{"where": f"read ({src})", **v} for src, v in s["read drops"].items()]
    log.table(pd.DataFrame(drops).fillna(0), "drops", "Drops while reading and encoding, and the split.")
    log.text("**Rubric.** Each rule is stated per source; the share is over every pair of that source.")
    log.table(pd.DataFrame([{"source": r["source"], "rule": r["rule"], "text": r["text"], "passed": r["passed"],
                             "total": r["total"], "share": round(r["share"], 3), "min share": r["min_share"]}
                            for r in res.rubric]), "rubric")


def accuracy_section(log: WeeklyLog, acc: list[dict[str, Any]], beta: float) -> None:
    log.section("Preference accuracy on held-out pairs",
                "The SFT model is the reference of the DPO run, so one pass gives both: a model's *log-prob "
                "accuracy* is the share of pairs whose chosen response it gives the higher summed log-prob; the DPO "
                f"model's *reward accuracy* is the share with implicit reward margin β(Δ_w − Δ_l) > 0 (β = {beta:g}; "
                "the SFT model's margins are all 0 by definition).")
    log.table(pd.DataFrame(acc), "preference_accuracy")


def curves_section(log: WeeklyLog, res: WeekResults) -> None:
    main = res.runs.get("dpo")
    if main is None:
        return
    df = pd.DataFrame(main.train_rows)
    fig, axes = _fig(4.2, 3.2, 3)
    axes[0].plot(df.step, df.loss, label="hand")
    axes[1].plot(df.step, df.margin, label="hand")
    axes[2].plot(df.step, df.logps_chosen, label="chosen")
    axes[2].plot(df.step, df.logps_rejected, label="rejected")
    if res.trl_run is not None and res.trl_run.rows:
        t = pd.DataFrame(res.trl_run.rows)
        axes[0].plot(t.step, t.loss, "o", mfc="none", label="TRL")
        axes[1].plot(t.step, t.margin, "o", mfc="none", label="TRL")
    for ax, title in zip(axes, ("train loss", "reward margin", "policy log-prob (summed, nats)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    log.section("Training: the main run beside TRL's",
                "Per-step metrics of the hand run (metrics.csv) and TRL's logged values on the same batches; both "
                "number steps from 1 (the loss of step 1 is taken before any update).")
    log.plot(fig, "curves", "DPO main run: loss, margin, chosen/rejected log-probs")
    log.table(pd.DataFrame([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.items()
                             if k in ("step", "val_loss", "reward_accuracy", "logprob_accuracy", "margin",
                                      "logps_chosen", "logps_rejected", "kl", "gen_length", "gen_repetition")}
                            for e in main.evals]), "main_evals", "Every periodic eval of the main run.")
    if res.trl_batch is not None:
        b = res.trl_batch
        log.text(f"TRL on one fixed batch ({b.pairs} pairs, {b.tokens} real tokens, the same non-zero adapters): hand "
                 f"{b.hand_loss:.7f} vs TRL {b.trl_loss:.7f} (|Δ| {b.abs_diff:.1e}).")
    if res.trl_run is not None and res.trl_run.rows:
        hand = {int(r["step"]): r for r in main.train_rows}
        log.table(pd.DataFrame([{"step": r["step"], "hand loss": round(hand[r["step"]]["loss"], 6),
                                 "TRL loss": round(r["loss"], 6),
                                 "|Δ|": f"{abs(hand[r['step']]['loss'] - r['loss']):.1e}",
                                 "hand margin": round(hand[r["step"]]["margin"], 5),
                                 "TRL margin": round(r["margin"], 5)}
                                for r in res.trl_run.rows if r["step"] in hand]), "trl_curve")


def bench_section(log: WeeklyLog, res: WeekResults) -> None:
    if not res.bench and not res.memory:
        return
    log.section("Step time and the reference's memory",
                "One batch, one untimed warm-up, then hand and TRL steps alternated (median). The reference costs no "
                "memory with LoRA: it is the policy with its adapters switched off; a frozen copy would hold "
                f"{res.memory.get('frozen copy (bytes)', 0) / 2**20:.1f} MiB of weights more.")
    if res.bench:
        log.table(pd.DataFrame([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in b.items()}
                                for b in res.bench]), "bench")


def sweep_section(log: WeeklyLog, res: WeekResults) -> None:
    names = res.roles.get("sweep", []) + res.roles.get("variant", [])
    if not names:
        return
    log.section("β sweep and the beyond-DPO variant", "Short runs from the same start on the same batches.")
    log.table(pd.DataFrame([res.runs[n].row() for n in names]), "sweep")
    fig, axes = _fig(4.2, 3.2, 2)
    for n in names:
        e = pd.DataFrame(res.runs[n].train_rows)
        axes[0].plot(e.step, e.margin, label=n)
        axes[1].plot(e.step, e.logps_chosen, label=n)
    axes[0].set_title("reward margin (train)")
    axes[1].set_title("chosen log-prob (train)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    log.plot(fig, "sweep", "β sweep and variant: margins and chosen log-probs per step")


def failure_section(log: WeeklyLog, res: WeekResults, diag_rows: list[dict[str, Any]]) -> None:
    if not diag_rows:
        return
    log.section("Failure modes: detected from the metrics",
                "Each detector compares a run's first periodic eval (policy = reference) with its last "
                "(`week09_dpo/diagnose.py`); the bad setting is deliberately bad, the other runs each change one "
                "thing.")
    rows = []
    for r in diag_rows:
        run = res.runs[r["run"]]
        rows.append({"run": r["run"], "lr": run.lr, "beta": run.dpo.beta, "sft weight": run.dpo.sft_weight,
                     **{m: ("**FLAG** " if d["flag"] else "") + str(d["text"]) for m, d in r["modes"].items()}})
    log.table(pd.DataFrame(rows), "failure_modes")
    fig, axes = _fig(4.2, 3.2, 2)
    for r in diag_rows:
        e = pd.DataFrame(res.runs[r["run"]].train_rows)
        axes[0].plot(e.step, e.logps_chosen, label=r["run"])
        axes[1].plot(e.step, e.margin, label=r["run"])
    axes[0].set_title("chosen log-prob (train)")
    axes[1].set_title("reward margin (train)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    log.plot(fig, "failure", "The bad setting and its mitigations")


def harness_section(log: WeeklyLog, res: WeekResults) -> None:
    keys = ("format_compliance", "rougeL", "exact_match", "instruction_following", "items", "seconds")
    log.section("Harness (week 7's frozen items, greedy)",
                "The SFT row is the start model (the DPO run's weights with the adapters switched off), the DPO row "
                "the merged export; both rows also go to `runs/harness.csv`.")
    log.table(pd.DataFrame([{"model": k, **{x: r.get(x) for x in keys}} for k, r in res.scored.items()]), "harness")
    if res.samples:
        log.text("**Samples side by side** (the same eval-set instructions, greedy):")
        log.table(pd.DataFrame([{k: _short(v) for k, v in s.items()} for s in res.samples]), "samples")
    d = res.deflection
    if d:
        log.text(f"**HH prompts** ({d['n']} held-out harmful requests, greedy, ≤ {d['max_new_tokens']} new tokens): the answer "
                 f"deflects (refusal lexicon of `shared.data.preference.deflects`) for SFT {d['sft_rate']:.2f} vs SFT + "
                 f"DPO {d['dpo_rate']:.2f}.")
        log.table(pd.DataFrame([{k: _short(v) for k, v in r.items()} for r in d["rows"]]), "hh_deflection")


def _short(v: Any, n: int = 160) -> Any:
    if not isinstance(v, str):
        return v
    v = " ".join(v.split()).replace("|", "/")
    return v if len(v) <= n else v[:n - 1] + "…"


def decision_section(log: WeeklyLog, decision: str, why: str, inputs: Mapping[str, float]) -> None:
    log.section("SFT only or SFT + DPO?", f"**{decision}** — {why}")
    log.table(pd.DataFrame([{"input": k, "value": round(v, 4)} for k, v in inputs.items()]), "decision")


def runs_section(log: WeeklyLog, res: WeekResults) -> None:
    log.section("Runs", "Every run of the week; `reused` runs had finished before (same config hash).")
    log.table(pd.DataFrame([r.row() for r in res.runs.values()]), "runs")
    if res.rerun:
        log.text(f"Rerun of `{res.rerun['name']}` into a fresh folder: final val loss "
                 f"{res.rerun['original']['val_loss']:.6f} vs {res.rerun['rerun']['val_loss']:.6f}.")
    log.section("Timings")
    log.table(pd.DataFrame([{"stage": k, "seconds": round(v, 1)} for k, v in res.timings.items()]), "timings")
