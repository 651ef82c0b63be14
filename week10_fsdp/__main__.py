"""``torchrun --nproc-per-node N -m week10_fsdp [--profile smoke|cpu|gpu] [--stage S] [key=value ...]`` (``make week10``).

FSDP2 and distributed checkpoints in the shared loop: the week-5 LM and the week-7 SFT task trained under DDP and
FSDP2 on the same batches (loss parity, with and without accumulation, and a rerun), the sharded checkpoints reloaded
at other world sizes and exported to Hugging Face format, per-rank memory measured at 1, 2 and 4 ranks beside the
formulas (and ``docs/memory.md`` generated from them), throughput, ``accelerate launch``, the pitfall tests. Without
torchrun it runs as one process (the parity runs are skipped with the reason). ``--stage S`` stops after stage S
and prints its summary, writing no log.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402

from torch.distributed.elastic.multiprocessing.errors import record  # noqa: E402

from shared.cli import command_line, resolve_profile, run_week, week_arg_parser  # noqa: E402
from shared.dist import DistConfig, barrier, failure_guard, init_distributed, launched_by_torchrun, shutdown  # noqa: E402
from shared.paths import REPO_ROOT, runs_root  # noqa: E402
from shared.tracking import console  # noqa: E402
from week10_fsdp import config, experiments  # noqa: E402
from week10_fsdp.data import lm_data, sft_data  # noqa: E402

STAGES = ("parity", "export", "memory", "pitfalls", "all")


@record  # torchrun's failure summary then shows the failed rank's traceback
def main(argv: list[str] | None = None) -> int:
    t0 = T_START if argv is None else time.perf_counter()
    parser = week_arg_parser("week10_fsdp", __doc__.splitlines()[0])
    parser.add_argument("--stage", choices=STAGES, default="all", help="run only up to this stage (default: all)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    profile, overrides = resolve_profile(args.profile), args.overrides
    cfg = config.load(profile, overrides)
    if not launched_by_torchrun():
        console("week10: not launched by torchrun (no RANK/WORLD_SIZE/LOCAL_RANK): running as one process; the "
                "DDP/FSDP2 parity runs need >= 2 ranks and are skipped. `make week10` launches 2 (NPROC=N for more)")
    with failure_guard(runs_root() / "week10" / profile / "failures"):
        info = init_distributed(DistConfig(cfg.dist.backend, cfg.dist.timeout_s), cfg.loop.device)
        res = experiments.WeekResults(info, profile)
        sft = None
        try:
            t = time.perf_counter()
            lm = lm_data(cfg, info)
            res.timings["LM data (corpus, tokenizer, packed stream)"] = time.perf_counter() - t
            res.data = {"lm_vocab": lm.vocab_size, "lm_train_tokens": len(lm.train), "lm_val_tokens": len(lm.val)}
            experiments.lm_stage(cfg, profile, info, lm, res)
            if "sft" in cfg.parity.tasks and "parity" not in res.skipped:
                if info.is_main:  # the FSDP2 LM leaves as a Hugging Face export: the SFT task may start from it
                    experiments.export_lm(cfg, lm, res)
                barrier()
                t = time.perf_counter()
                sft = sft_data(cfg, info)
                res.timings["SFT data (records, start model)"] = time.perf_counter() - t
                res.data.update(sft_start=sft.base_dir.name, sft_train_examples=len(sft.task.train),
                                sft_dropped_over_max_length=sft.dropped)
                experiments.sft_stage(cfg, profile, info, sft, res)
            experiments.release_models(res)
            barrier()
        finally:
            shutdown()  # the collective part is over: rank 0 goes on alone (child jobs, exports, the log)
    if not info.is_main:
        return 0
    if args.stage == "parity":
        return _show("parity", experiments.parity_rows(res, cfg))
    experiments.export_lm(cfg, lm, res)  # done already when the SFT task started from it
    experiments.export_sft(cfg, sft, res)
    experiments.reshard_stage(cfg, res)
    if args.stage == "export":
        return _show("export", {"reshard": res.reshard, "export": res.export})
    experiments.memory_stage(cfg, lm.vocab_size, res)
    if args.stage == "memory":
        return _show("memory", {"probes": res.probes, "accelerate": res.accelerate, "minimal": res.minimal})
    experiments.pitfall_stage(cfg, res)
    if args.stage == "pitfalls":
        return _show("pitfalls", res.pitfalls)
    return write_log(cfg, profile, overrides, res, t0)


def _show(stage: str, summary: object) -> int:
    print(json.dumps({"stage": stage, "summary": summary}, indent=2, default=str))
    return 0


def write_log(cfg: config.Week10Config, profile: str, overrides: list[str], res: experiments.WeekResults,
              t0: float) -> int:
    from shared.atomic import atomic_write_text
    from shared.report import WeeklyLog, log_dir
    from shared.repro import environment
    from week10_fsdp import checks, report
    from week10_fsdp.memory_doc import compare_measurements, render_memory_doc

    env = environment()
    log = WeeklyLog("week10", "Week 10 — FSDP2 and distributed checkpoints: memory, parity, resharding",
                    log_dir("week10", profile))
    hardware = f"{env.get('cpu', 'CPU')} ({res.info.backend or 'one process'})" if res.info.device.type == "cpu" \
        else env.get("gpu", str(res.info.device))
    measured = report.doc_measurements(res, hardware, str(env.get("git_commit", "")))
    compared = compare_measurements(measured)
    doc = render_memory_doc(measured)
    doc_path = (REPO_ROOT / "docs" / "memory.md") if cfg.memory.write_doc else (log.asset_dir / "memory.md")
    atomic_write_text(doc_path, doc)
    res.timings["total"] = time.perf_counter() - t0
    world = res.info.world_size
    command = command_line("week10_fsdp", profile, overrides)
    if world > 1:
        command = command.replace("python -m", f"torchrun --standalone --nproc-per-node {world} -m")
    log.header(env, profile, command, {"wall clock (s)": f"{res.timings['total']:.1f}", "world size": world,
                                       "backend": res.info.backend or "none", "device (rank 0)": str(res.info.device),
                                       **res.data})
    runs = res.runs
    probe_rows = report.probe_rows(res)
    bench = [b for p in res.probes.values() for b in p.get("bench", [])]
    act = next((r for r in probe_rows if r["strategy"] == "fsdp2" and r["rank"] == 0
                and r["world_size"] == max(res.probes)), {})
    sections = ("## What takes memory", "## Activations of one GPT block", "## DDP vs ZeRO-1/2/3 vs FSDP2",
                "## Worked examples", "## Validated against this week's measurements")
    log.add(
        checks.memory_savings(probe_rows, cfg.check.memory_rtol),
        checks.formulas_agree(compared, cfg.check.memory_rtol),
        checks.loss_parity(experiments.parity_rows(res, cfg), cfg.check.parity_atol, cfg.parity.tasks,
                           cfg.parity.steps) if runs else checks.Check.skip(
            "FSDP2 matches DDP's loss curve (LM and SFT, with and without accumulation)",
            res.skipped.get("parity", "not run"), f"max |Δ| ≤ {cfg.check.parity_atol:g}"),
        checks.reproducible(runs["lm-fsdp2"].losses if "lm-fsdp2" in runs else None,
                            runs["lm-fsdp2-rerun"].losses if "lm-fsdp2-rerun" in runs else None),
        checks.reshard_loads(res.reshard, cfg.check.reshard_atol,
                             [w for w in cfg.memory.reshard_world_sizes if w != res.info.world_size]),
        checks.export_roundtrip(res.export, cfg.check.reshard_atol),
        checks.tradeoffs_measured(bench, act),
        checks.pitfalls_pass(res.pitfalls),
        checks.accelerate_matches(res.accelerate, probe_rows, res.skipped.get("accelerate", "")),
        checks.doc_written(str(doc_path.relative_to(REPO_ROOT) if doc_path.is_relative_to(REPO_ROOT) else doc_path),
                           compared, sections, doc),
        checks.within_time(res.timings["total"], cfg.check.time_budget_s),
    )
    report.memory_section(log, res, compared)
    report.throughput_section(log, res)
    report.parity_section(log, res, cfg)
    report.dcp_section(log, res)
    report.minimal_section(log, res)
    report.pitfalls_section(log, res)
    report.accelerate_section(log, res)
    report.scale_out_section(log, res, cfg)
    report.decision_section(log)
    report.timings_section(log, res)
    log.config(cfg)
    return log.finish(res.timings["total"])


if __name__ == "__main__":
    sys.exit(run_week(main))
