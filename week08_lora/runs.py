"""One week-8 run on the shared loop: encode week 7's SFT data, fine-tune one variant (cached by config hash), save
its adapter, and keep what the log reads (loss and grad-norm curves, speed, file sizes).

The run folder's config names the starting model (folder and weights hash), the data (records hash), the variant
(method, rank, alpha, lr, quantisation) and every loop setting, so a number in the log traces to one run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from shared.data.instruct import InstructionRecord
from shared.data.tokenizer import load_tokenizer
from shared.nn.lora import ADAPTER_WEIGHTS, lora_layers, save_adapter
from shared.tasks.sft import SFTTask, SFTTaskConfig, sft_task_from_records
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig, run_identity
from shared.train.finetune import finetune
from week08_lora.variants import VariantSpec, build

WEEK = "week08"


@dataclass
class Start:
    """A model a run starts from: its folder, its name and the sha256 of its weights."""

    folder: Path
    name: str
    sha256: str


@dataclass
class RunSpec:
    """What names a run folder (its hash)."""

    start: str = ""
    start_sha256: str = ""
    data_sha256: str = ""
    val_sha256: str = ""
    variant: dict[str, Any] = field(default_factory=dict)
    sft: SFTTaskConfig = field(default_factory=SFTTaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)


@dataclass
class VariantResult:
    """A finished run, as the log and the checks read it."""

    spec: VariantSpec
    run_id: str
    run_dir: Path
    trainable_params: int
    total_params: int
    evals: list[dict[str, float]]  # step, val_loss, train_loss
    train_rows: list[dict[str, float]]  # step, loss, grad_norm, tokens_per_sec
    steps: int
    tokens: int
    train_time_s: float
    tokens_per_sec: float
    peak_rss_gib: float
    adapter_bytes: int  # adapter.safetensors (0 for full fine-tuning)
    reused: bool
    model: Any = None  # the trained model (eval mode) when kept

    @property
    def first_val_loss(self) -> float:
        return float(self.evals[0]["val_loss"])

    @property
    def final_val_loss(self) -> float:
        return float(self.evals[-1]["val_loss"])

    @property
    def seconds_per_step(self) -> float:
        return self.train_time_s / max(self.steps, 1)

    def row(self) -> dict[str, Any]:
        """One line of the runs table."""
        s = self.spec
        return {"run": self.spec.name, "method": s.method, "start": s.start, "r": s.r or "", "alpha": s.alpha or "",
                "lr": s.lr, "trainable params": self.trainable_params, "steps": self.steps,
                "first val loss": round(self.first_val_loss, 4), "final val loss": round(self.final_val_loss, 4),
                "s/step": round(self.seconds_per_step, 2), "tokens/s": round(self.tokens_per_sec, 1),
                "run id": self.run_id, "reused": self.reused}


def sft_task(tokenizer: Any, train: Sequence[InstructionRecord], val: Sequence[InstructionRecord],
             sft: SFTTaskConfig, seed: int) -> SFTTask:
    """Week 7's objective on week 7's records: response-only loss, examples over ``sft.max_length`` dropped."""
    return sft_task_from_records(train, val, tokenizer, sft, seed)[0]


def train_variant(spec: VariantSpec, start: Start, profile: str, train: Sequence[InstructionRecord],
                  val: Sequence[InstructionRecord], hashes: dict[str, str], sft: SFTTaskConfig, optim: OptimConfig,
                  schedule: ScheduleConfig, loop: LoopConfig, *, keep_model: bool = False,
                  run_name: str | None = None) -> VariantResult:
    """Fine-tune ``spec`` from ``start`` for ``loop.max_steps`` steps at lr ``spec.lr`` (resumed or reused when
    its run folder holds a checkpoint); its adapter goes to ``<run>/adapter/``.

    Raises:
        BackendUnavailableError: see :func:`week08_lora.variants.build`.
    """
    tokenizer = load_tokenizer(start.folder)
    task = sft_task(tokenizer, train, val, sft, loop.seed)
    optim = replace(optim, lr=spec.lr)
    run_spec = RunSpec(start.name, start.sha256, hashes["train"], hashes["val"], asdict(spec), sft, optim, schedule,
                       run_identity(loop))
    run = finetune(WEEK, run_name or spec.name, profile, run_spec, lambda d: build(spec, start.folder, d, loop.seed),
                   task, optim, schedule, loop, tensorboard=False,
                   checkpoint_meta={"start": start.name, "start_sha256": start.sha256, "variant": asdict(spec)},
                   expect={"start_sha256": start.sha256})
    model = run.model.eval()
    adapter_bytes = 0
    if lora_layers(model):
        from shared.nn.lora import LoRAConfig

        path = save_adapter(model, run.run.dir / "adapter", LoRAConfig(spec.r, spec.alpha, spec.dropout,
                                                                       list(spec.target_modules)),
                            {"name": start.name, "sha256": start.sha256})
        adapter_bytes = path.stat().st_size
    elif spec.method in ("peft", "bnb"):
        hf = model.hf
        hf.save_pretrained(str(run.run.dir / "adapter"))
        adapter_bytes = sum(p.stat().st_size for p in (run.run.dir / "adapter").glob("*.safetensors"))
    rows = run.metrics[run.metrics.phase == "train"]
    keep = [c for c in ("step", "loss", "grad_norm", "tokens_per_sec") if c in rows.columns]
    evals = [{k: float(v) for k, v in e.items() if k in ("step", "val_loss", "train_loss")} for e in run.result.evals]
    params = list(model.parameters())
    return VariantResult(spec, run.run.run_id, run.run.dir, sum(p.numel() for p in params if p.requires_grad),
                         sum(p.numel() for p in params), evals, rows[keep].to_dict("records"), run.result.step,
                         run.result.tokens, run.result.train_time_s, run.tokens_per_sec, run.peak_memory_gib,
                         adapter_bytes, run.reused, model if keep_model else None)


def adapter_file(result: VariantResult) -> Path | None:
    """The run's adapter weights file (hand: ``adapter.safetensors``; peft: ``adapter_model.safetensors``)."""
    folder = result.run_dir / "adapter"
    for name in (ADAPTER_WEIGHTS, "adapter_model.safetensors"):
        if (folder / name).is_file():
            return folder / name
    return None


def export_merged(result: VariantResult, start: Start, out: Path, tokenizer: Any,
                  extra: dict[str, Any]) -> tuple[Path, Any]:
    """Merge the run's adapters into the weights and save the plain Hugging Face model to ``out`` (safetensors,
    tokenizer, ``meta.json``), atomically; ``AutoModelForCausalLM.from_pretrained(out)`` loads it. Returns the folder
    and the merged model (``result.model`` is consumed: its adapters are folded in)."""
    from shared.models.hf import save_pretrained_hf
    from week08_lora.variants import merged_hf

    hf = merged_hf(result.model, result.spec)
    info = {"start": start.name, "start_sha256": start.sha256, "variant": asdict(result.spec), "run_id": result.run_id,
            "steps": result.steps, "final_val_loss": result.final_val_loss, **extra}
    with torch.no_grad():
        return save_pretrained_hf(hf, out, tokenizer, info), hf
