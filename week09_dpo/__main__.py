"""``python -m week09_dpo [--profile smoke|cpu|gpu] [--stage S] [key=value ...]`` (``make week09``).

Direct Preference Optimization on week 8's model: the preference pairs (two sources, a rubric, a fixed split by
prompt), the DPO loss written by hand on the shared loop with LoRA (the reference = the adapters switched off),
checked against TRL's ``DPOTrainer`` on one batch, on the first training steps and in step time; held-out preference
accuracy SFT vs DPO; the week-7 harness and HH prompts before and after; a beta sweep, IPO, a deliberately bad
setting diagnosed from the metrics with two mitigations; a rerun. ``--stage S`` stops after stage S and prints its
summary, writing no log.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402

from shared.cli import command_line, resolve_profile, run_week, week_arg_parser  # noqa: E402
from shared.repro import environment  # noqa: E402
from week09_dpo import checks, config, experiments  # noqa: E402
from week09_dpo.data import load_week_data  # noqa: E402

STAGES = ("data", "trl", "main", "bench", "sweep", "all")


def main(argv: list[str] | None = None) -> int:
    t0 = T_START if argv is None else time.perf_counter()
    parser = week_arg_parser("week09_dpo", __doc__.splitlines()[0])
    parser.add_argument("--stage", choices=STAGES, default="all", help="run only up to this stage (default: all)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    profile, overrides, stage = resolve_profile(args.profile), args.overrides, args.stage
    cfg = config.load(profile, overrides)
    t = time.perf_counter()
    start, tok = experiments.load_start_tokenizer(cfg)
    data = load_week_data(cfg, tok)
    res = experiments.WeekResults(start, tok, timings={"data + starting model": time.perf_counter() - t})
    show = {"data": lambda: {"stats": res.data_stats, "rubric": res.rubric},
            "trl": lambda: {"batch": res.trl_batch, "run": res.trl_run}, "main": lambda: res.runs["dpo"].row(),
            "bench": lambda: res.bench, "sweep": lambda: {n: r.row() for n, r in res.runs.items()}}
    steps = [("data", lambda: experiments.data_stage(cfg, data, res)),
             ("trl", lambda: experiments.trl_stage(cfg, data, res)),
             ("main", lambda: experiments.main_stage(cfg, profile, data, res)),
             ("bench", lambda: experiments.bench_stage(cfg, data, res)),
             ("sweep", lambda: experiments.sweep_stage(cfg, profile, data, res))]
    for name, fn in steps:
        fn()
        if stage == name:
            print(json.dumps({"stage": name, "summary": show[name]()}, indent=2, default=str))
            return 0
    experiments.rerun_stage(cfg, profile, data, res)

    from shared.report import WeeklyLog, log_dir
    from week09_dpo import report
    from week09_dpo.analysis import accuracy_rows, decide, diagnose_runs, harness_change

    out = log_dir("week09", profile)
    log = WeeklyLog("week09", "Week 09 — DPO by hand, checked against TRL", out)
    res.timings["total"] = time.perf_counter() - t0
    env = environment()
    log.header(env, profile, command_line("week09_dpo", profile, overrides),
               {"wall clock (s)": f"{res.timings['total']:.1f}", "start model": start.name})
    acc, hits, p_value, per_source = accuracy_rows(res, cfg)
    diag = diagnose_runs(res, cfg)
    bad = next((r for r in diag if r["run"] == "bad"), None)
    fixes = {r["run"]: r["flagged"] for r in diag if r["run"] in res.roles.get("failure", []) and r["run"] != "bad"}
    change, others = harness_change(res, experiments.sft_label(cfg))
    main_diag = next((r for r in diag if r["run"] == "dpo"), None)
    decision, why, inputs = decide(hits, p_value, change, cfg, main_diag["flagged"] if main_diag else None)
    main_run = res.runs.get("dpo")
    bench = {b["impl"]: b for b in res.bench}
    sweep = [res.runs[n] for n in res.roles.get("sweep", [])]
    variant = res.runs.get(cfg.run.variant)
    b = res.trl_batch
    from shared.tasks.dpo import initial_loss

    log.add(
        checks.rubric_followed(res.rubric),
        checks.training_stable([r["loss"] for r in main_run.train_rows] if main_run else [],
                               main_run.evals if main_run else [], cfg.check.kl_bound,
                               initial_loss(cfg.dpo.loss, cfg.dpo.beta)),
        checks.accuracy_improves(hits, p_value, cfg.check.alpha, per_source, cfg.check.judge_eval),
        checks.reference_frozen(res.export.get("reference_unchanged"), res.export.get("reference_grads"),
                                res.memory.get("frozen copy (bytes)", 0.0)),
        *([checks.trl_loss_equal(b.same_ids, b.same_mask, b.abs_diff, cfg.trl.loss_atol, b.hand_loss, b.trl_loss),
           checks.trl_curves_agree([r["loss"] for r in main_run.train_rows] if main_run else [],
                                   [r["loss"] for r in res.trl_run.rows], cfg.trl.curve_atol)] if b is not None else
          [checks.Check.skip("DPO loss = TRL's on one batch", res.skipped.get("trl", "not run"), "|Δ| ≤ atol"),
           checks.Check.skip("hand DPO and TRL train the same curve", res.skipped.get("trl", "not run"), "|Δ| ≤ atol")]),
        checks.speed_close(bench.get("hand", {}).get("s/step"), bench.get("trl", {}).get("s/step"),
                           cfg.trl.speed_slack, cfg.check.judge_speed),
        checks.sweep_done([r.dpo.beta for r in sweep], [r.evals[-1] for r in sweep]),
        checks.variant_trains(cfg.run.variant, variant.evals if variant else []),
        checks.failure_shown(bad["flagged"] if bad else [], fixes, bad["summary"] if bad else ""),
        checks.failure_reported(diag),
        checks.quality_kept(change, others, cfg.check.alpha, cfg.check.judge_eval),
        checks.decision_backed(decision, inputs),
        checks.harness_rows(list(res.scored), [experiments.sft_label(cfg), "SFT + DPO"]),
        checks.export_loads(res.export.get("max_abs_logit_diff"), res.export.get("path", "")),
        checks.rerun_reproduces(res.rerun.get("original"), res.rerun.get("rerun"), res.rerun.get("name", "")),
        checks.within_time(res.timings["total"], cfg.check.time_budget_s),
    )
    report.data_section(log, res)
    report.accuracy_section(log, acc, cfg.dpo.beta)
    report.curves_section(log, res)
    report.bench_section(log, res)
    report.sweep_section(log, res)
    report.failure_section(log, res, diag)
    report.harness_section(log, res)
    report.decision_section(log, decision, why, inputs)
    report.runs_section(log, res)
    log.config(cfg)
    return log.finish(res.timings["total"])


if __name__ == "__main__":
    sys.exit(run_week(main))
