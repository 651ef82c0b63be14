"""``python -m week03_cifar [--profile smoke|cpu|gpu] [key=value ...]`` (``make week03``).

CIFAR-10: data, the cnn_small baseline, the optimizer / init / norm / regularisation ablations, the
BatchNorm eval check, error analysis, the ResNet-9 speed track, then the weekly log with its checks.
"""

from __future__ import annotations

import sys
import time

from shared.cli import command_line, parse_week_args, run_week
from shared.data.cifar import load_cifar10
from shared.device import resolve_device
from shared.report import WeeklyLog, log_dir
from shared.repro import environment
from shared.train.classify import to_device
from week03_cifar import bench_speed, config, experiments, report


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    profile, overrides = parse_week_args("week03_cifar", __doc__.splitlines()[0], argv)
    cfg = config.load(profile, overrides)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    splits = load_cifar10(cfg.data)
    device = resolve_device(cfg.train.device)
    test_x = splits.test.tensors[0]
    splits.train, splits.val, splits.test = (to_device(d, device) for d in (splits.train, splits.val, splits.test))
    data_text = (f"CIFAR-10 through the registry (checksums verified): {len(splits.train):,} training images"
                 f"{' (a subset: data.train_subset)' if cfg.data.train_subset else ''}, {len(splits.val):,} val "
                 f"(fixed split, seed {cfg.data.split_seed}), {len(splits.test):,} test. Per-channel mean "
                 f"{tuple(round(m, 4) for m in splits.mean)} and std {tuple(round(s, 4) for s in splits.std)} from the "
                 f"training split. Augmentation: {'random crop (4-px padding) + horizontal flip on the device' if cfg.data.augment else 'off'}.")
    timings["data (fetch, verify, load)"] = time.perf_counter() - t

    runner = experiments.Runner(profile, overrides, splits)
    r: dict = {"data_text": data_text, "classes": splits.classes, "device": str(device), "test_x": test_x,
               "splits_norm": splits, "ablations": {}}
    t = time.perf_counter()
    _, r["baseline"], _ = runner.baseline()
    timings["baseline"] = time.perf_counter() - t
    for group in config.ABLATIONS:
        t = time.perf_counter()
        r["ablations"][group] = runner.ablation(group)
        timings[f"{group} ablation"] = time.perf_counter() - t
    bn_run = next(v.run for v in r["ablations"]["norm"] if v.cfg.model.norm == "batch")
    r["eval_mode"] = experiments.check_eval_mode(bn_run, splits)
    t = time.perf_counter()
    r["errors"] = experiments.error_analysis(r["baseline"], splits, cfg)
    timings["error analysis"] = time.perf_counter() - t
    t = time.perf_counter()
    r["speed"] = bench_speed.speed_track(cfg, profile, splits)
    timings["speed track"] = time.perf_counter() - t

    log = WeeklyLog("week03", "Week 03 — CIFAR-10: baseline, four ablations, error analysis, speed track",
                    log_dir("week03", profile))
    timings["total"] = time.perf_counter() - t0
    r["timings"] = timings
    log.header(environment(), profile, command_line("week03_cifar", profile, overrides),
               {"wall clock (s)": f"{timings['total']:.1f}", "device": str(device)})
    report.build_log(log, cfg, r)
    return log.finish(timings["total"])


if __name__ == "__main__":
    sys.exit(run_week(main))
