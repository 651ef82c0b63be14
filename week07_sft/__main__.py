"""``python -m week07_sft [--profile smoke|cpu|gpu] [--stage S] [key=value ...]`` (``make week07``).

Supervised fine-tuning of a pretrained model in the Alpaca format with the project's own response-only loss on the
shared loop: score the base model with the eval harness, fine-tune on v1 (all records) and v2 (cleaned) at the same
budget and score both, check the objective and the training against TRL's SFTTrainer, over-fit a small subset on
purpose (onset and memorisation), fine-tune the project's own GPT as the from-scratch row, re-run one run from its
config, and write the log. Finished runs are reused (cached by config hash). ``--stage S`` stops after stage S,
prints its summary and writes no log.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402

from shared.cli import command_line, resolve_profile, run_week, week_arg_parser  # noqa: E402
from shared.repro import environment  # noqa: E402
from week07_sft import checks, config, experiments  # noqa: E402
from week07_sft.data import load_week_data  # noqa: E402

STAGES = ("data", "base", "sft", "trl", "overfit", "scratch", "all")


def _show(stage: str, summary: dict) -> int:
    print(json.dumps({"stage": stage, **summary}, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    t0 = T_START if argv is None else time.perf_counter()
    parser = week_arg_parser("week07_sft", __doc__.splitlines()[0])
    parser.add_argument("--stage", choices=STAGES, default="all", help="run only up to this stage (default: all)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    profile, overrides, stage = resolve_profile(args.profile), args.overrides, args.stage
    cfg = config.load(profile, overrides)

    t = time.perf_counter()
    data = load_week_data(cfg)
    from week07_sft.base import base_model_dir

    base_dir = base_model_dir(cfg.base, data.v1, data.hashes["v1"])
    timings = {"data + base model": time.perf_counter() - t}
    if stage == "data":
        return _show(stage, {"v1": len(data.v1), "v2": len(data.v2), "val": len(data.val), "eval": len(data.eval_items),
                             "overlap": data.overlap.n_removed, "base": str(base_dir),
                             "clean": {s.name: s.removed or s.fixed for s in data.clean.steps}})
    t = time.perf_counter()
    base = experiments.score(cfg, f"{base_dir.name} (base)", "base", base_dir, data.eval_items,
                             data.hashes["eval_set"])
    timings["base model harness"] = time.perf_counter() - t
    res = experiments.WeekResults(base_dir, base, timings=timings)
    if stage == "base":
        return _show(stage, base.row)
    experiments.run_sft_versions(cfg, profile, data, res)
    if stage == "sft":
        return _show(stage, {v: s.row for v, s in res.scored.items()})
    if cfg.trl.enabled:
        experiments.run_trl(cfg, profile, data, res)
    if stage == "trl":
        return _show(stage, {"batch": res.trl["batch"], "bench": res.trl["bench"]})
    experiments.run_overfit(cfg, profile, data, res)
    if stage == "overfit":
        return _show(stage, {"onset": res.overfit["onset"], "memorised": {k: v for k, v in
                                                                          res.overfit["memorised"].items()
                                                                          if not k.endswith("rows")}})
    experiments.run_scratch(cfg, profile, data, res)
    if stage == "scratch":
        return _show(stage, {"scratch": res.scored.get("scratch", res.scratch_reason)})
    experiments.run_rerun(cfg, profile, data, res)

    from shared.report import WeeklyLog, log_dir
    from week07_sft import report  # matplotlib and pandas: only for the log

    out = log_dir("week07", profile)
    log = WeeklyLog("week07", "Week 07 — supervised fine-tuning: the SFT objective by hand, checked against TRL, "
                    "one eval harness", out)
    timings["total"] = time.perf_counter() - t0
    log.header(environment(), profile, command_line("week07_sft", profile, overrides),
               {"wall clock (s)": f"{timings['total']:.1f}", "base model": base_dir.name})
    judge = cfg.check.judge_eval
    v1, v2 = res.runs["v1"], res.runs["v2"]
    s_base, s1, s2 = base.row, res.scored["v1"].row, res.scored["v2"].row
    on = res.overfit["onset"]
    types = {}
    for i in data.eval_items:
        types[i.task_type] = types.get(i.task_type, 0) + 1
    log.add(
        checks.eval_set_clean(types, cfg.eval_set.min_task_types, data.overlap.n_removed, len(data.eval_items)),
        checks.loss_decreases(v1.first_val_loss, v1.final_val_loss, "sft-v1"),
        checks.beats_base(s_base, s1, judge),
        checks.overfit_found(on.step, on.best_val, on.rise, on.train_fell_after, res.overfit["epochs"],
                             res.overfit["memorised"]["train"], res.overfit["memorised"]["eval"]),
        checks.versions_compared(s1, s2, v1.steps, v2.steps, data.clean.removed),
        checks.improvements_show([s.items for s in res.seeds["v1"]], [s.items for s in res.seeds["v2"]],
                                 cfg.check.alpha, judge),
        checks.harness_checkpoints([base.label, *(s.label for s in res.scored.values())]),
        *report.trl_checks(cfg, res),
        checks.configs_cited(report.cited_runs(res)),
        checks.rerun_reproduces(res.rerun.get("original"), res.rerun.get("rerun"), res.rerun.get("name", "")),
        checks.export_loads(res.export_check["recorded"], res.export_check["reloaded"], res.export_check["path"]),
        checks.scratch_row(res.scored["scratch"].row if "scratch" in res.scored else None, res.scratch_reason,
                           res.scratch_window),
        checks.within_time(timings["total"], cfg.check.time_budget_s),
    )
    report.build_log(log, cfg, data, res)
    return log.finish(timings["total"])


if __name__ == "__main__":
    sys.exit(run_week(main))
