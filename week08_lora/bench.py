"""Where each variant's memory goes and how long its step takes, on one fixed batch.

For every variant: build it from the base model, take the first ``bench.micro_batch`` training examples as one
batch, run one step under :func:`shared.train.memory.measure_step_memory` (weights / gradients / optimizer state /
activations, counted exactly from the tensors; on a GPU also ``torch.cuda.max_memory_allocated``), then time
``bench.steps`` more optimizer steps on the same batch (forward, loss, backward, clipping, AdamW). The same batch and
the same code path for every variant, so the seconds compare implementations, not data.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from shared.data.instruct import InstructionRecord
from shared.data.tokenizer import load_tokenizer
from shared.device import resolve_device
from shared.tasks.sft import SFTTaskConfig
from shared.train.config import OptimConfig
from shared.train.memory import measure_step_memory
from shared.train.optim import build_optimizer
from shared.train.step import train_step
from week08_lora.runs import Start, sft_task
from week08_lora.variants import VariantSpec, build


def bench_variant(spec: VariantSpec, start: Start, train: Sequence[InstructionRecord], sft: SFTTaskConfig,
                  optim: OptimConfig, micro_batch: int, steps: int, device: str, seed: int = 0) -> dict[str, Any]:
    """One row: the memory breakdown (bytes), trainable/total params, and the median seconds per step.

    Raises:
        BackendUnavailableError: see :func:`week08_lora.variants.build`.
    """
    dev = resolve_device(device)
    tok = load_tokenizer(start.folder)
    task = sft_task(tok, train[: max(4 * micro_batch, 64)], train[:64], sft, seed)
    batch = {k: v.to(dev) for k, v in task.batch(0, 0, 1, micro_batch).items()}
    torch.manual_seed(seed)
    model = build(spec, start.folder, dev, seed).train()
    opt = build_optimizer(model, OptimConfig(**{**asdict(optim), "lr": spec.lr}))
    mem = measure_step_memory(model, opt, lambda m=model: task.loss(m, batch)[0])
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        train_step(model, opt, [batch], task.loss, grad_clip=1.0)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    tokens = int(batch["attention_mask"].sum())
    sec = statistics.median(times)
    del model, opt
    gc.collect()
    return {"variant": spec.name, "method": spec.method, "compute dtype": spec.compute_dtype or "float32",
            "weights": mem.weights, "gradients": mem.gradients, "optimizer": mem.optimizer,
            "activations": mem.activations, "total": mem.total, "peak allocated": mem.peak_allocated,
            "trainable params": mem.trainable_params, "total params": mem.total_params,
            "s/step": sec, "tokens/s": tokens / sec, "tokens": tokens, "batch": micro_batch, "steps timed": steps}
