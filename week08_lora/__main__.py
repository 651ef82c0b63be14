"""``python -m week08_lora [--profile smoke|cpu|gpu] [--stage S] [key=value ...]`` (``make week08``).

Parameter-efficient fine-tuning on week 7's SFT task, scored by week 7's harness: full fine-tuning, LoRA (by hand
and by peft) and QLoRA (by hand and by bitsandbytes) from the same base at the same budget; a LoRA on week 7's SFT
export, merged and exported for week 11; memory (weights / gradients / optimizer / activations) and step time on
one batch; bitsandbytes' gradients vs the hand QLoRA's; a rank sweep and an alpha x lr grid; the failure modes
reproduced; a rerun. Writes the log and ``docs/peft-decision.md``. ``--stage S`` stops after stage S and prints
its summary, writing no log.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402

from shared.cli import command_line, resolve_profile, run_week, week_arg_parser  # noqa: E402
from shared.repro import environment  # noqa: E402
from week08_lora import checks, config, experiments  # noqa: E402
from week08_lora.data import load_week_data  # noqa: E402

STAGES = ("data", "main", "sft", "bench", "bnb", "sweep", "all")


def main(argv: list[str] | None = None) -> int:
    t0 = T_START if argv is None else time.perf_counter()
    parser = week_arg_parser("week08_lora", __doc__.splitlines()[0])
    parser.add_argument("--stage", choices=STAGES, default="all", help="run only up to this stage (default: all)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    profile, overrides, stage = resolve_profile(args.profile), args.overrides, args.stage
    cfg = config.load(profile, overrides)
    t = time.perf_counter()
    data = load_week_data(cfg)
    base, sft = experiments.starts(cfg)
    res = experiments.WeekResults(base, sft, timings={"data + starting models": time.perf_counter() - t},
                                  val_records=len(data.val))
    show = {"data": lambda: {"train": len(data.train), "val": len(data.val), "eval": len(data.eval_items),
                             "base": str(base.folder), "sft": str(sft.folder)},
            "main": lambda: {k: r.row() for k, r in res.runs.items()}, "sft": lambda: res.export,
            "bench": lambda: res.bench, "bnb": lambda: res.bnb,
            "sweep": lambda: {n: res.runs[n].final_val_loss for n in res.sweep + res.grid}}
    steps = [("data", lambda: experiments.context_rows(cfg, data, res)),
             ("main", lambda: experiments.run_main(cfg, profile, data, res)),
             ("sft", lambda: experiments.run_sft_adapter(cfg, profile, data, res)),
             ("bench", lambda: experiments.run_bench(cfg, data, res)),
             ("bnb", lambda: experiments.run_bnb_check(cfg, data, res)),
             ("sweep", lambda: experiments.run_sweeps(cfg, profile, data, res))]
    for name, fn in steps:
        fn()
        if stage == name:
            print(json.dumps({"stage": name, **{"summary": show[name]()}}, indent=2, default=str))
            return 0
    experiments.run_pitfalls(res)
    experiments.run_rerun(cfg, profile, data, res)

    from shared.report import WeeklyLog, log_dir
    from week08_lora import decision, report  # matplotlib and pandas: only for the log

    out = log_dir("week08", profile)
    log = WeeklyLog("week08", "Week 08 — LoRA and QLoRA by hand, checked against peft and bitsandbytes", out)
    res.timings["total"] = time.perf_counter() - t0
    env = environment()
    on_cuda = "cuda" in str(cfg.loop.device)
    log.header(env, profile, command_line("week08_lora", profile, overrides),
               {"wall clock (s)": f"{res.timings['total']:.1f}", "base model": base.name, "SFT start": sft.name})
    bench = {b["variant"]: b for b in res.bench}
    L, S = experiments.LABELS, res.scored
    lora_run, q_run = res.runs.get("lora"), res.runs.get("qlora")
    cells = decision.cells(res, L)
    items = decision.qa_items(res, cfg, on_cuda)
    doc_path = (out.parent / "peft-decision.md") if profile == "cpu" else (out / "week08-peft-decision.md")
    doc_link = "../peft-decision.md" if profile == "cpu" else "week08-peft-decision.md"
    judge = cfg.check.judge_eval
    log.add(
        checks.lora_saves_memory(bench.get("full"), bench.get("lora"), lora_run.first_val_loss if lora_run else
                                 float("nan"), lora_run.final_val_loss if lora_run else float("nan")),
        checks.tradeoff_stated(S.get(L["full"]), S.get(L["lora"]), bench.get("full", {}).get("total"),
                               bench.get("lora", {}).get("total")),
        checks.qlora_recorded(q_run, bench.get("qlora"), bench.get("lora"), res.skipped.get("bnb"),
                              res.runs.get("bnb")),
        checks.default_picked(S.get(L["lora"]), S.get(L["qlora"]), bench.get("lora", {}).get("total"),
                              bench.get("qlora", {}).get("total"), judge),
        checks.table_cites(cells, {r.run_id for r in res.runs.values()}),
        checks.qa_reproduced(items),
        checks.parity([r["loss"] for r in lora_run.train_rows] if lora_run else [],
                      [r["loss"] for r in res.runs["peft"].train_rows] if "peft" in res.runs else [],
                      cfg.check.parity_atol),
        checks.speed_close(bench.get("lora", {}).get("s/step"), bench.get("peft", {}).get("s/step"),
                           cfg.check.speed_slack, cfg.check.judge_speed),
        checks.bnb_gradients(res.bnb, cfg.check.grad_cos, on_cuda),
        checks.sweep_done([res.runs[n].spec.r for n in res.sweep], [res.runs[n].final_val_loss for n in res.sweep],
                          res.runs[res.sweep[0]].first_val_loss if res.sweep else float("nan")),
        checks.export_loads(res.export.get("in_memory"), res.export.get("reloaded"), res.export.get("path", "")),
        checks.harness_rows(list(S), [L[m] for m in cfg.run.methods if m in res.runs] +
                            [k for k in S if k.startswith("sft-v1 +")]),
        checks.rerun_reproduces(res.rerun.get("original"), res.rerun.get("rerun"), res.rerun.get("name", "")),
        checks.within_time(res.timings["total"], cfg.check.time_budget_s),
    )
    report.build_log(log, cfg, res, items, cells, doc_link)
    from shared.atomic import atomic_write_text

    header = (f"From `{command_line('week08_lora', profile, overrides)}` at commit "
              f"{(env.get('git_commit') or 'unknown')[:12]} on {env.get('cpu_count')} CPU cores"
              f"{', ' + env['gpus'][0]['name'] if env.get('gpus') else ''} (profile **{profile}**); the numbers "
              "come from the week's runs, see [the weekly log](weekly-logs/week08.md).")
    atomic_write_text(doc_path, decision.render(cells, items, header))
    return log.finish(res.timings["total"])


if __name__ == "__main__":
    sys.exit(run_week(main))
