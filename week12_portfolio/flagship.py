"""The flagship pipeline (``make flagship``): the project's GPT pre-trained (week 5's recipe) -> SFT (week 7) ->
LoRA (week 8) -> DPO (week 9) -> served by the continuous-batching engine (week 11), each stage starting from the
previous stage's Hugging Face export in ``models/week12/flagship/<stage>/``, with the eval harness row after every
stage. Every training stage is a registered run of the shared recipes (``pretrain`` / ``finetune``), keyed by its
config and its starting weights' sha256: running the pipeline again reuses finished stages and resumes a half-done one.

Why this pipeline: it is the one path that crosses every layer the curriculum builds (tokenizer, GPT, loop, SFT
mask, LoRA, DPO loss, KV cache, engine) on one model, so a bug anywhere shows up as a broken hand-off or a harness
row that moves the wrong way.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.atomic import atomic_write_text
from shared.data.lm import LMDataConfig, prepare_lm_data
from shared.data.tokenizer import load_tokenizer
from shared.evals.harness import run_harness
from shared.evals.instruct import EvalItem, HarnessConfig
from shared.models.gpt import GPT, GPTConfig
from shared.models.hf import load_hf, save_hf
from shared.models.loading import weights_sha256
from shared.nn.lora import LoRAConfig, init_adapters, inject_lora, unload_lora
from shared.paths import models_root, runs_root
from shared.tasks.lm import LMTaskConfig
from shared.tasks.sft import SFTTaskConfig, sft_task_from_records
from shared.tracking import console
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig, run_identity
from shared.train.finetune import finetune
from shared.train.pretrain import LMSetup, pretrain
from week12_portfolio import flagship_data
from week12_portfolio.flagship_config import STAGES, FlagshipConfig

WEEK = "week12"
HARNESS_KEYS = ("format_compliance", "rougeL", "exact_match", "instruction_following")


class StageOrderError(FileNotFoundError):
    """A stage's starting model is missing: the previous stage has not exported it."""


@dataclass
class StageResult:
    """One stage: its run (None for serving), its export, its own metrics, and the harness row of its model."""

    stage: str
    run_id: str | None
    export: str  # repository-relative folder of the stage's model (models/week12/flagship/<stage>)
    weights_sha256: str
    metrics: dict[str, float]  # the stage's own numbers (val loss, perplexity, reward accuracy, tokens/s, ...)
    harness: dict[str, Any]  # the eval harness summary on this stage's model
    seconds: float  # wall time of the stage in this process (training or reuse, export, harness)
    reused: bool
    fresh_seconds: float = 0.0  # the stage's time when it last trained (a reused stage carries its recorded one)


@dataclass
class FlagshipResult:
    """The pipeline's stages in order, the eval set's hash and the total wall time (s)."""

    profile: str
    stages: list[StageResult] = field(default_factory=list)
    eval_sha256: str = ""
    eval_items: int = 0
    seconds: float = 0.0

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in self.stages if s.stage == name), None)

    @property
    def fresh_seconds(self) -> float:
        """The pipeline's time as a fresh run (s): each stage's time when it last trained."""
        return sum(s.fresh_seconds for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlagshipResult:
        return cls(data["profile"], [StageResult(**s) for s in data["stages"]], data.get("eval_sha256", ""),
                   data.get("eval_items", 0), data.get("seconds", 0.0))


def export_dir(profile: str, stage: str) -> Path:
    """``models/week12/flagship[-<profile>]/<stage>``: the cpu/gpu exports are the pipeline's; smoke keeps its own."""
    return models_root() / WEEK / ("flagship" if profile in ("cpu", "gpu") else f"flagship-{profile}") / stage


def summary_path(profile: str) -> Path:
    """Where the pipeline's result is recorded (``runs/week12/<profile>/flagship.json``)."""
    return runs_root() / WEEK / profile / "flagship.json"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(models_root().resolve().parent))
    except ValueError:
        return str(path)


def export_model(model: GPT, folder: Path, tokenizer: Any, meta: dict[str, Any]) -> str:
    """Write ``model`` as a Hugging Face folder atomically (a sibling temp folder renamed into place, so a killed run
    never leaves half an export); returns its weights' sha256."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_hf(model, tmp, tokenizer=tokenizer, meta=meta)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return weights_sha256(folder)


def _start(profile: str, stage: str) -> Path:
    prev = STAGES[STAGES.index(stage) - 1]
    folder = export_dir(profile, prev)
    if not (folder / "aifs_export.json").is_file():
        raise StageOrderError(f"{folder} is missing: stage {stage!r} starts from stage {prev!r}'s export; run the "
                              f"pipeline from {prev!r} (make flagship PROFILE={profile})")
    return folder


def harness_row(model: nn.Module, tokenizer: Any, items: list[EvalItem], cfg: FlagshipConfig,
                template: str) -> dict[str, Any]:
    """The eval harness summary of ``model`` (greedy answers to the frozen items; see shared.evals.harness)."""
    res = run_harness(model.eval(), tokenizer, items, template, HarnessConfig(cfg.eval.max_new_tokens,
                                                                              cfg.eval.batch_size))
    out = {k: res.summary.get(k) for k in HARNESS_KEYS}
    out["answers_sha256"] = _answers_sha(res.rows)
    return out


def _answers_sha(rows: list[dict[str, Any]]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([r.get("answer", "") for r in rows]).encode()).hexdigest()[:16]


def _loop(cfg: FlagshipConfig, steps: int, micro_batch: int, eval_every: int) -> LoopConfig:
    return LoopConfig(max_steps=steps, micro_batch=micro_batch, eval_every=eval_every, seed=cfg.seed, log_every=1,
                      print_every=max(steps // 10, 1), keep_last_k=1, grad_clip=1.0, best_metric="val_loss")


def _schedule(lr: float, steps: int) -> ScheduleConfig:
    return ScheduleConfig(name="cosine", warmup_steps=max(steps // 20, 1), min_lr=lr / 10)


@dataclass
class _PretrainKey:
    setup: LMSetup
    data: LMDataConfig
    corpus_sha: str


def pretrain_stage(cfg: FlagshipConfig, profile: str, held_out: list[Any]) -> tuple[GPT, Any, StageResult]:
    """Pre-train the GPT on the written corpus; returns the model, its tokenizer and the stage row."""
    t0 = time.perf_counter()
    p = cfg.pretrain
    folder = flagship_data.pretraining_corpus(p.corpus, held_out)
    data_cfg = LMDataConfig(corpus=str(folder), separator=flagship_data.SEPARATOR, val_frac=cfg.val_frac,
                            split_seed=cfg.seed, tokenizer=p.tokenizer, vocab_size=p.vocab_size)
    data = prepare_lm_data(data_cfg, WEEK, p.block_size)
    model_cfg = GPTConfig(vocab_size=data.vocab_size, block_size=p.block_size, n_layer=p.n_layer, n_head=p.n_head,
                          n_embd=p.n_embd)
    loop = _loop(cfg, p.steps, p.micro_batch, p.eval_every)
    setup = LMSetup(model_cfg, OptimConfig(lr=p.lr, weight_decay=0.1, beta2=0.99), _schedule(p.lr, p.steps), loop,
                    LMTaskConfig(eval_iters=p.eval_iters))
    # the key names the corpus by its content hash, not its folder path (the folder moves with AIFS_RUNS_ROOT)
    key = _PretrainKey(LMSetup(model_cfg, setup.optim, setup.schedule, run_identity(loop), setup.task),
                       LMDataConfig(**{**asdict(data_cfg), "corpus": folder.name}), folder.name)
    tok = data.tokenizer.tokenizer
    r = pretrain(WEEK, "flagship-pretrain", profile, key, setup, data.train, data.val, tokenizer_sha256=tok.sha256,
                 tensorboard=False)
    last = r.fit.evals[-1]
    sha = export_model(r.model.cpu(), export_dir(profile, "pretrain"), tok, {"run_id": r.run.run_id})
    metrics = {"val_loss": float(last["val_loss"]), "perplexity": float(torch.tensor(last["val_loss"]).exp()),
               "steps": float(r.fit.step), "tokens_per_sec": r.tokens_per_sec}
    return r.model, tok, StageResult("pretrain", r.run.run_id, _rel(export_dir(profile, "pretrain")), sha, metrics, {},
                                     time.perf_counter() - t0, r.skipped)


@dataclass
class _FinetuneKey:
    stage: str
    start_sha256: str
    data: dict[str, str]
    objective: dict[str, Any]
    optim: OptimConfig
    schedule: ScheduleConfig
    loop: LoopConfig


def _finetune(cfg: FlagshipConfig, profile: str, stage: str, task: Any, build: Callable[[torch.device], nn.Module],
              start_sha: str, data_hashes: dict[str, str], objective: dict[str, Any], lr: float, steps: int,
              micro_batch: int, eval_every: int) -> Any:
    loop = _loop(cfg, steps, micro_batch, eval_every)
    optim, schedule = OptimConfig(lr=lr, weight_decay=0.0), _schedule(lr, steps)
    key = _FinetuneKey(stage, start_sha, data_hashes, objective, optim, schedule, run_identity(loop))
    return finetune(WEEK, f"flagship-{stage}", profile, key, build, task, optim, schedule, loop, tensorboard=False,
                    checkpoint_meta={"start_sha256": start_sha}, expect={"start_sha256": start_sha})


def sft_stage(cfg: FlagshipConfig, profile: str, split: flagship_data.InstructionSplit) -> tuple[GPT, StageResult]:
    """Full fine-tuning of the pre-trained GPT on instruction records (response-only loss)."""
    t0 = time.perf_counter()
    start = _start(profile, "sft")
    tok = load_tokenizer(start)
    s = cfg.sft
    task_cfg = SFTTaskConfig(template=s.template, max_length=cfg.pretrain.block_size, train_eval_examples=0)
    task, enc = sft_task_from_records(split.train, split.val, tok, task_cfg, cfg.seed)
    start_sha = weights_sha256(start)
    r = _finetune(cfg, profile, "sft", task, lambda d: load_hf(start).train().to(d), start_sha, split.hashes,
                  {"task": asdict(task_cfg)}, s.lr, s.steps, s.micro_batch, s.eval_every)
    folder = export_dir(profile, "sft")
    sha = export_model(r.model.eval().cpu(), folder, tok, {"run_id": r.run.run_id, "start_sha256": start_sha})
    first, last = r.result.evals[0], r.result.evals[-1]
    metrics = {"val_loss_start": float(first["val_loss"]), "val_loss": float(last["val_loss"]),
               "dropped_examples": float(len(enc.dropped)), "tokens_per_sec": r.tokens_per_sec}
    return r.model, StageResult("sft", r.run.run_id, _rel(folder), sha, metrics, {}, time.perf_counter() - t0,
                                r.reused)


def _with_lora(start: Path, r: int, alpha: float, targets: list[str], seed: int) -> Callable[[torch.device], nn.Module]:
    def build(device: torch.device) -> nn.Module:
        model = load_hf(start).train()
        inject_lora(model, LoRAConfig(r, alpha, 0.0, list(targets)))
        init_adapters(model, seed)
        return model.to(device)

    return build


def lora_stage(cfg: FlagshipConfig, profile: str, split: flagship_data.InstructionSplit) -> tuple[GPT, StageResult]:
    """LoRA on a second instruction set, starting from the SFT export; the adapters are merged into the export."""
    t0 = time.perf_counter()
    start = _start(profile, "lora")
    tok = load_tokenizer(start)
    s = cfg.lora
    task_cfg = SFTTaskConfig(template=cfg.sft.template, max_length=cfg.pretrain.block_size, train_eval_examples=0)
    task, _ = sft_task_from_records(split.train, split.val, tok, task_cfg, cfg.seed)
    start_sha = weights_sha256(start)
    objective = {"task": asdict(task_cfg), "r": s.r, "alpha": s.alpha, "target_modules": list(s.target_modules)}
    r = _finetune(cfg, profile, "lora", task, _with_lora(start, s.r, s.alpha, s.target_modules, cfg.seed), start_sha,
                  split.hashes, objective, s.lr, s.steps, s.micro_batch, s.eval_every)
    trainable = sum(p.numel() for p in r.model.parameters() if p.requires_grad)
    model = unload_lora(r.model.eval().cpu())
    folder = export_dir(profile, "lora")
    sha = export_model(model, folder, tok, {"run_id": r.run.run_id, "start_sha256": start_sha})
    first, last = r.result.evals[0], r.result.evals[-1]
    metrics = {"val_loss_start": float(first["val_loss"]), "val_loss": float(last["val_loss"]),
               "trainable_params": float(trainable), "tokens_per_sec": r.tokens_per_sec}
    return model, StageResult("lora", r.run.run_id, _rel(folder), sha, metrics, {}, time.perf_counter() - t0, r.reused)


def dpo_stage(cfg: FlagshipConfig, profile: str) -> tuple[GPT, StageResult]:
    """DPO with LoRA adapters (the reference = the adapters off) on preference pairs; merged into the export."""
    from shared.data.preference import load_pairs, split_by_prompt
    from shared.tasks.dpo import AdapterOffReference, DPOTask, DPOTaskConfig, encode_pairs

    t0 = time.perf_counter()
    start = _start(profile, "dpo")
    tok = load_tokenizer(start)
    s = cfg.dpo
    pairs, _ = load_pairs(s.sources, cfg.sft.template, tok)
    train, val = split_by_prompt(pairs, s.val_pairs)
    dpo_cfg = DPOTaskConfig(beta=s.beta, max_length=cfg.pretrain.block_size)
    enc_train, enc_val = encode_pairs(train, tok, dpo_cfg.max_length), encode_pairs(val, tok, dpo_cfg.max_length)
    pad = tok.pad_id if tok.pad_id is not None else tok.eos_id
    task = DPOTask(enc_train.examples, enc_val.examples, pad, cfg.seed, AdapterOffReference(), dpo_cfg, None)
    start_sha = weights_sha256(start)
    hashes = {"train": _pairs_sha(train), "val": _pairs_sha(val)}
    objective = {"dpo": asdict(dpo_cfg), "r": s.r, "alpha": s.alpha, "target_modules": list(s.target_modules)}
    r = _finetune(cfg, profile, "dpo", task, _with_lora(start, s.r, s.alpha, s.target_modules, cfg.seed), start_sha,
                  hashes, objective, s.lr, s.steps, s.micro_batch, s.eval_every)
    model = unload_lora(r.model.eval().cpu())
    folder = export_dir(profile, "dpo")
    sha = export_model(model, folder, tok, {"run_id": r.run.run_id, "start_sha256": start_sha})
    first, last = r.result.evals[0], r.result.evals[-1]
    metrics = {"reward_accuracy_start": float(first["reward_accuracy"]),
               "reward_accuracy": float(last["reward_accuracy"]), "margin": float(last["margin"]),
               "kl": float(last["kl"]), "val_pairs": float(len(enc_val.examples)),
               "tokens_per_sec": r.tokens_per_sec}
    return model, StageResult("dpo", r.run.run_id, _rel(folder), sha, metrics, {}, time.perf_counter() - t0, r.reused)


def _pairs_sha(pairs: list[Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([p.to_json() for p in pairs], sort_keys=True).encode()).hexdigest()


def serve_stage(cfg: FlagshipConfig, profile: str, items: list[EvalItem]) -> tuple[GPT, StageResult]:
    """The DPO export behind the engine: every answer equal to plain greedy decoding, and the throughput of both."""
    from shared.data.prompts import format_prompt
    from shared.evals.generate import greedy_generate
    from shared.models.decode import SamplingConfig
    from shared.serve.engine import Engine, EngineConfig

    t0 = time.perf_counter()
    folder = _start(profile, "serve")
    model, tok = load_hf(folder).eval(), load_tokenizer(folder)
    s = cfg.serve
    room = model.cfg.block_size - s.max_new_tokens
    chosen = (items * (s.prompts // max(len(items), 1) + 1))[:s.prompts]
    prompts = [tok.encode(format_prompt(i.instruction, i.input, cfg.sft.template, tok))[-room:] for i in chosen]
    blocks = s.prompts * -(-model.cfg.block_size // s.kv_block_size)
    engine = Engine(model, EngineConfig(num_blocks=blocks, block_size=s.kv_block_size, max_batch=s.max_batch))
    t = time.perf_counter()
    with torch.no_grad():
        outs = engine.generate(prompts, SamplingConfig(max_new_tokens=s.max_new_tokens, stop_ids=[tok.eos_id]))
    engine_s = time.perf_counter() - t
    pad = tok.pad_id if tok.pad_id is not None else tok.eos_id
    t = time.perf_counter()
    ref = greedy_generate(model, prompts, eos_id=tok.eos_id, pad_id=pad, max_new_tokens=s.max_new_tokens,
                          batch_size=s.max_batch)
    static_s = time.perf_counter() - t
    # the engine's output ends with the stop id; greedy_generate's stops before it
    same = sum(o[:len(o) - (o[-1:] == [tok.eos_id])] == list(g.ids) for o, g in zip(outs, ref, strict=True))
    new_tokens = sum(len(o) for o in outs)
    metrics = {"requests": float(len(prompts)), "same_as_greedy": float(same), "new_tokens": float(new_tokens),
               "engine_tokens_per_sec": new_tokens / engine_s, "engine_steps": float(engine.steps),
               "static_tokens_per_sec": sum(len(g.ids) + g.ended for g in ref) / static_s}
    return model, StageResult("serve", None, _rel(folder), weights_sha256(folder), metrics, {},
                              time.perf_counter() - t0, False)


def run_flagship(cfg: FlagshipConfig, profile: str, stages: tuple[str, ...] = STAGES,
                 on_stage: Callable[[StageResult], None] | None = None) -> FlagshipResult:
    """Run ``stages`` in order (each from the previous one's export) with the harness after each; record the result
    in :func:`summary_path` and return it.

    Raises:
        StageOrderError: a stage's starting export is missing (an earlier stage was not run).
        ConfigError, DatasetError, EvalSetError, RunLockedError: bad config, data or eval set; see the recipes.
    """
    t0 = time.perf_counter()
    if stages and stages[0] != STAGES[0]:
        _start(profile, stages[0])  # fail before loading data and the eval set when the first stage cannot start
    items, eval_sha = flagship_data.eval_items(cfg)
    sft_split = flagship_data.instruction_split(cfg.sft.sources, cfg.sft.val_examples, cfg.seed, cfg.sft.limit)
    lora_split = flagship_data.instruction_split(cfg.lora.sources, cfg.lora.val_examples, cfg.seed)
    result = FlagshipResult(profile, eval_sha256=eval_sha, eval_items=len(items))
    before = read_summary(profile)
    for stage in stages:
        console(f"== flagship stage {stage} ({profile})")
        if stage == "pretrain":
            model, _, row = pretrain_stage(cfg, profile, sft_split.val + lora_split.val)
        elif stage == "sft":
            model, row = sft_stage(cfg, profile, sft_split)
        elif stage == "lora":
            model, row = lora_stage(cfg, profile, lora_split)
        elif stage == "dpo":
            model, row = dpo_stage(cfg, profile)
        else:
            model, row = serve_stage(cfg, profile, items)
        t = time.perf_counter()
        dpo = result.stage("dpo")
        if stage == "serve" and dpo is not None and dpo.weights_sha256 == row.weights_sha256:
            row.harness = dict(dpo.harness)  # the same weights: the same greedy answers (not scored twice)
        else:
            folder = export_dir(profile, "dpo" if stage == "serve" else stage)
            row.harness = harness_row(model.cpu(), load_tokenizer(folder), items, cfg, cfg.sft.template)
        row.seconds += time.perf_counter() - t
        prev = before.stage(stage) if before else None
        # a reused stage's pipeline time is the one recorded when it trained (the budget is judged on a fresh run)
        row.fresh_seconds = prev.fresh_seconds if row.reused and prev and prev.run_id == row.run_id else row.seconds
        result.stages.append(row)
        console(f"   {stage}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.metrics.items())
                + " | harness " + ", ".join(f"{k} {v}" for k, v in row.harness.items() if k in HARNESS_KEYS))
        if on_stage is not None:
            on_stage(row)
    result.seconds = time.perf_counter() - t0
    path = summary_path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result.to_json(), indent=1, default=float))
    return result


def read_summary(profile: str) -> FlagshipResult | None:
    """The recorded pipeline result of ``profile`` (None when the pipeline has not finished there)."""
    path = summary_path(profile)
    return FlagshipResult.from_json(json.loads(path.read_text())) if path.is_file() else None


def rerun_harness(cfg: FlagshipConfig, profile: str, stage: str = "dpo") -> dict[str, Any]:
    """The harness row of ``stage``'s export, loaded fresh from disk (the reproduction check compares it with the
    recorded row)."""
    folder = export_dir(profile, stage)
    items, _ = flagship_data.eval_items(cfg)
    return harness_row(load_hf(folder), load_tokenizer(folder), items, cfg, cfg.sft.template)


def main(argv: list[str] | None = None) -> int:
    """``python -m week12_portfolio.flagship [--profile P] [--stage S ...] [key=value ...]`` (``make flagship``)."""
    import sys

    from shared.cli import resolve_profile, week_arg_parser
    from week12_portfolio.flagship_config import load_flagship

    parser = week_arg_parser("week12_portfolio.flagship", __doc__.splitlines()[0])
    parser.add_argument("--stage", action="append", choices=STAGES, default=None,
                        help="run only these stages (each needs the previous one's export); default: all")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    profile = resolve_profile(args.profile)
    cfg = load_flagship(profile, args.overrides)
    res = run_flagship(cfg, profile, tuple(s for s in STAGES if s in (args.stage or STAGES)))
    for row in res.stages:
        print(f"{row.stage:9s} {row.run_id or '-':40s} " + " ".join(f"{k}={row.harness.get(k)}" for k in HARNESS_KEYS))
    verdict = "within" if res.fresh_seconds <= cfg.budget_s else "OVER"
    print(f"flagship ({profile}): {res.seconds:,.0f} s here, {res.fresh_seconds:,.0f} s as a fresh run: {verdict} its "
          f"budget of {cfg.budget_s:,.0f} s -> {summary_path(profile)}")
    return 0


if __name__ == "__main__":
    from shared.cli import run_week

    raise SystemExit(run_week(main))
