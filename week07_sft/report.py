"""Week 7's log: the data and its cleaning, the harness table, the SFT runs and curves, TRL, over-fitting."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from shared.config import config_hash  # noqa: E402
from shared.data.instruct import record_stats  # noqa: E402
from shared.report import Check, WeeklyLog  # noqa: E402
from week07_sft import checks  # noqa: E402
from week07_sft.config import Week07Config  # noqa: E402
from week07_sft.data import WeekData  # noqa: E402
from week07_sft.experiments import WeekResults  # noqa: E402

HARNESS_COLUMNS = ("model", "stage", "items", "format_compliance", "rougeL", "exact_match", "exact_items",
                   "instruction_following", "following_items", "ended_eos", "no_echo", "seconds")


def _r(x: Any, n: int = 3) -> Any:
    return None if x is None or x == "" else round(float(x), n)


def trl_checks(cfg: Week07Config, res: WeekResults) -> list[Check]:
    """The three TRL checks (or SKIPs when ``trl.enabled`` is off)."""
    if not res.trl:
        why = "trl.enabled=false"
        return [Check.skip(n, why, "see the TRL section") for n in
                ("SFT loss equals TRL's on a fixed batch", "trained like TRL, eval loss within 5%",
                 "SFT step not slower than TRL's by > 10%")]
    b, run, bench = res.trl["batch"], res.trl["run"], {r["impl"]: r for r in res.trl["bench"]}
    return [checks.trl_loss_equal(b.same_ids, b.same_mask, b.project_loss, b.trl_loss, b.exact_loss,
                                  cfg.trl.loss_rtol),
            checks.trl_parity(res.runs["v1"].final_val_loss, run.evals[-1]["val_loss"], cfg.trl.parity_rel, run.steps),
            checks.speed_vs_trl(bench["ours"]["s_per_step"], bench["trl"]["s_per_step"], cfg.trl.speed_slack,
                                cfg.check.judge_speed)]


def cited_runs(res: WeekResults) -> list[dict[str, str]]:
    """Each reported run's config hash, data hash, and whether its config.yaml still hashes to its folder name."""
    import hashlib

    out = []
    for r in res.runs.values():
        path = r.run_dir / "config.yaml"  # shared.config.save_config: the text config_hash hashes
        h = hashlib.sha256(path.read_bytes()).hexdigest()[:8] if path.is_file() else ""
        out.append({"name": r.name, "config_hash": r.config_hash, "data_sha256": r.data.sha256,
                    "config_matches": "yes" if h == r.config_hash else "no"})
    return out


def harness_table(res: WeekResults) -> pd.DataFrame:
    rows = [res.base.row, *(s.row for s in res.scored.values())]
    return pd.DataFrame([{k: (_r(r.get(k)) if k not in ("model", "stage", "items", "exact_items", "following_items")
                              else r.get(k)) for k in HARNESS_COLUMNS} for r in rows])


def by_type_table(res: WeekResults) -> pd.DataFrame:
    scored = [res.base, *res.scored.values()]
    types = sorted({i["task_type"] for s in scored for i in s.items})
    rows = []
    for t in types:
        row = {"task type": t, "items": sum(i["task_type"] == t for i in res.base.items)}
        for s in scored:
            vals = [i["rougeL"] for i in s.items if i["task_type"] == t]
            row[s.label] = _r(sum(vals) / len(vals)) if vals else None
        rows.append(row)
    return pd.DataFrame(rows)


def seeds_table(res: WeekResults) -> pd.DataFrame:
    """v1 and v2 once per seed: the run's val loss and its harness numbers."""
    rows = []
    for v in ("v1", "v2"):
        runs = [r for k, r in res.runs.items() if k == v or k.startswith(f"{v} seed ")]
        for r, s in zip(runs, res.seeds[v], strict=True):
            rows.append({"version": v, "run": r.name, "val loss after": _r(r.final_val_loss, 4),
                         "format_compliance": _r(s.row["format_compliance"]), "rougeL": _r(s.row["rougeL"]),
                         "instruction_following": _r(s.row["instruction_following"]), "run id": r.run_id})
    return pd.DataFrame(rows)


def items_table(res: WeekResults) -> pd.DataFrame:
    """One row per (model, eval item): the answer and its scores (every seed of v1 and v2)."""
    extra = [s for v in ("v1", "v2") for s in res.seeds.get(v, [])[1:]]
    return pd.DataFrame([{"model": s.label, "id": i["id"], "task_type": i["task_type"], "compliant": i["compliant"],
                          "ended": i["ended"], "rougeL": _r(i["rougeL"], 4), "exact": i["exact"],
                          "followed": i["followed"], "checks": ",".join(f"{k}={v}" for k, v in i["checks"].items()),
                          "answer": i["answer"]} for s in [res.base, *res.scored.values(), *extra] for i in s.items])


def samples_table(data: WeekData, res: WeekResults, n: int) -> pd.DataFrame:
    def cut(s: str, k: int = 160) -> str:
        s = " ".join(s.split()).replace("|", "/")
        return s[:k] + ("…" if len(s) > k else "")

    rows = []
    for j, item in enumerate(data.eval_items[:n]):
        # " / " between instruction and input: a "|" would split the Markdown table's cell
        row = {"task type": item.task_type, "instruction": cut(item.instruction + (" / " + item.input if item.input
                                                                                  else ""), 120),
               "reference": cut(item.reference, 100), "base": cut(res.base.items[j]["answer"])}
        for key in ("v1", "v2"):
            row[f"sft-{key}"] = cut(res.scored[key].items[j]["answer"])
        rows.append(row)
    return pd.DataFrame(rows)


def runs_table(res: WeekResults) -> pd.DataFrame:
    return pd.DataFrame([{
        "run": r.name, "data": r.data.version, "examples": r.examples, "dropped (> max_length)": r.dropped, "dropped (empty)": r.empty,
        "steps": r.steps, "tokens": r.tokens, "padding share": _r(r.padding_share, 2),
        "val loss before": _r(r.first_val_loss, 4), "val loss after": _r(r.final_val_loss, 4),
        "train s": _r(r.train_time_s, 1), "tokens/s": _r(r.tokens_per_sec, 0), "peak GiB": _r(r.peak_memory_gib, 2),
        "config hash": r.config_hash, "data sha256": r.data.sha256[:12], "run id": r.run_id,
        "reused": r.reused} for r in res.runs.values()])


def clean_tables(data: WeekData) -> tuple[pd.DataFrame, pd.DataFrame]:
    steps = pd.DataFrame([{"rule": s.name, "removed": s.removed, "fixed": s.fixed} for s in data.clean.steps])
    ex = pd.DataFrame([{"rule": s.name, "id": e["id"], "why": e["why"], "record": e["text"]}
                       for s in data.clean.steps for e in s.examples])
    return steps, ex


def stats_table(data: WeekData) -> pd.DataFrame:
    rows = []
    for name, recs in (("v1 train", data.v1), ("v2 train", data.v2), ("val", data.val)):
        s = record_stats(recs)
        rows.append({"split": name, "records": s["records"], **{f"from {k}": v for k, v in s["sources"].items()},
                     "with input": s["with_input"], "empty output": s["empty_output"],
                     "task types": ", ".join(f"{k} {v}" for k, v in s["task_types"].items())})
    return pd.DataFrame(rows)


def curves_plot(res: WeekResults):
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("v1", "-"), ("v2", "--")):
        r = res.runs[key]
        ax[0].plot([t["step"] for t in r.train_rows], [t["loss"] for t in r.train_rows], style, alpha=0.5,
                   label=f"{r.name} train (micro-batch)")
        ax[0].plot([e["step"] for e in r.evals], [e["val_loss"] for e in r.evals], style + "o", label=f"{r.name} val")
    if res.trl:
        run = res.trl["run"]
        ax[0].plot([s for s, _ in run.train_loss], [v for _, v in run.train_loss], ":", alpha=0.5,
                   label="TRL train (its log)")
        ax[0].plot([e["step"] for e in run.evals], [e["val_loss"] for e in run.evals], ":s", label="TRL val")
    ax[0].set(xlabel="step", ylabel="loss (nats / response token)", title="SFT: project vs TRL")
    ax[0].legend(fontsize=7)
    of = res.runs["overfit"]
    ax[1].plot([e["step"] for e in of.evals], [e["train_loss"] for e in of.evals], "o-", label="train (the subset)")
    ax[1].plot([e["step"] for e in of.evals], [e["val_loss"] for e in of.evals], "s-", label="val")
    on = res.overfit["onset"]
    if on.step is not None:
        ax[1].axvline(on.step, color="grey", ls="--", label=f"onset (step {on.step})")
    ax[1].set(xlabel="step", ylabel="loss (nats / response token)",
              title=f"{res.overfit['examples']} examples, {res.overfit['epochs']:.0f} epochs")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def build_log(log: WeeklyLog, cfg: Week07Config, data: WeekData, res: WeekResults) -> None:
    """Every section of the log, from the results (no number typed by hand)."""
    s1, s2, sb = res.scored["v1"].row, res.scored["v2"].row, res.base.row
    log.section("What ran", f"Base model `{res.base_dir.name}`; prompt template `{cfg.sft.template}`; every SFT run "
                f"{cfg.run.max_steps} steps of {cfg.loop.micro_batch} examples (max_length {cfg.sft.max_length}, "
                f"{cfg.loop.precision}), AdamW lr {cfg.optim.lr:g} with {cfg.schedule.warmup_steps} warm-up steps "
                f"and a cosine to {cfg.schedule.min_lr:g}. The harness decodes greedily, at most "
                f"{cfg.harness.max_new_tokens} new tokens, on {len(data.eval_items)} frozen eval items.")
    log.section("Data", f"{len(data.v1):,} training records (v1) and {len(data.val)} held-out val records; the "
                f"cleaning rules removed {data.clean.removed:,} records for v2 ({len(data.v2):,} left).")
    log.table(stats_table(data), "data_stats")
    steps, ex = clean_tables(data)
    log.table(steps, "clean_rules", "v2's rules, in order (a record is counted by the first rule that removes it)")
    if len(ex):
        log.table(ex, "clean_examples", "examples of each rule")
    log.table(pd.DataFrame([{"version": k, "sha256": v} for k, v in data.hashes.items()]), "data_hashes")
    log.section("The harness", f"Base → SFT v1: format compliance {sb['format_compliance']:.2f} → "
                f"{s1['format_compliance']:.2f}, ROUGE-L {sb['rougeL']:.3f} → {s1['rougeL']:.3f}; v2: compliance "
                f"{s2['format_compliance']:.2f}, ROUGE-L {s2['rougeL']:.3f}. Rates are shares of items; exact match "
                "counts only items with a short reference, instruction following only items with a checkable "
                "constraint (their counts are beside them).")
    log.table(harness_table(res), "harness")
    paired = checks.paired_harness(*(checks.seed_mean([s.items for s in res.seeds[v]]) for v in ("v1", "v2")))
    log.text(f"**v2 vs v1, item by item** (each item averaged over {len(res.seeds['v1'])} seeds per version; the "
             "table above holds the first seed's exported models). " + checks.describe_paired(paired) + ". "
             + checks.paired_verdict(paired, cfg.check.alpha, "v1", "v2"))
    log.table(seeds_table(res), "seeds", "v1 and v2 per seed (the seed orders the examples)")
    log.table(items_table(res), "items", "every model's answer and scores on every eval item (the paired tests' "
              "input)", show=False)
    log.table(by_type_table(res), "rouge_by_type", "ROUGE-L by task type")
    log.table(samples_table(data, res, cfg.harness.samples), "samples", "greedy answers (first items of the eval set)")
    log.section("SFT runs")
    log.table(runs_table(res), "runs")
    log.plot(curves_plot(res), "curves", "left: SFT v1/v2 and TRL (train loss per step, val loss at evals); right: "
             "the over-fitting run")
    if res.trl:
        b, run = res.trl["batch"], res.trl["run"]
        log.section("TRL as the reference",
                    f"On one batch of {b.examples} examples ({b.tokens} response tokens): project "
                    f"{b.project_loss:.7f} vs TRL {b.trl_loss:.7f} nats/token (|Δ| {b.abs_diff:.1e}); the exact "
                    f"value (model and cross-entropy in fp64) is {b.exact_loss:.7f}: the project's fp32 loss is "
                    f"{b.project_rel_err:+.1e} relative from it, TRL's {b.trl_rel_err:+.1e}. Trained "
                    f"alike for {run.steps} steps, TRL's model reaches val loss {run.evals[-1]['val_loss']:.4f} vs "
                    f"the project's {res.runs['v1'].final_val_loss:.4f}.")
        ours = {e["step"]: e["val_loss"] for e in res.runs["v1"].evals}
        log.table(pd.DataFrame([{"step": int(e["step"]), "project val loss": _r(ours.get(e["step"]), 4),
                                 "TRL val loss": _r(e["val_loss"], 4)} for e in run.evals]), "trl_parity")
        log.table(pd.DataFrame([{"implementation": r["impl"], "s/step (median)": _r(r["s_per_step"], 2),
                                 "tokens/s": _r(r["tokens_per_sec"], 0), "peak RSS GiB": _r(r["peak_rss_gib"], 2),
                                 "batch": r["batch"], "real tokens": r["tokens"], "padded tokens": r["padded_tokens"],
                                 "timed steps": r["steps"], "threads": r["threads"]} for r in res.trl["bench"]]),
                  "bench", "the same batch, one warm-up step then the timed ones, each in its own process")
    on, mem = res.overfit["onset"], res.overfit["memorised"]
    where = (f"val loss is lowest at step {on.step} ({on.best_val:.4f}) and ends {100 * on.rise:+.1f}% above it"
             if on.step is not None else f"val loss did not turn up (lowest {on.best_val:.4f})")
    log.section("Over-fitting on purpose", f"{res.overfit['examples']} examples for {res.overfit['epochs']:.0f} "
                f"epochs: {where}. Greedy answers reproduce the reference (ROUGE-L ≥ {cfg.overfit.rouge_threshold}) "
                f"on {100 * mem['train']:.0f}% of its training prompts and {100 * mem['eval']:.0f}% of eval prompts.")
    log.table(pd.DataFrame([{"step": int(e["step"]), "train loss (subset)": _r(e["train_loss"], 4),
                             "val loss": _r(e["val_loss"], 4)} for e in res.runs["overfit"].evals]), "overfit")
    if res.scratch_reason:
        log.section("From-scratch GPT", f"Not run: {res.scratch_reason}.")
    if res.rerun:
        log.section("Rerun", f"`{res.rerun['name']}` re-trained from its config into a fresh folder: final val loss "
                    f"{res.rerun['original']!r} vs {res.rerun['rerun']!r}.")
    log.section("Timings (s)")
    log.table(pd.DataFrame([{"stage": k, "seconds": round(v, 1)} for k, v in res.timings.items()]), "timings")
    log.section("Config", f"config hash {config_hash(cfg)}")
    log.config(cfg)
