"""``python -m week01_scaffold [--profile smoke|cpu|gpu] [key=value ...]`` (``make week01``).

Days 1-7 of week 1 end to end on real MNIST: data summary, softmax regression with best-checkpoint
selection, reload check, three seeds, LR ablation, then the weekly log with its checks.
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from shared.cli import command_line, parse_week_args, run_week
from shared.data.mnist import load_mnist, summarize
from shared.device import resolve_device
from shared.report import WeeklyLog, log_dir
from shared.repro import environment
from shared.tracking import console
from shared.train.classify import to_device
from week01_scaffold import config, experiments, report


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    profile, overrides = parse_week_args("week01_scaffold", __doc__.splitlines()[0], argv)
    cfg = config.load(profile, overrides)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    splits = load_mnist(cfg.data)
    flat = cfg.data.view == "flat"
    data_summary = pd.DataFrame([
        summarize(splits.raw_train, splits.train.tensors[1], "train, raw uint8 (N, 28, 28)"),
        summarize(splits.train.tensors[0], splits.train.tensors[1], f"train, normalised ({'flat' if flat else 'image'} view)"),
        summarize(splits.train.tensors[0].view(-1, 1, 28, 28) if flat else splits.train.tensors[0].flatten(1),
                  splits.train.tensors[1], f"train, normalised ({'image' if flat else 'flat'} view)"),
        summarize(splits.val.tensors[0], splits.val.tensors[1], "val, normalised"),
        summarize(splits.test.tensors[0], splits.test.tensors[1], "test, normalised"),
    ])
    console(data_summary.to_string(index=False))
    console(f"normalisation from the training split: mean={splits.mean:.4f} std={splits.std:.4f}")
    device = resolve_device(cfg.train.device)
    splits.train, splits.val, splits.test = (to_device(d, device) for d in (splits.train, splits.val, splits.test))
    timings["data (fetch, verify, load)"] = time.perf_counter() - t

    t = time.perf_counter()
    seeds = experiments.run_seeds(cfg, profile, splits)
    timings[f"baseline x {len(seeds)} seeds"] = time.perf_counter() - t
    t = time.perf_counter()
    reload = experiments.reload_best(seeds[0], cfg, splits)
    timings["reload + test eval"] = time.perf_counter() - t
    t = time.perf_counter()
    lr_runs = experiments.run_lr_ablation(cfg, profile, splits)
    timings[f"LR ablation x {sum(map(len, lr_runs.values()))}"] = time.perf_counter() - t

    log = WeeklyLog("week01", "Week 01 — scaffold: softmax regression on MNIST",
                    log_dir("week01", profile))
    timings["total"] = time.perf_counter() - t0
    env = environment()
    log.header(env, profile, command_line("week01_scaffold", profile, overrides),
               {"wall clock (s)": f"{timings['total']:.1f}", "device": str(device)})
    report.build_log(log, cfg, data_summary, seeds, reload, lr_runs, timings)
    return log.finish(timings["total"])


if __name__ == "__main__":
    sys.exit(run_week(main))
