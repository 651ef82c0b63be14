"""``python -m week04_transformer.bench [--profile P] [key=value ...]``: training throughput of the week's GPT.

For each attention backend (and, on a GPU with ``loop.compile``, compiled and eager), times ``bench.steps``
optimizer steps after ``bench.warmup`` untimed ones, and reports tokens/s, ms/step, peak memory and MFU (model
FLOPs per token ``6N + 12·L·H·Q·T`` x tokens/s over the peak FLOP/s, whose source is stated). Prints the table and
writes ``runs/week04/<profile>/bench.csv``.
"""

from __future__ import annotations

import sys

import pandas as pd

from shared.atomic import atomic_write_text
from shared.cli import parse_week_args
from shared.device import resolve_device
from shared.flops import mfu_peak
from shared.models.gpt import GPT
from shared.paths import runs_root
from shared.repro import seed_everything
from shared.tasks.lm import LMTask
from shared.train.throughput import time_train_steps
from week04_transformer import config
from week04_transformer.config import Week04Config
from week04_transformer.train import CharData, load_data


def bench(cfg: Week04Config, data: CharData) -> tuple[pd.DataFrame, str]:
    """One row per (backend, compile) setting; returns the table and the MFU peak's source."""
    loop = cfg.loop
    device = resolve_device(loop.device)
    cfg.model.vocab_size = data.tokenizer.vocab_size
    t, b = cfg.model.block_size, loop.micro_batch
    peak, source = mfu_peak(device, loop.precision)
    compiles = [False, True] if loop.compile and device.type == "cuda" else [False]
    task = LMTask(data.train, data.val, t, loop.seed, 1, b)
    rows = []
    for backend in cfg.bench.backends:
        for compiled in compiles:
            seed_everything(loop.seed)
            model = GPT(cfg.model).to(device)
            model.set_attn_backend(backend)
            m = time_train_steps(model, task, cfg.optim, micro_batch=b, steps=cfg.bench.steps, warmup=cfg.bench.warmup,
                                 precision=loop.precision, grad_clip=loop.grad_clip, compiled=compiled)
            tok_s, flops = m["tokens_per_sec"], model.flops_per_token()
            rows.append({"backend": backend, "compile": compiled, "precision": loop.precision,
                         "micro_batch": b, "block_size": t, "ms_per_step": m["ms_per_step"], "tokens_per_sec": tok_s,
                         "tflops_per_sec": tok_s * flops / 1e12, "mfu": tok_s * flops / peak if peak else float("nan"),
                         "peak_mem_gib": m["peak_mem_gib"]})
    return pd.DataFrame(rows), source


def main(argv: list[str] | None = None) -> int:
    profile, overrides = parse_week_args("week04_transformer.bench", __doc__.splitlines()[0], argv)
    cfg = config.load(profile, overrides)
    table, source = bench(cfg, load_data(cfg))
    out = runs_root() / "week04" / profile / "bench.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, table.to_csv(index=False))
    with pd.option_context("display.width", 160, "display.float_format", "{:,.4g}".format):
        print(table.to_string(index=False))
    print(f"MFU peak: {source}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
