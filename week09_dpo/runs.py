"""One week-9 run on the shared loop: DPO (or IPO, or DPO + an SFT term) with LoRA adapters on the starting model,
the reference being the same model with the adapters switched off; cached by config hash, resumable.

The run folder's config names the starting model (folder and weights hash), the data (pairs hash), the objective
(loss, beta, SFT weight), the adapter and every loop setting, so each number in the log traces to one run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.evals.generate import GenerationProbe
from shared.nn.lora import LoRAConfig, init_adapters, inject_lora, save_adapter
from shared.tasks.dpo import AdapterOffReference, DPOTask, DPOTaskConfig, PairExample
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig, run_identity
from shared.train.finetune import finetune
from week09_dpo.config import AdapterConfig

WEEK = "week09"


@dataclass
class Start:
    """The model runs start from: its folder, its name and the sha256 of its weights."""

    folder: Path
    name: str
    sha256: str


@dataclass
class RunSpec:
    """What names a run folder (its hash)."""

    start: str = ""
    start_sha256: str = ""
    data_sha256: str = ""
    eval_ids: list[str] = field(default_factory=list)
    dpo: DPOTaskConfig = field(default_factory=DPOTaskConfig)
    lora: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    gen: dict[str, Any] = field(default_factory=dict)


@dataclass
class DPORun:
    """A finished run, as the log and the checks read it."""

    name: str
    dpo: DPOTaskConfig
    lr: float
    run_id: str
    run_dir: Path
    trainable_params: int
    evals: list[dict[str, float]]  # step + DPOTask.evaluate's metrics
    train_rows: list[dict[str, float]]  # step, loss, grad_norm, margin, logps_chosen, ...
    steps: int
    train_time_s: float
    tokens_per_sec: float
    peak_rss_gib: float
    reused: bool
    model: Any = None

    @property
    def seconds_per_step(self) -> float:
        return self.train_time_s / max(self.steps, 1)

    def row(self) -> dict[str, Any]:
        """One line of the runs table."""
        first, last = self.evals[0], self.evals[-1]
        return {"run": self.name, "loss": self.dpo.loss, "beta": self.dpo.beta, "sft weight": self.dpo.sft_weight,
                "lr": self.lr, "steps": self.steps, "val loss": f"{first['val_loss']:.4f} → {last['val_loss']:.4f}",
                "reward acc": round(last["reward_accuracy"], 3), "margin": round(last["margin"], 3),
                "chosen logps": f"{first['logps_chosen']:.1f} → {last['logps_chosen']:.1f}",
                "KL (nats/token)": round(last["kl"], 4), "s/step": round(self.seconds_per_step, 2),
                "run id": self.run_id, "reused": self.reused}


def build_policy(folder: Path, lora: AdapterConfig, device: torch.device, seed: int) -> nn.Module:
    """The starting model (fp32) with hand-written LoRA adapters, A drawn by
    :func:`shared.nn.lora.init_adapters` (peft's init from one seeded stream: TRL's peft model gets the same A)."""
    from transformers import AutoModelForCausalLM

    from shared.models.causal_lm import HFCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    inject_lora(hf, LoRAConfig(lora.r, lora.alpha, 0.0, list(lora.target_modules)))
    init_adapters(hf, seed)
    return HFCausalLM(hf).to(device)


def train_dpo(name: str, start: Start, profile: str, train: list[PairExample], periodic: list[PairExample],
              data_sha: str, dpo: DPOTaskConfig, lora: AdapterConfig, optim: OptimConfig, schedule: ScheduleConfig,
              loop: LoopConfig, pad_id: int, probe: GenerationProbe | None, *, keep_model: bool = False) -> DPORun:
    """Train (or resume, or reuse) one run of ``loop.max_steps`` steps; its adapter goes to ``<run>/adapter/``."""
    task = DPOTask(train, periodic, pad_id, loop.seed, AdapterOffReference(), dpo, probe)
    gen = {"prompts": probe.prompts, "max_new_tokens": probe.max_new_tokens} if probe else {}
    spec = RunSpec(start.name, start.sha256, data_sha, [e.id for e in periodic], dpo, asdict(lora), optim, schedule,
                   run_identity(loop), gen)
    run = finetune(WEEK, name, profile, spec, lambda d: build_policy(start.folder, lora, d, loop.seed), task, optim,
                   schedule, loop, tensorboard=False,
                   checkpoint_meta={"start": start.name, "start_sha256": start.sha256, "dpo": asdict(dpo)},
                   expect={"start_sha256": start.sha256})
    model = run.model.eval()
    save_adapter(model, run.run.dir / "adapter", LoRAConfig(lora.r, lora.alpha, 0.0, list(lora.target_modules)),
                 {"name": start.name, "sha256": start.sha256})
    rows = run.metrics[run.metrics.phase == "train"]
    keep = [c for c in ("step", "loss", "grad_norm", "tokens_per_sec", "margin", "reward_accuracy", "logps_chosen",
                        "logps_rejected", "rewards_chosen", "rewards_rejected") if c in rows.columns]
    evals = [{k: float(v) for k, v in e.items() if isinstance(v, (int, float))} for e in run.result.evals]
    return DPORun(name, dpo, optim.lr, run.run.run_id, run.run.dir,
                  sum(p.numel() for p in model.parameters() if p.requires_grad), evals, rows[keep].to_dict("records"),
                  run.result.step, run.result.train_time_s, run.tokens_per_sec, run.peak_memory_gib, run.reused,
                  model if keep_model else None)

