"""``python -m week04_transformer [--profile smoke|cpu|gpu] [key=value ...]`` (``make week04``).

A character-level GPT on Tiny Shakespeare: the component tests, training with samples at the start,
middle and end, hand-written vs PyTorch attention on the same batch, a throughput benchmark, the log.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # "since process start" in the log counts from here (before the heavy imports)

import sys  # noqa: E402

from shared.cli import command_line, parse_week_args, run_week  # noqa: E402
from shared.repro import environment  # noqa: E402
from week04_transformer import components, config, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    t0 = T_START if argv is None else time.perf_counter()  # tests call main() long after the import
    profile, overrides = parse_week_args("week04_transformer", __doc__.splitlines()[0], argv)
    cfg = config.load(profile, overrides)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    data = train.load_data(cfg)
    n_train, n_val = len(data.train), len(data.val)
    data_text = (f"`{cfg.data.dataset}` through the registry (checksum verified): {n_train + n_val:,} characters, "
                 f"{data.tokenizer.vocab_size} distinct. First {1 - cfg.data.val_frac:.0%} ({n_train:,}) for training, "
                 f"last {cfg.data.val_frac:.0%} ({n_val:,}) for validation, as in nanoGPT.")
    timings["data"] = time.perf_counter() - t
    t = time.perf_counter()
    lm = train.train(cfg, profile, data, t_start=t0)
    t_trained = time.perf_counter()
    timings["training (incl. evals and samples)"] = t_trained - t
    t = time.perf_counter()
    backends = components.backend_losses(lm.model.float(), data.val, cfg.loop.micro_batch)
    tests = components.run_component_tests()
    timings["checks (component tests, backends)"] = time.perf_counter() - t
    from shared.report import WeeklyLog, log_dir
    from week04_transformer import bench, report  # pandas and matplotlib: imported after training, where used

    t = time.perf_counter()
    bench_result = bench.bench(config.load(profile, overrides), data)
    timings["throughput benchmark"] = time.perf_counter() - t

    log = WeeklyLog("week04", "Week 04 — a decoder-only transformer from scratch: char-level GPT on Tiny Shakespeare",
                    log_dir("week04", profile))
    timings["total"] = time.perf_counter() - t0
    # A resumed run's end-to-end time: its training (summed over processes, in the evals) + this process's rest.
    end_to_end = lm.fit.evals[-1]["wall_s"] + time.perf_counter() - t_trained
    log.header(environment(), profile, command_line("week04_transformer", profile, overrides),
               {"wall clock (s)": f"{timings['total']:.1f}", "device": str(next(lm.model.parameters()).device)})
    report.build_log(log, cfg, {"lm": lm, "tests": tests, "backends": backends, "bench": bench_result,
                                "data_text": data_text, "timings": timings, "end_to_end_s": end_to_end,
                                "n_train": n_train})
    return log.finish(timings["total"])


if __name__ == "__main__":
    sys.exit(run_week(main))
