"""The debug run's loss curve against the one committed in ``expected/lm_debug_loss.json``.

Any change to what training computes (initialisation, the model, the loss, the optimizer, the schedule, the
batches) moves this curve; a refactor that should not change the numbers must leave it where it is. A
deliberate change re-records it with ``make record-expected`` and commits the new file with the change that
caused it (torchtitan's ``loss_compare.py``, TRL's ``tests/invariant/``).
"""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from shared.models.gpt import GPT, GPTConfig
from shared.tasks.lm import LMTask
from shared.testing import DEBUG_GPT, debug_token_stream
from shared.tracking import FileLogger
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
from shared.train.loop import fit
from shared.train.optim import build_optimizer

EXPECTED = Path(__file__).parent / "expected" / "lm_debug_loss.json"
RECORD_ENV = "AIFS_RECORD_EXPECTED"
# fp32 on CPU: a different BLAS kernel or thread count reorders sums (~1e-7 per op), which 30 AdamW steps grow
# to ~1e-6; a real change to training moves the curve by 1e-3 or more.
RTOL = 1e-5  # measured: bit-identical with 1 and 2 threads on this machine
DEBUG_RUN = {"max_steps": 30, "micro_batch": 8, "grad_accum_steps": 2, "lr": 1e-2, "min_lr": 1e-3,
             "warmup_steps": 5, "eval_every": 10, "eval_iters": 2, "log_every": 1, "device": "cpu", "progress": False}
SEED = 1337  # the batch order


def _debug_run(run_dir: Path) -> dict:
    r = DEBUG_RUN
    torch.manual_seed(0)
    model = GPT(GPTConfig(**DEBUG_GPT))
    data = debug_token_stream()
    logger = FileLogger(run_dir, "debug", 0, tensorboard=False)
    loop = LoopConfig(max_steps=r["max_steps"], micro_batch=r["micro_batch"], grad_accum_steps=r["grad_accum_steps"],
                      eval_every=r["eval_every"], log_every=r["log_every"], device=r["device"], progress=False,
                      seed=SEED)
    task = LMTask(data[:3600], data[3600:], DEBUG_GPT["block_size"], SEED, r["eval_iters"], r["micro_batch"])
    optimizer = build_optimizer(model, OptimConfig(lr=r["lr"]))
    schedule = ScheduleConfig(warmup_steps=r["warmup_steps"], min_lr=r["min_lr"])
    result = fit(model, task, optimizer, schedule, loop, logger=logger)
    logger.close()
    rows = pd.read_csv(run_dir / "metrics.csv")
    return {"train_loss": rows[rows.phase == "train"].loss.tolist(),
            "val_loss": [e["val_loss"] for e in result.evals]}


def test_the_debug_run_reproduces_its_committed_loss_curve(tmp_path):
    got = _debug_run(tmp_path)
    if os.environ.get(RECORD_ENV) == "1":
        EXPECTED.write_text(json.dumps({"model": DEBUG_GPT, "train": DEBUG_RUN, "torch": torch.__version__, **got},
                                       indent=1) + "\n")
        pytest.skip(f"re-recorded {EXPECTED.name} ({RECORD_ENV}=1)")
    expected = json.loads(EXPECTED.read_text())
    assert (expected["model"], expected["train"]) == (DEBUG_GPT, DEBUG_RUN), "the debug run changed: re-record it"
    assert len(got["train_loss"]) == DEBUG_RUN["max_steps"]
    assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=RTOL)
    assert got["val_loss"] == pytest.approx(expected["val_loss"], rel=RTOL)
