"""TRL's ``DPOTrainer`` as the reference of the hand-written DPO objective
(https://huggingface.co/docs/trl/dpo_trainer), with peft LoRA and ``ref_model=None``. Given a ``PeftModel``, TRL
copies its adapter at construction as a frozen ``"ref"`` adapter and uses it as the reference; the adapter starts at
B = 0, so that reference is the starting model, the same as :class:`shared.tasks.dpo.AdapterOffReference`'s.

The same pairs go to TRL as text (``prompt``, ``chosen``, ``rejected``); TRL tokenises them and appends EOS. Three
comparisons:

- **one fixed batch** (:func:`compare_batch`): adapters with the same non-zero A and B in the hand LoRA model and in
  peft's; TRL's collated batch must hold the same ids and completion masks as :func:`shared.tasks.dpo.collate_pairs`,
  and ``DPOTrainer.compute_loss`` must equal the hand task's loss to ``trl.loss_atol`` (fp32);
- **training curves** (:func:`trl_train`): TRL trains the main run's first ``trl.steps`` steps on the same batches in
  the same order (a sequential sampler over the hand task's stream), the same adapter init, lr schedule, clipping and
  AdamW; its logged loss and reward margin per step are compared with the hand run's;
- **speed** (:func:`bench`): seconds per optimizer step on one batch, hand vs TRL, same process, alternated.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared.nn.lora import adapter_pairs, init_adapters
from shared.tasks.dpo import AdapterOffReference, DPOTask, DPOTaskConfig, PairExample, collate_pairs
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
from week09_dpo.config import AdapterConfig


def dpo_config(out_dir: str, dpo: DPOTaskConfig, optim: OptimConfig, schedule: ScheduleConfig, loop: LoopConfig,
               max_steps: int, **extra: Any):
    """The ``DPOConfig`` matching the project's hyper-parameters (fp32 on CPU, no gradient checkpointing, batches in
    the dataset's order, no truncation: the pairs were already filtered to ``dpo.max_length``)."""
    from trl import DPOConfig

    cpu = loop.device in ("cpu", "auto") and not torch.cuda.is_available()
    return DPOConfig(output_dir=out_dir, per_device_train_batch_size=loop.micro_batch,
                     gradient_accumulation_steps=loop.grad_accum_steps, max_steps=max_steps, learning_rate=optim.lr,
                     adam_beta1=optim.beta1, adam_beta2=optim.beta2, adam_epsilon=optim.eps,
                     weight_decay=optim.weight_decay, max_grad_norm=loop.grad_clip,
                     lr_scheduler_type="cosine" if schedule.name == "cosine" else schedule.name,
                     warmup_steps=schedule.warmup_steps, beta=dpo.beta, loss_type=[dpo.loss], max_length=None,
                     use_cpu=cpu, bf16=loop.precision == "bf16", fp16=False, gradient_checkpointing=False,
                     report_to="none", save_strategy="no", logging_steps=1, seed=loop.seed, data_seed=loop.seed,
                     dataloader_num_workers=0, disable_tqdm=True, train_sampling_strategy="sequential",
                     precompute_ref_log_probs=False, **extra)


def trl_dataset(pairs: Sequence[Any]):
    """A ``datasets.Dataset`` of ``{"prompt", "chosen", "rejected"}`` (TRL's explicit-prompt preference format)."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [p.prompt for p in pairs], "chosen": [p.chosen for p in pairs],
                              "rejected": [p.rejected for p in pairs]})


def peft_policy(folder: Path, lora: AdapterConfig, seed: int):
    """The starting model with peft LoRA adapters initialised like :func:`week09_dpo.runs.build_policy`'s."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    model = get_peft_model(hf, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0,
                                          target_modules=list(lora.target_modules)))
    init_adapters(model, seed)
    return model


@torch.no_grad()
def _same_random_b(hand: torch.nn.Module, peft_model: torch.nn.Module, seed: int) -> None:
    """B = 0 makes policy = reference and every loss log 2: give both models the same non-zero B."""
    g = torch.Generator().manual_seed(seed)
    hp, pp = adapter_pairs(hand), adapter_pairs(peft_model)
    if len(hp) != len(pp):
        raise ValueError(f"hand model has {len(hp)} adapters, peft's {len(pp)}: the target modules differ")
    for (ha, hb), (pa, pb) in zip(hp, pp, strict=True):
        b = torch.randn(hb.shape, generator=g) * 0.02
        hb.copy_(b)
        pb.copy_(b)
        pa.copy_(ha)


@dataclass
class BatchComparison:
    """The fixed-batch comparison: same ids and completion masks, and the two losses (nats)."""

    same_ids: bool
    same_mask: bool
    hand_loss: float
    trl_loss: float
    pairs: int
    tokens: int

    @property
    def abs_diff(self) -> float:
        return abs(self.hand_loss - self.trl_loss)


def compare_batch(folder: Path, tokenizer: Any, pairs: Sequence[Any], examples: Sequence[PairExample],
                  lora: AdapterConfig, dpo: DPOTaskConfig, optim: OptimConfig, schedule: ScheduleConfig,
                  loop: LoopConfig) -> BatchComparison:
    """TRL's loss and the hand task's on the same pairs (``pairs`` as text, ``examples`` their hand encoding, in the
    same order), with identical non-zero adapters."""
    from trl import DPOTrainer

    from week09_dpo.runs import build_policy

    hand = build_policy(folder, lora, torch.device("cpu"), loop.seed).eval()
    pm = peft_policy(folder, lora, loop.seed).eval()
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    ours = collate_pairs(examples, pad)
    task = DPOTask(list(examples), list(examples), pad, 0, AdapterOffReference(), dpo)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = DPOTrainer(model=pm, ref_model=None, args=dpo_config(tmp, dpo, optim, schedule, loop, 1),
                             train_dataset=trl_dataset(pairs), processing_class=tokenizer.hf)
        # given a PeftModel, TRL copies its adapter as "ref" (the reference: B = 0, the base model); only then do
        # both policies get the same non-zero B
        _same_random_b(hand, trainer.model, loop.seed + 1)
        rows = [trainer.train_dataset[i] for i in range(len(pairs))]
        trl_batch = trainer.data_collator(rows)
        with torch.no_grad():
            trl_loss = float(trainer.compute_loss(trainer.model, dict(trl_batch)))
            hand_loss = float(task.loss(hand, ours)[0])
    t_ids = trl_batch["input_ids"]
    same_shape = t_ids.shape == ours["input_ids"].shape
    same_ids = bool(same_shape and torch.equal(t_ids * trl_batch["attention_mask"],
                                               ours["input_ids"] * ours["attention_mask"]))
    same_mask = bool(same_shape and torch.equal(trl_batch["completion_mask"], ours["completion_mask"]))
    return BatchComparison(same_ids, same_mask, hand_loss, trl_loss, len(pairs), int(ours["attention_mask"].sum()))


@dataclass
class TRLRun:
    """TRL's first steps: its logged loss, reward margin and chosen log-probs per step."""

    rows: list[dict[str, float]]  # step, loss, margin, logps_chosen
    train_time_s: float
    steps: int


def trl_train(folder: Path, tokenizer: Any, ordered_pairs: Sequence[Any], lora: AdapterConfig, dpo: DPOTaskConfig,
              optim: OptimConfig, schedule: ScheduleConfig, loop: LoopConfig, schedule_steps: int,
              steps: int) -> TRLRun:
    """``DPOTrainer`` on ``ordered_pairs`` (the hand task's batches, concatenated in order), with the lr schedule of a
    ``schedule_steps`` run, stopped after ``steps`` steps."""
    from transformers import TrainerCallback
    from trl import DPOTrainer

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= steps:
                control.should_training_stop = True

    torch.manual_seed(loop.seed)
    pm = peft_policy(folder, lora, loop.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = DPOTrainer(model=pm, ref_model=None,
                             args=dpo_config(tmp, dpo, optim, schedule, loop, schedule_steps),
                             train_dataset=trl_dataset(ordered_pairs), processing_class=tokenizer.hf,
                             callbacks=[Stop()])
        trainer.train()
        rows = [{"step": int(h["step"]), "loss": float(h["loss"]), "margin": float(h.get("rewards/margins", math.nan)),
                 "logps_chosen": float(h.get("logps/chosen", math.nan))}
                for h in trainer.state.log_history if "loss" in h and "step" in h]
        steps_done = trainer.state.global_step
    return TRLRun(rows, time.perf_counter() - t0, steps_done)


def bench(folder: Path, tokenizer: Any, pairs: Sequence[Any], examples: Sequence[PairExample], lora: AdapterConfig,
          dpo: DPOTaskConfig, optim: OptimConfig, loop: LoopConfig, steps: int) -> list[dict[str, Any]]:
    """Seconds per optimizer step (forward of policy and reference, loss, backward, clipping, AdamW) on one batch,
    hand vs TRL, in this process: one untimed warm-up each, then ``steps`` timed steps of each, alternated (so a
    noisy neighbour slows both); the median of each."""
    from trl import DPOTrainer

    from shared.train.optim import build_optimizer
    from shared.train.step import train_step
    from week09_dpo.runs import build_policy

    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    hand = build_policy(folder, lora, torch.device("cpu"), loop.seed).train()
    task = DPOTask(list(examples), list(examples), pad, 0, AdapterOffReference(), dpo)
    b = collate_pairs(examples, pad)
    opt = build_optimizer(hand, optim)
    pm = peft_policy(folder, lora, loop.seed).train()
    times: dict[str, list[float]] = {"hand": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = DPOTrainer(model=pm, ref_model=None,
                             args=dpo_config(tmp, dpo, optim, ScheduleConfig(warmup_steps=0), loop, steps + 1),
                             train_dataset=trl_dataset(pairs), processing_class=tokenizer.hf)
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train; training_step reads it
        tb = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])

        def hand_step() -> None:
            train_step(hand, opt, [b], task.loss, grad_clip=loop.grad_clip)

        def trl_step() -> None:
            trainer.training_step(trainer.model, dict(tb))
            torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), loop.grad_clip)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)

        for i in range(steps + 1):
            for name, fn in (("hand", hand_step), ("trl", trl_step)):
                t0 = time.perf_counter()
                fn()
                if i:
                    times[name].append(time.perf_counter() - t0)
    tokens = int(b["attention_mask"].sum())
    return [{"impl": k, "pairs": len(examples), "tokens": tokens, "steps timed": len(v),
             "s/step": statistics.median(v), "tokens/s": tokens / statistics.median(v)} for k, v in times.items()]
