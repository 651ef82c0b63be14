"""``python -m week06_budget [--profile smoke|cpu|gpu] [--stage S] [key=value ...]`` (``make week06``).

Decide under a fixed budget which data, model size and token count to use: build two data versions with manifests
(raw A; B = deduplicated and quality-filtered), run the budget demo (a token and a wall-clock budget, estimate beside
actual), compare A and B at one token budget over seeds (Welch's t-test), sweep model sizes at fixed FLOP budgets
(IsoFLOP) and fit the scaling law, then write the memo from the results registry and re-run one of its runs.
Finished runs are reused (cached by config hash). ``--stage S`` runs up to one stage, prints its summary and writes
no log.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402

from shared.cli import command_line, resolve_profile, run_week, week_arg_parser  # noqa: E402
from shared.data.lm import padded_vocab_size  # noqa: E402
from shared.data.manifest import ManifestError, verify_manifest  # noqa: E402
from shared.paths import runs_root  # noqa: E402
from shared.repro import environment  # noqa: E402
from week06_budget import checks, config, data, experiments, memo  # noqa: E402

STAGES = ("data", "demo", "ab", "isoflop", "all")


def _show(stage: str, summary: dict) -> int:
    print(json.dumps({"stage": stage, **summary}, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    t0 = T_START if argv is None else time.perf_counter()
    parser = week_arg_parser("week06_budget", __doc__.splitlines()[0])
    parser.add_argument("--stage", choices=STAGES, default="all", help="run only up to this stage (default: all)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    profile, overrides, stage = resolve_profile(args.profile), args.overrides, args.stage
    cfg = config.load(profile, overrides)
    env = environment()  # the tree as the run found it, before the week writes its memo into docs/
    timings: dict[str, float] = {}

    t = time.perf_counter()
    versions = data.build_versions(cfg)
    vocab = padded_vocab_size(versions.tokenizer.vocab_size, cfg.data.pad_vocab_to)
    timings["data versions"] = time.perf_counter() - t
    if stage == "data":
        return _show(stage, {"A": str(versions.a.dir), "B": str(versions.b.dir), "val": len(versions.docs["val"]),
                             "filters": {s.name: s.removed for s in versions.steps}})
    t = time.perf_counter()
    demo = experiments.budget_demo(cfg, profile, versions, vocab)
    timings["budget demo"] = time.perf_counter() - t
    if stage == "demo":
        return _show(stage, {"tokens": demo.by_tokens.actual, "seconds": demo.by_seconds.actual})
    t = time.perf_counter()
    ab = experiments.ab_experiment(cfg, profile, versions, vocab)
    timings["A vs B"] = time.perf_counter() - t
    if stage == "ab":
        return _show(stage, {"p": ab.loss.p, "diff": ab.loss.diff})
    t = time.perf_counter()
    iso = experiments.isoflop_sweep(cfg, profile, versions, vocab)
    timings["IsoFLOP sweep"] = time.perf_counter() - t
    if stage == "isoflop":
        return _show(stage, {"fit": None if iso.fit is None else {"a": iso.fit.n_opt.exponent,
                                                                  "b": iso.fit.d_opt.exponent}, "error": iso.fit_error})

    from shared.report import WeeklyLog, log_dir
    from week06_budget import report  # matplotlib and pandas: only for the log

    out = log_dir("week06", profile)
    memo_path = (out.parent / "week06-budget-memo.md" if profile == "cpu"
                 else out / "week06-budget-memo.md")
    t = time.perf_counter()
    m = memo.write_memo(memo_path, cfg.memo.budget_flops, ab, iso, cfg.ab.alpha, profile)
    ref = min(ab.runs[m.version], key=lambda r: r.seed)
    original, rerun = memo.reproduce(ref, profile) if cfg.memo.reproduce else (None, None)
    timings["memo + reproduction"] = time.perf_counter() - t

    all_runs = [demo.by_tokens, demo.by_seconds, *ab.runs["A"], *ab.runs["B"], *experiments.iso_runs(iso)]
    if rerun is not None:
        all_runs.append(rerun)
    verified = {}
    for manifest in sorted({r.manifest for r in all_runs}):
        try:
            verify_manifest(runs_root() / manifest)
            verified[manifest] = ""
        except ManifestError as e:
            verified[manifest] = str(e)
    log = WeeklyLog("week06", "Week 06 — a compute budget: data versions, A/B with statistics, IsoFLOP scaling, "
                    "the memo", out)
    timings["total"] = time.perf_counter() - t0
    log.header(env, profile, command_line("week06_budget", profile, overrides),
               {"wall clock (s)": f"{timings['total']:.1f}"})
    log.add(
        checks.budget_enforced([{"name": r.name, "budget": r.budget, "budget_value": r.budget_value,
                                 "stopped_by": r.stopped_by, "tokens": r.tokens, "tokens_per_step": r.tokens_per_step,
                                 "train_time_s": r.train_time_s, "last_step_s": r.last_step_s} for r in all_runs]),
        checks.manifests_verified(verified, len(versions.b.manifest["filters"])),
        checks.versions_differ(len(versions.docs["A"]), len(versions.docs["B"]),
                               {s.name: s.removed for s in versions.steps}, versions.duplicate_rate["A"],
                               versions.duplicate_rate["B"], versions.a.manifest["counts"]["train"]["tokens"],
                               versions.b.manifest["counts"]["train"]["tokens"]),
        checks.val_clean(versions.val_contaminated_after, versions.val_held_out - len(versions.docs["val"]),
                         versions.val_held_out),
        checks.ab_significance(ab.loss, cfg.ab.alpha),
        checks.tradeoff_explained(iso.fit is not None, iso.fit_error, len(iso.fit.curves) if iso.fit else 0,
                                  sum(c.inside for c in iso.fit.curves) if iso.fit else 0,
                                  iso.fit.n_opt.exponent if iso.fit else None, iso.fit.a_interval if iso.fit else None,
                                  "" if cfg.isoflop.judge else "runs of a few dozen steps are noise, not a scaling law",
                                  len(iso.fit.excluded) if iso.fit else 0),
        checks.memo_runs_exist(m.cited, memo.registered_ids(profile)),
        checks.memo_reproduced(original, None if rerun is None else rerun.val_loss,
                               "" if cfg.memo.reproduce else "memo.reproduce=false"),
        checks.estimate_matches([r.actual["time_ratio"] for r in all_runs if r.budget == "max_tokens"],
                                cfg.check.time_ratio_lo, cfg.check.time_ratio_hi),
        checks.within_time(timings["total"], cfg.check.time_budget_s),
    )
    report.build_log(log, cfg, {"versions": versions, "demo": demo, "ab": ab, "iso": iso, "memo": m,
                                "memo_path": memo_path, "memo_link": _link(memo_path, out), "all_runs": all_runs,
                                "timings": timings})
    return log.finish(timings["total"])


def _link(target, base) -> str:
    import os

    return os.path.relpath(target, base)


if __name__ == "__main__":
    sys.exit(run_week(main))
