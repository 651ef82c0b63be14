"""One SFT run with the project's objective on the shared loop: encode, fine-tune (cached by config hash), export.

The run folder's config names the base model (its folder and weights hash), the data version (its records hash),
the SFT settings and every hyper-parameter, so a result traces to the exact weights and records it saw. The
trained model is exported in Hugging Face format with its tokenizer and ``meta.json`` to ``models/week07/<name>``
(``AutoModelForCausalLM.from_pretrained`` loads it; weeks 8, 9 and 11 start from it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from shared.data.instruct import InstructionRecord
from shared.data.tokenizer import load_tokenizer
from shared.models.loading import weights_sha256
from shared.paths import models_root
from shared.tasks.sft import SFTTask, SFTTaskConfig, sft_task_from_records
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig, run_identity
from shared.train.finetune import finetune

WEEK = "week07"


@dataclass
class DataRef:
    """The data version a run trained on."""

    version: str = ""  # "v1", "v2", "overfit", ...
    sha256: str = ""  # of the training records (week07_sft.data.records_hash)
    val_sha256: str = ""
    records: int = 0


@dataclass
class SFTRunSpec:
    """What names a run folder (its hash): base weights, data, objective, hyper-parameters."""

    base: str = ""  # the base model's folder name
    base_sha256: str = ""  # of its weights (and config)
    data: DataRef = field(default_factory=DataRef)
    sft: SFTTaskConfig = field(default_factory=SFTTaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)


@dataclass
class SFTResult:
    """A finished SFT run, as the log and the checks read it."""

    name: str
    run_id: str
    run_dir: Path
    config_hash: str
    export_dir: Path
    data: DataRef
    evals: list[dict[str, float]]  # step, tokens, val_loss, train_loss
    train_rows: list[dict[str, float]]  # step, loss, tokens_per_sec
    steps: int
    tokens: int
    train_time_s: float
    tokens_per_sec: float
    peak_memory_gib: float
    dropped: int  # over max_length
    empty: int  # empty responses
    examples: int
    padding_share: float  # padded positions / all positions over the run's micro-batches
    reused: bool
    tokenizer_sha256: str
    model: Any = None  # the trained model (eval mode) when the caller asked to keep it

    @property
    def final_val_loss(self) -> float:
        return float(self.evals[-1]["val_loss"])

    @property
    def first_val_loss(self) -> float:
        return float(self.evals[0]["val_loss"])


def is_gpt_export(folder: Path) -> bool:
    """A :func:`shared.models.hf.save_hf` export of the project's GPT (trained as the GPT, not as the HF twin)."""
    from shared.models.hf import EXPORT_FILE

    return (folder / EXPORT_FILE).is_file()


def load_model(folder: Path, device: torch.device) -> torch.nn.Module:
    """The model in ``folder`` in fp32: the project's GPT for a GPT export, else the HF model behind
    :class:`shared.models.causal_lm.HFCausalLM`."""
    if is_gpt_export(folder):
        from shared.models.hf import load_hf

        return load_hf(folder).to(device)
    from transformers import AutoModelForCausalLM

    from shared.models.causal_lm import HFCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    return HFCausalLM(hf).to(device)


def padding_share(task: SFTTask, steps: int, micro_batch: int, accum: int) -> float:
    """Share of padded positions over the micro-batches of ``steps`` optimizer steps (from the examples' lengths)."""
    pad = total = 0
    for i in range(steps * accum):
        lengths = [len(task.train[j].input_ids) for j in task.example_indices(i, 0, 1, micro_batch)]
        total += max(lengths) * len(lengths)
        pad += max(lengths) * len(lengths) - sum(lengths)
    return pad / max(total, 1)


def sft_run(name: str, profile: str, base_dir: Path, train: Sequence[InstructionRecord],
            val: Sequence[InstructionRecord], data: DataRef, sft: SFTTaskConfig, optim: OptimConfig,
            schedule: ScheduleConfig, loop: LoopConfig, *, export: bool = True, base_sha256: str | None = None,
            meta: dict[str, Any] | None = None, keep_model: bool = False) -> SFTResult:
    """Fine-tune the model in ``base_dir`` on ``train`` (val loss on ``val``) and export it.

    Args:
        loop: its ``max_steps`` is the budget; ``loop.seed`` seeds the order of the examples.
        export: write ``models/week07/<name>`` (HF format, tokenizer, meta.json).
        keep_model: return the trained model in :attr:`SFTResult.model` (else it is released).

    Raises:
        ValueError: every training or validation example was dropped for ``sft.max_length``.
    """
    tokenizer = load_tokenizer(base_dir)
    task, enc_train = sft_task_from_records(train, val, tokenizer, sft, loop.seed)
    spec = SFTRunSpec(base_dir.name, base_sha256 or weights_sha256(base_dir), data, sft, optim, schedule,
                      run_identity(loop))
    gpt = is_gpt_export(base_dir)
    run = finetune(WEEK, name, profile, spec, lambda device: load_model(base_dir, device), task, optim, schedule,
                   loop, checkpoint_meta={"base_model": str(base_dir), "data": data.version,
                                          "data_sha256": data.sha256, "tokenizer_sha256": tokenizer.sha256},
                   expect={"tokenizer_sha256": tokenizer.sha256}, tensorboard=False)
    out = models_root() / WEEK / name
    if export:
        info = {"base_model": str(base_dir.name), "base_sha256": spec.base_sha256, "data_version": data.version,
                "data_sha256": data.sha256, "config_hash": run.run.config_hash, "run_id": run.run.run_id,
                "steps": run.result.step, "final_val_loss": run.result.evals[-1]["val_loss"], **(meta or {})}
        model = run.model.eval()
        if gpt:
            from shared.models.hf import save_hf

            save_hf(model, out, tokenizer, info)
            (out / "meta.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        else:
            from shared.models.hf import save_pretrained_hf

            save_pretrained_hf(model, out, tokenizer, info)
    train_rows = run.metrics[run.metrics.phase == "train"]
    evals = [{k: float(v) for k, v in e.items() if k in ("step", "tokens", "val_loss", "train_loss")}
             for e in run.result.evals]
    return SFTResult(name, run.run.run_id, run.run.dir, run.run.config_hash, out, data, evals, train_rows[["step", "loss", "tokens_per_sec"]].to_dict("records"),
                     run.result.step, run.result.tokens, run.result.train_time_s, run.tokens_per_sec,
                     run.peak_memory_gib, len(enc_train.dropped), len(enc_train.empty), len(enc_train.examples),
                     padding_share(task, run.result.step, loop.micro_batch, loop.grad_accum_steps), run.reused,
                     tokenizer.sha256, run.model.eval() if keep_model else None)


def with_steps(loop: LoopConfig, steps: int, **changes: Any) -> LoopConfig:
    """``loop`` with a step budget of ``steps`` (and any other fields changed)."""
    return replace(loop, max_steps=steps, max_tokens=0, max_seconds=0.0, **changes)
