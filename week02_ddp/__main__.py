"""``torchrun --nproc-per-node N -m week02_ddp [--profile smoke|cpu|gpu] [key=value ...]`` (``make week02``).

The same script on 1 process or N: launch facts and sharding, single vs DDP correctness, AMP, gradient
accumulation, profiling and a system ablation, then (rank 0) the weekly log with its checks.
"""

from __future__ import annotations

import shutil
import sys
import time

from torch.distributed.elastic.multiprocessing.errors import record

from shared.cli import command_line, parse_week_args, run_week
from shared.data.mnist import load_mnist
from shared.dist import barrier, failure_guard, init_distributed, shutdown
from shared.paths import runs_root
from shared.report import WeeklyLog, log_dir
from shared.repro import environment
from shared.train.classify import to_device
from week02_ddp import config, experiments, report


@record  # torchrun's failure summary then shows the failed rank's traceback
def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    profile, overrides = parse_week_args("week02_ddp", __doc__.splitlines()[0], argv)
    cfg = config.load(profile, overrides)
    with failure_guard(runs_root() / "week02" / profile / "failures"):
        info = init_distributed(cfg.dist, cfg.train.device)
        try:
            return _run(cfg, profile, overrides, info, t0)
        finally:
            shutdown()


def _run(cfg: config.Week02Config, profile: str, overrides: list[str], info, t0: float) -> int:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if not info.is_main:
        barrier()  # rank 0 fetches and unpacks the dataset first; the others read the verified cache
    splits = load_mnist(cfg.data)
    if info.is_main:
        barrier()
    splits.train, splits.val = to_device(splits.train, info.device), to_device(splits.val, info.device)
    ctx = experiments.Context(cfg, profile, splits, info)
    timings["data (fetch, verify, load)"] = time.perf_counter() - t

    r: dict = {"world_size": info.world_size, "device": str(info.device), "backend": info.backend or "none"}
    for name, stage, fn in (("launch", "launch facts", experiments.launch_facts),
                            ("shards", "shard check", experiments.shard_check),
                            ("pairs", "single vs DDP (2 models)", experiments.correctness),
                            ("accum", "accumulation run", experiments.accumulation)):
        t = time.perf_counter()
        r[name] = fn(ctx)
        timings[stage] = time.perf_counter() - t
    t = time.perf_counter()
    r["amp"], r["ablation"] = experiments.run_benchmarks(ctx)
    timings["AMP + ablation benchmarks"] = time.perf_counter() - t
    r["n_params"] = sum(p.numel() for p in r["pairs"]["cnn"].ddp.model.parameters())
    t = time.perf_counter()
    r["allreduce_ms"] = experiments.allreduce_ms(ctx, r["n_params"])
    run_dir = runs_root() / "week02" / profile / "profile"
    r["profile"] = experiments.profile(ctx, run_dir / "trace.json")
    r["trace_file"] = str(r["profile"].trace_path)
    timings["profiling"] = time.perf_counter() - t
    if not info.is_main:
        return 0

    log = WeeklyLog("week02", "Week 02 — one script, 1 or N processes: DDP, AMP, accumulation, profiling",
                    log_dir("week02", profile))
    trace_copy = log.asset_dir / "trace.json"
    shutil.copyfile(r["trace_file"], trace_copy)
    r["trace_file"] = str(trace_copy)
    timings["total"] = time.perf_counter() - t0
    r["timings"] = timings
    log.header(environment(), profile, _launch_command(profile, overrides, info.world_size),
               {"wall clock (s)": f"{timings['total']:.1f}", "world size": info.world_size,
                "backend": r["backend"], "device (rank 0)": str(info.device)})
    report.build_log(log, cfg, r)
    return log.finish(timings["total"])


def _launch_command(profile: str, overrides: list[str], world: int) -> str:
    cmd = command_line("week02_ddp", profile, overrides)
    return cmd.replace("python -m", f"torchrun --standalone --nproc-per-node {world} -m") if world > 1 else cmd


if __name__ == "__main__":
    sys.exit(run_week(main))
