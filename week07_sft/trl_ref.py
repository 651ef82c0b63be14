"""TRL's ``SFTTrainer`` as the reference of the hand-written SFT objective (https://huggingface.co/docs/trl/sft_trainer).

The same records go to TRL as a prompt/completion dataset (the prompt already formatted, the completion the output)
with ``SFTConfig(completion_only_loss=True)``: TRL masks the prompt and appends EOS, as
:func:`shared.tasks.sft.encode_records` does. Three comparisons:

- **one fixed batch**: TRL's collated batch must hold the same ids and the same masked positions as the project's,
  and ``SFTTrainer.compute_loss`` and :func:`shared.tasks.sft.sft_loss` (model in fp32, as trained) must each land
  within ``trl.loss_rtol`` of the objective's exact value: the same model in fp64, cross-entropy in fp64 at TRL's
  labels. Judging each against the exact value, not one against the other, says which one rounds and by how much.
  They do not round alike: ``F.cross_entropy``'s fp32 log-softmax on the CPU rounds *every* token's loss low (a bias
  that a mean over tokens does not average away), and by an amount that depends on the CPU's vector kernels, while
  TRL's fused LM head (``fused_lm_head=True``) takes a tiled log-sum-exp, which stays far closer (the week's log
  gives both signed errors on SmolLM2's 49,152-token vocabulary). The tolerance, 2e-05 relative, is about three
  times the largest such bias seen on this project's machines; a different objective (one token more or less in
  the mask, another normalisation) moves the mean over a few hundred tokens by over 1e-04 relative (the test's
  failing input);
- **training parity**: TRL trains with the same model, data, batch size, steps, learning rate, warm-up, cosine
  decay, clipping and AdamW settings; its model's val loss, measured by the project's evaluator at the same steps,
  must land within ``trl.parity_rel`` of the project's (the example order differs: TRL shuffles with its own
  sampler);
- **speed** (:mod:`week07_sft.bench`): seconds per step on the same batch.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared.data.instruct import InstructionRecord
from shared.data.prompts import format_prompt
from shared.data.tokenizer import load_tokenizer
from shared.tasks.lm import IGNORE_INDEX
from shared.tasks.sft import SFTTask, SFTTaskConfig, collate, encode_records, sft_loss
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig


def trl_dataset(records: Sequence[InstructionRecord], tokenizer: Any, template: str):
    """A ``datasets.Dataset`` of ``{"prompt", "completion"}`` (TRL's prompt-completion format)."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [format_prompt(r.instruction, r.input, template, tokenizer) for r in records],
                              "completion": [r.output for r in records]})


def fitting(records: Sequence[InstructionRecord], tokenizer: Any, template: str,
            max_length: int) -> list[InstructionRecord]:
    """The records the project's encoder keeps (not over ``max_length``, not empty), in order: what TRL is given,
    so both train on the same examples (TRL would truncate the long ones instead)."""
    keep = {e.id for e in encode_records(records, tokenizer, template, max_length).examples}
    return [r for r in records if r.id in keep]


def sft_config(out_dir: str, optim: OptimConfig, schedule: ScheduleConfig, loop: LoopConfig, max_length: int,
               **extra: Any):
    """The ``SFTConfig`` matching the project's hyper-parameters (fp32 on CPU, no gradient checkpointing)."""
    from trl import SFTConfig

    cpu = loop.device in ("cpu", "auto") and not torch.cuda.is_available()
    return SFTConfig(output_dir=out_dir, per_device_train_batch_size=loop.micro_batch,
                     gradient_accumulation_steps=loop.grad_accum_steps, max_steps=loop.max_steps,
                     learning_rate=optim.lr, adam_beta1=optim.beta1, adam_beta2=optim.beta2, adam_epsilon=optim.eps,
                     weight_decay=optim.weight_decay, max_grad_norm=loop.grad_clip, lr_scheduler_type="cosine",
                     warmup_steps=schedule.warmup_steps, max_length=max_length, completion_only_loss=True,
                     packing=False, use_cpu=cpu, bf16=loop.precision == "bf16", fp16=False,
                     activation_checkpointing=False, gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1,
                     seed=loop.seed, data_seed=loop.seed, dataloader_num_workers=0, disable_tqdm=True, **extra)


def _hf_model(base_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True, dtype=torch.float32)


@dataclass
class BatchComparison:
    """The fixed-batch comparison: same ids and masks, and the two losses (nats/token)."""

    same_ids: bool
    same_mask: bool
    project_loss: float  # fp32 model, the project's sft_loss
    trl_loss: float  # fp32 model, SFTTrainer.compute_loss
    examples: int
    tokens: int
    exact_loss: float = float("nan")  # fp64 model, fp64 cross-entropy at TRL's labels

    @property
    def abs_diff(self) -> float:
        return abs(self.project_loss - self.trl_loss)

    @property
    def project_rel_err(self) -> float:
        """(project - exact) / exact: the project's fp32 rounding, signed."""
        return (self.project_loss - self.exact_loss) / self.exact_loss

    @property
    def trl_rel_err(self) -> float:
        """(TRL - exact) / exact: TRL's fp32 rounding, signed."""
        return (self.trl_loss - self.exact_loss) / self.exact_loss


def compare_batch(base_dir: Path, records: Sequence[InstructionRecord], sft: SFTTaskConfig, optim: OptimConfig,
                  schedule: ScheduleConfig, loop: LoopConfig) -> BatchComparison:
    """TRL's loss and the project's (model in fp32) on the first ``loop.micro_batch`` records that fit
    ``sft.max_length``, and the objective's exact value on that batch (model and cross-entropy in fp64)."""
    from trl import SFTTrainer

    tokenizer = load_tokenizer(base_dir)
    enc = encode_records(records, tokenizer, sft.template, sft.max_length)
    chosen = enc.examples[:loop.micro_batch]
    ids = {e.id for e in chosen}
    picked = [r for r in records if r.id in ids]
    model = _hf_model(base_dir).eval()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = SFTTrainer(model=model, args=sft_config(tmp, optim, schedule, loop, sft.max_length),
                             train_dataset=trl_dataset(picked, tokenizer, sft.template), processing_class=tokenizer.hf)
        rows = [trainer.train_dataset[i] for i in range(len(picked))]
        trl_batch = trainer.data_collator(rows)
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
        ours = collate(chosen, pad)
        with torch.no_grad():
            trl_loss = float(trainer.compute_loss(model, {k: v for k, v in trl_batch.items()}))
            mine = float(sft_loss(model(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"]).logits,
                                  ours["labels"]))
            exact = exact_loss(model.double(), trl_batch)
    t_ids = trl_batch["input_ids"]
    same_shape = t_ids.shape == ours["input_ids"].shape
    same_ids = bool(same_shape and torch.equal(t_ids * trl_batch["attention_mask"],
                                               ours["input_ids"] * ours["attention_mask"]))
    same_mask = bool(same_shape and torch.equal(trl_batch["labels"] != IGNORE_INDEX, ours["labels"] != IGNORE_INDEX))
    return BatchComparison(same_ids, same_mask, mine, trl_loss, len(chosen), int((ours["labels"] != -100).sum()),
                           exact)


def exact_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Mean next-token cross-entropy (nats/token) over ``batch["labels"]`` (B, T; -100 = no loss) with every step in
    the model's dtype: the reference value when the model is fp64 (no fp32 cast anywhere, unlike the trained path)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                                   ignore_index=IGNORE_INDEX))


@dataclass
class TRLRun:
    """TRL's training: its own per-step train loss, and the project's val loss of its model at eval steps."""

    train_loss: list[tuple[int, float]]  # (step, loss) as TRL logs it
    evals: list[dict[str, float]]  # step, val_loss (the project's evaluator)
    train_time_s: float
    steps: int


def trl_train(base_dir: Path, train: Sequence[InstructionRecord], val_task: SFTTask, sft: SFTTaskConfig,
              optim: OptimConfig, schedule: ScheduleConfig, loop: LoopConfig) -> TRLRun:
    """Train with ``SFTTrainer`` for ``loop.max_steps`` steps; every ``loop.eval_every`` steps (and at 0 and the
    end) measure the val loss with ``val_task.mean_loss`` on ``val_task.val``."""
    from transformers import TrainerCallback
    from trl import SFTTrainer

    tokenizer = load_tokenizer(base_dir)
    data = trl_dataset(fitting(train, tokenizer, sft.template, sft.max_length), tokenizer, sft.template)
    torch.manual_seed(loop.seed)
    model = _hf_model(base_dir)
    evals: list[dict[str, float]] = []

    from shared.models.causal_lm import HFCausalLM

    def measure(step: int, m: torch.nn.Module) -> None:
        was = m.training
        m.eval()
        evals.append({"step": float(step), "val_loss": val_task.mean_loss(HFCausalLM(m), val_task.val)})
        m.train(was)

    class Evals(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            measure(0, model)

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % loop.eval_every == 0 or state.global_step == loop.max_steps:
                measure(state.global_step, model)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = SFTTrainer(model=model, args=sft_config(tmp, optim, schedule, loop, sft.max_length),
                             train_dataset=data, processing_class=tokenizer.hf, callbacks=[Evals()])
        out = trainer.train()
        logs = [(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h]
    seen, uniq = set(), []
    for e in evals:  # the last step may be both an eval step and the end
        if e["step"] not in seen:
            seen.add(e["step"])
            uniq.append(e)
    return TRLRun(logs, uniq, float(out.metrics.get("train_runtime", math.nan)), trainer.state.global_step)
