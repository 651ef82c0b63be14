"""Week 8's stages: the main variants at one budget (full FT, LoRA by hand and by peft, QLoRA by hand and by
bitsandbytes), the LoRA on week 7's SFT export (merged and exported), the step benchmark and memory breakdown, the
bitsandbytes gradient check, the rank sweep, the alpha/lr grid, the pitfalls and a rerun. Finished runs are reused
by config hash."""

from __future__ import annotations

import csv
import gc
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shared.data.instruct import records_hash
from shared.data.tokenizer import load_tokenizer
from shared.device import resolve_device
from shared.evals.table import evaluate, harness_csv, harness_hash
from shared.models.loading import weights_sha256
from shared.paths import models_root, runs_root
from shared.tracking import console
from week08_lora import pitfalls
from week08_lora.config import Week08Config
from week08_lora.data import WeekData, base_model_dir, sft_model_dir
from week08_lora.runs import Start, VariantResult, export_merged, train_variant
from week08_lora.variants import VariantSpec, bnb_supported, make_spec

EXPORT = "week08/sft-lora"  # under models/: week 7's SFT export + this week's LoRA, merged (week 11 serves it)
LABELS = {"full": "full FT", "lora": "LoRA (hand)", "peft": "LoRA (peft)", "qlora": "QLoRA (hand)",
          "bnb": "QLoRA (bitsandbytes)"}


@dataclass
class WeekResults:
    """Everything the log, the checks and the decision doc read."""

    base: Start
    sft: Start
    runs: dict[str, VariantResult] = field(default_factory=dict)  # by variant name
    skipped: dict[str, str] = field(default_factory=dict)  # variant name -> why it did not run
    scored: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> harness row
    bench: list[dict[str, Any]] = field(default_factory=list)
    bnb: dict[str, Any] = field(default_factory=dict)
    pitfalls: dict[str, dict[str, Any]] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    rerun: dict[str, Any] = field(default_factory=dict)
    sweep: list[str] = field(default_factory=list)  # variant names of the rank sweep, in rank order
    grid: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    val_records: int = 0  # records in the val split


def starts(cfg: Week08Config) -> tuple[Start, Start]:
    """(base, sft): the two models runs start from, with their weights' sha256."""
    sft_dir = sft_model_dir(cfg)
    base_dir = base_model_dir(cfg, sft_dir)
    return (Start(base_dir, base_dir.name, weights_sha256(base_dir)),
            Start(sft_dir, "sft-v1" if sft_dir.name == "sft-v1" else sft_dir.name, weights_sha256(sft_dir)))


def score(cfg: Week08Config, data: WeekData, label: str, stage: str, start: Start, model: Any) -> dict[str, Any]:
    """Week 7's harness on a model in memory; its row goes to ``runs/harness.csv``. A hand QLoRA model generates
    with its weights decoded once (bit-identical outputs, see :func:`shared.nn.qlora.dequantized_for_inference`)."""
    from shared.nn.qlora import dequantized_for_inference

    with dequantized_for_inference(model):
        res, row = evaluate(start.folder, data.eval_items, cfg.harness, cfg.sft.template, stage,
                            data.hashes["eval_set"], label=label, model=model, tokenizer=load_tokenizer(start.folder))
    console(f"harness {label}: compliance {row['format_compliance']:.2f}, ROUGE-L {row['rougeL']:.3f}, "
            f"{res.seconds:.0f} s")
    return row


def recorded_row(cfg: Week08Config, data: WeekData, label: str) -> dict[str, Any] | None:
    """The harness table's row for ``label`` with this eval set and harness config (week 7 wrote it), if any."""
    path, key = harness_csv(), harness_hash(cfg.harness, cfg.sft.template)
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["model"] == label and r["eval_set"] == data.hashes["eval_set"][:12] and r["harness"] == key:
                return {k: _num(v) for k, v in r.items()}
    return None


def _num(v: str) -> Any:
    try:
        return float(v)
    except ValueError:
        return v


def context_rows(cfg: Week08Config, data: WeekData, res: WeekResults) -> None:
    """The base and week-7 SFT rows of the harness table (read when week 7 recorded them, else scored now)."""
    from shared.models.loading import load_any_lm

    for label, stage, start in ((f"{res.base.name} (base)", "base", res.base), ("sft-v1", "sft-v1", res.sft)):
        row = recorded_row(cfg, data, label)
        if row is None:
            lm = load_any_lm(start.folder)
            row = score(cfg, data, label, stage, start, lm.model)
            del lm
        res.scored[label] = row


def _train(cfg: Week08Config, profile: str, data: WeekData, spec: VariantSpec, start: Start, *, steps: int,
           micro_batch: int, keep: bool = False, run_name: str | None = None, val_examples: int = 0) -> VariantResult:
    """One run of ``steps`` steps; it evaluates at step 0, every ``loop.eval_every`` steps and at the end, on the
    first ``val_examples`` val records (0: all)."""
    loop = replace(cfg.loop, max_steps=steps, micro_batch=micro_batch, max_tokens=0, max_seconds=0.0,
                   eval_every=min(cfg.loop.eval_every, steps))
    val, hashes = data.val, data.hashes
    if 0 < val_examples < len(val):
        val = val[:val_examples]
        hashes = {**hashes, "val": records_hash(val)}
    return train_variant(spec, start, profile, data.train, val, hashes, cfg.sft, cfg.optim, cfg.schedule,
                         loop, keep_model=keep, run_name=run_name)


def run_main(cfg: Week08Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """Every method of ``run.methods`` from the base model at the same budget, each scored by the harness."""
    device = resolve_device(cfg.loop.device)
    for method in cfg.run.methods:
        t = time.perf_counter()
        spec = make_spec(method, method, cfg.lora, cfg.quant, cfg.optim.lr)
        if method == "bnb":
            ok, why = bnb_supported(device)
            if not ok:
                res.skipped[method] = why
                continue
        r = _train(cfg, profile, data, spec, res.base, steps=cfg.run.max_steps, micro_batch=cfg.loop.micro_batch,
                   keep=True)
        res.scored[LABELS[method]] = score(cfg, data, LABELS[method], method, res.base, r.model)
        r.model = None
        res.runs[method] = r
        gc.collect()
        res.timings[f"{LABELS[method]} + harness"] = time.perf_counter() - t


def run_sft_adapter(cfg: Week08Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """LoRA on week 7's SFT export, scored, merged and exported to ``models/week08/sft-lora`` (reloaded and checked:
    its val loss must equal the merged model's in memory)."""
    t = time.perf_counter()
    method = cfg.run.sft_method
    spec = make_spec("sft+lora", method, cfg.lora, cfg.quant, cfg.optim.lr, start="sft")
    r = _train(cfg, profile, data, spec, res.sft, steps=cfg.run.max_steps, micro_batch=cfg.loop.micro_batch, keep=True)
    label = f"sft-v1 + {LABELS[method]}"
    res.scored[label] = score(cfg, data, label, "sft+lora", res.sft, r.model)
    out = models_root() / EXPORT
    tok = load_tokenizer(res.sft.folder)
    _, merged = export_merged(r, res.sft, out, tok, {"profile": profile})
    res.export = export_check(cfg, data, merged, out, tok)
    r.model = None
    res.runs["sft+lora"] = r
    gc.collect()
    res.timings["LoRA on the SFT export + harness + export"] = time.perf_counter() - t


def export_check(cfg: Week08Config, data: WeekData, merged: Any, out: Path, tok: Any) -> dict[str, Any]:
    """The export's val loss after ``from_pretrained`` vs the merged model's in memory (same evaluator)."""
    import torch
    from transformers import AutoModelForCausalLM

    from shared.models.causal_lm import HFCausalLM
    from week08_lora.runs import sft_task

    task = sft_task(tok, data.val, data.val, cfg.sft, 0)
    in_memory = task.mean_loss(HFCausalLM(merged).eval(), task.val)
    hf = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True, dtype=torch.float32)
    reloaded = task.mean_loss(HFCausalLM(hf).eval(), task.val)
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return {"path": f"models/{EXPORT}", "in_memory": in_memory, "reloaded": reloaded, "bytes": size}


def run_bench(cfg: Week08Config, data: WeekData, res: WeekResults) -> None:
    """Memory breakdown and step time of every method on one fixed batch, plus QLoRA with fp32 compute."""
    from week08_lora.bench import bench_variant

    t = time.perf_counter()
    device = resolve_device(cfg.loop.device)
    bnb_ok = bnb_supported(device)[0] if "bnb" in cfg.run.methods else False
    specs = [make_spec(m, m, cfg.lora, cfg.quant, cfg.optim.lr) for m in cfg.run.methods if m != "bnb" or bnb_ok]
    if "qlora" in cfg.run.methods:
        other = "float32" if cfg.quant.compute_dtype != "float32" else "bfloat16"
        specs.append(make_spec(f"qlora-{other}", "qlora", cfg.lora, cfg.quant, cfg.optim.lr, compute_dtype=other))
    for spec in specs:
        steps = cfg.bench.other_dtype_steps if spec.name.startswith("qlora-") else cfg.bench.steps
        res.bench.append(bench_variant(spec, res.base, data.train, cfg.sft, cfg.optim, cfg.bench.micro_batch,
                                       steps, cfg.loop.device, cfg.loop.seed))
        console(f"bench {spec.name}: {res.bench[-1]['s/step']:.2f} s/step, "
                f"{res.bench[-1]['total'] / 2**30:.2f} GiB counted")
    res.timings["step benchmark + memory"] = time.perf_counter() - t


def run_bnb_check(cfg: Week08Config, data: WeekData, res: WeekResults) -> None:
    """bitsandbytes vs hand QLoRA adapter gradients, before and after an eval forward."""
    from week08_lora.bnb_check import gradient_check

    t = time.perf_counter()
    res.bnb = gradient_check(res.base, data.train, cfg.sft, make_spec("bnb", "bnb", cfg.lora, cfg.quant, cfg.optim.lr))
    if res.bnb.get("available"):
        console(f"bnb gradients vs hand QLoRA: cosine {res.bnb['cos_before']:.4f} fresh, "
                f"{res.bnb['cos_after']:.4f} after an eval forward")
    res.timings["bitsandbytes gradient check"] = time.perf_counter() - t


def run_sweeps(cfg: Week08Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """The rank sweep (alpha = alpha_per_rank x r) and the alpha x lr grid at one rank, hand LoRA, val loss."""
    t = time.perf_counter()
    s = cfg.sweep
    for r in s.ranks:
        spec = make_spec(f"lora-r{r}", "lora", cfg.lora, cfg.quant, cfg.optim.lr, r=r, alpha=s.alpha_per_rank * r)
        res.runs[spec.name] = _train(cfg, profile, data, spec, res.base, steps=s.max_steps, micro_batch=s.micro_batch,
                                     val_examples=s.val_examples)
        res.sweep.append(spec.name)
    res.timings["rank sweep"] = time.perf_counter() - t
    t = time.perf_counter()
    for a in s.grid_alphas:
        for lr in s.grid_lrs:
            spec = make_spec(f"lora-r{s.grid_rank}-a{a:g}-lr{lr:g}", "lora", cfg.lora, cfg.quant, cfg.optim.lr,
                             r=s.grid_rank, alpha=float(a), lr=float(lr))
            res.runs[spec.name] = _train(cfg, profile, data, spec, res.base, steps=s.max_steps,
                                         micro_batch=s.micro_batch, val_examples=s.val_examples)
            res.grid.append(spec.name)
    res.timings["alpha x lr grid"] = time.perf_counter() - t


def run_pitfalls(res: WeekResults) -> None:
    t = time.perf_counter()
    res.pitfalls = pitfalls.reproduce_all()
    res.timings["pitfalls (tiny model)"] = time.perf_counter() - t


def run_rerun(cfg: Week08Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """Re-train the first sweep run from its config into a fresh folder; compare its loss curve."""
    t = time.perf_counter()
    name = res.sweep[0]
    first = res.runs[name]
    for old in (runs_root() / "week08" / profile).glob(f"rerun-{name}-*"):
        shutil.rmtree(old)  # a rerun must train, not reuse a cached result
    again = _train(cfg, profile, data, first.spec, res.base, steps=cfg.sweep.max_steps,
                   micro_batch=cfg.sweep.micro_batch, run_name=f"rerun-{name}", val_examples=cfg.sweep.val_examples)
    res.rerun = {"name": name, "original": first.final_val_loss, "rerun": again.final_val_loss,
                 "train_original": [r["loss"] for r in first.train_rows], "train_rerun": [r["loss"] for r in again.train_rows],
                 "command": f"python -m week08_lora --profile {profile}"}
    res.timings["rerun"] = time.perf_counter() - t
