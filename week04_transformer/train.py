"""Train the character-level GPT: text -> char tokenizer -> 90/10 split -> GPT -> ``train_lm``, with samples.

Samples are drawn at the first eval (the untrained model), at the eval nearest the middle of the run
and at the last one, from the same prompt and the same noise, so only the model differs between them.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from shared.data.text import CharTokenizer, load_text, split_ids
from shared.flops import mfu_peak
from shared.models.gpt import GPT
from shared.repro import seed_everything
from shared.rundir import Run, finish_run, start_run
from shared.tracking import MetricLogger, console
from shared.train.lm import LMResult, train_lm
from shared.train.trainer import resolve_device
from week04_transformer.config import SampleConfig, Week04Config, run_config

WEEK = "week04"


@dataclass
class CharData:
    """The tokenized text and its split."""

    tokenizer: CharTokenizer
    train: torch.Tensor  # (N_train,) int64 character ids
    val: torch.Tensor  # (N_val,)


@dataclass
class CharLMRun:
    """A finished (or resumed-to-the-end) training run and what the log needs from it."""

    run: Run
    model: GPT
    data: CharData
    result: LMResult
    metrics: pd.DataFrame  # the run's metrics.csv
    flops_per_token: float
    peak: tuple[float | None, str]  # peak FLOP/s and where it comes from


def load_data(cfg: Week04Config) -> CharData:
    """Fetch and verify the text, build the char vocabulary from it, and split it 90/10 (``data.val_frac``)."""
    text = load_text(cfg.data.dataset)
    tok = CharTokenizer.from_text(text)
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    train, val = split_ids(ids, cfg.data.val_frac)
    return CharData(tok, train, val)


def sample(model: GPT, tok: CharTokenizer, cfg: SampleConfig, device: torch.device) -> str:
    """``cfg.max_new_tokens`` characters after ``cfg.prompt``, with a fixed generator seed."""
    idx = torch.tensor([tok.encode(cfg.prompt)], dtype=torch.long, device=device)
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    out = model.generate(idx, cfg.max_new_tokens, cfg.temperature, cfg.top_k or None, generator=g)
    return tok.decode(out[0, idx.shape[1]:])


def sample_steps(max_steps: int, eval_every: int) -> list[int]:
    """The eval steps that get a sample: the first (0), the one nearest the middle, and the last."""
    evals = sorted({*range(0, max_steps, eval_every), max_steps})
    middle = min(evals, key=lambda s: abs(s - max_steps / 2))
    return sorted({0, middle, max_steps})


def train(cfg: Week04Config, profile: str, data: CharData, t_start: float | None = None) -> CharLMRun:
    """Build the GPT of ``cfg.model`` and train it (or resume the run of the same config) with ``cfg.train``."""
    cfg.model.vocab_size = data.tokenizer.vocab_size
    run = start_run(WEEK, "char_gpt", profile, run_config(cfg))
    data.tokenizer.save(run.dir / "tokenizer.json")
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    model = GPT(cfg.model).to(device)
    console(f"GPT: {model.num_params():,} non-embedding parameters ({model.num_params(False):,} in all), "
            f"vocab {cfg.model.vocab_size}, block {cfg.model.block_size}, device {device}")
    points = set(sample_steps(cfg.train.max_steps, cfg.train.eval_every))

    def on_eval(step: int, m: GPT, record: dict) -> None:
        if step in points:
            record["sample"] = sample(m, data.tokenizer, cfg.sample, device)

    flops, peak = model.flops_per_token(), mfu_peak(device, cfg.train.precision)
    logger = MetricLogger(run.dir, run.run_id, cfg.train.seed)
    t0 = time.perf_counter()
    result = train_lm(model, data.train, data.val, cfg.train, cfg.model.block_size, run.dir, logger,
                      on_eval=on_eval, meta={"model": asdict(cfg.model), "tokenizer": data.tokenizer.chars},
                      flops_per_token=flops, peak_flops=peak[0], t_start=t_start)
    logger.close()
    final = result.evals[-1]
    finish_run(run, cfg.train.seed, {"val_loss": final["val_loss"], "train_loss": final["train_loss"],
                                     "ln_vocab": math.log(cfg.model.vocab_size)}, result.train_time_s)
    console(f"trained {result.step} steps in {time.perf_counter() - t0:.1f} s: val loss {final['val_loss']:.4f}")
    return CharLMRun(run, model, data, result, pd.read_csv(run.dir / "metrics.csv"), flops, peak)
