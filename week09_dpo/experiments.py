"""Week 9's stages: the data (stats, rubric), TRL's loss on one batch, the main DPO run (held-out preference accuracy,
export, harness, HH deflection), TRL's first steps on the same batches, the step benchmark, the beta sweep, the IPO
run, the failure demonstration and its mitigations, and a rerun. Finished runs are reused by config hash."""

from __future__ import annotations

import gc
import shutil
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from shared.data.preference import deflects, pair_stats, rubric_shares
from shared.data.tokenizer import load_tokenizer
from shared.evals.generate import GenerationProbe
from shared.evals.table import evaluate
from shared.models.loading import weights_sha256
from shared.paths import models_root, runs_root
from shared.tasks.dpo import AdapterOffReference, DPOTask, PairScores
from shared.tracking import console
from week09_dpo.config import Week09Config
from week09_dpo.data import WeekData, start_dir
from week09_dpo.runs import DPORun, Start, train_dpo

EXPORT = "week09/dpo"  # under models/: the start model + the main run's adapters, merged (week 11 serves it)


@dataclass
class WeekResults:
    """Everything the log and the checks read."""

    start: Start
    tokenizer: Any
    runs: dict[str, DPORun] = field(default_factory=dict)
    roles: dict[str, list[str]] = field(default_factory=dict)  # "sweep", "variant", "failure" -> run names
    data_stats: dict[str, Any] = field(default_factory=dict)
    rubric: list[dict[str, Any]] = field(default_factory=list)
    heldout: PairScores | None = None  # the main run's model on the held-out pairs (its reference = the start)
    scored: dict[str, dict[str, Any]] = field(default_factory=dict)  # harness rows by label
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per-item harness scores by label
    samples: list[dict[str, str]] = field(default_factory=list)  # the same prompts, SFT vs DPO
    deflection: dict[str, Any] = field(default_factory=dict)
    trl_batch: Any = None
    trl_run: Any = None
    bench: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    rerun: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def make_start(cfg: Week09Config) -> Start:
    folder = start_dir(cfg)
    return Start(folder, cfg.models.start, weights_sha256(folder))


def pad_id(tok: Any) -> int:
    return tok.pad_id if tok.pad_id is not None else tok.eos_id


def probe(cfg: Week09Config, data: WeekData, tok: Any) -> GenerationProbe | None:
    if not data.gen_prompts:
        return None
    return GenerationProbe(data.gen_prompts, tok.eos_id, pad_id(tok), cfg.data.gen_max_new_tokens)


def data_stage(cfg: Week09Config, data: WeekData, res: WeekResults) -> None:
    """Pair stats per source (lengths, drops while reading and while encoding) and the rubric's shares."""
    stats = pair_stats(data.train + data.heldout)
    for side, enc in (("train", data.enc_train), ("held-out", data.enc_heldout)):
        stats[f"encode drops ({side})"] = {k: len(v) for k, v in enc.dropped.items() if v}
    stats["read drops"] = {s: dict(c) for s, c in data.load_drops.items()}
    stats["split"] = {"train pairs": len(data.train), "held-out pairs": len(data.heldout),
                      "train encoded": len(data.enc_train.examples), "held-out encoded": len(data.enc_heldout.examples),
                      "periodic eval pairs": len(data.periodic), "generation prompts": len(data.gen_prompts)}
    res.data_stats = stats
    res.rubric = rubric_shares(data.train + data.heldout)


def _run(cfg: Week09Config, profile: str, data: WeekData, res: WeekResults, name: str, *, steps: int,
         keep: bool = False, lr: float | None = None, **dpo_changes: Any) -> DPORun:
    loop = replace(cfg.loop, max_steps=steps, max_tokens=0, max_seconds=0.0, eval_every=min(cfg.loop.eval_every, steps))
    optim = replace(cfg.optim, lr=lr if lr is not None else cfg.optim.lr)
    dpo = replace(cfg.dpo, **dpo_changes)
    t = time.perf_counter()
    r = train_dpo(name, res.start, profile, data.enc_train.examples, data.periodic, data.hashes["train"], dpo, cfg.lora,
                  optim, cfg.schedule, loop, pad_id(res.tokenizer), probe(cfg, data, res.tokenizer), keep_model=keep)
    res.runs[name] = r
    res.timings[f"run {name}"] = time.perf_counter() - t
    return r


def score(cfg: Week09Config, data: WeekData, res: WeekResults, label: str, stage: str, model: Any) -> dict[str, Any]:
    """Week 7's harness on a model in memory; its row goes to ``runs/harness.csv``, its per-item scores to
    ``res.items[label]`` (the paired comparison)."""
    r, row = evaluate(res.start.folder, data.eval_items, cfg.harness, cfg.data.template, stage,
                      data.hashes["eval_set"], label=label, model=model, tokenizer=res.tokenizer)
    console(f"harness {label}: compliance {row['format_compliance']:.2f}, ROUGE-L {row['rougeL']:.3f}, "
            f"{r.seconds:.0f} s")
    res.items[label] = r.rows
    return row


def sft_label(cfg: Week09Config) -> str:
    """The start model's harness row (scored here with the adapters off: the same weights DPO measures against)."""
    return f"SFT ({cfg.models.start})"


def main_stage(cfg: Week09Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """The main DPO run; its held-out scores (the start model is its reference: SFT's log-probs come free), the
    export, the harness rows of the start model and of the DPO model, and the HH deflection test."""
    r = _run(cfg, profile, data, res, "dpo", steps=cfg.run.max_steps, keep=True)
    t = time.perf_counter()
    model = r.model.eval()
    task = DPOTask(data.enc_train.examples, data.enc_heldout.examples, pad_id(res.tokenizer), 0,
                   AdapterOffReference(), cfg.dpo)
    res.heldout = task.scores(model)
    res.export["reference_unchanged"], res.export["reference_grads"] = reference_check(model, res.start.folder)
    res.timings["held-out preference scores"] = time.perf_counter() - t
    t = time.perf_counter()
    res.deflection = deflection(cfg, data, res, model)
    res.timings["HH deflection (SFT vs DPO)"] = time.perf_counter() - t
    t = time.perf_counter()
    from shared.nn.lora import adapters_disabled

    label = sft_label(cfg)
    with adapters_disabled(model):
        res.scored[label] = score(cfg, data, res, label, "sft", model)
    merged = export(cfg, profile, res, r)
    res.scored["SFT + DPO"] = score(cfg, data, res, "SFT + DPO", "dpo", merged)
    res.timings["export + harness"] = time.perf_counter() - t
    r.model = None
    del model, merged
    gc.collect()


def reference_check(model: Any, folder: Any) -> tuple[bool, int]:
    """(every non-adapter weight of the trained policy bit-identical to the start model's, the number of
    non-adapter parameters that require grad or hold one)."""
    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).state_dict()
    mine = {k.removeprefix("hf.").replace(".base.", "."): v for k, v in model.state_dict().items() if "lora_" not in k}
    same = set(mine) == set(fresh) and all(torch.equal(mine[k], fresh[k]) for k in fresh)
    grads = sum(1 for n, p in model.named_parameters() if "lora_" not in n and (p.requires_grad or p.grad is not None))
    return same, grads


def side_by_side(cfg: Week09Config, res: WeekResults, model: Any, prompts: list[str],
                 max_new_tokens: int) -> list[tuple[str, str]]:
    """Greedy answers of the start model (the adapters switched off) and of the DPO model to the same prompts."""
    from shared.evals.generate import greedy_generate
    from shared.nn.lora import adapters_disabled

    tok = res.tokenizer
    ids = [tok.encode(p) for p in prompts]
    kw = {"eos_id": tok.eos_id, "pad_id": pad_id(tok), "max_new_tokens": max_new_tokens, "batch_size": 8}
    with torch.no_grad():
        with adapters_disabled(model):
            sft = [tok.decode(g.ids).strip() for g in greedy_generate(model, ids, **kw)]
        dpo = [tok.decode(g.ids).strip() for g in greedy_generate(model, ids, **kw)]
    return list(zip(sft, dpo, strict=True))


def deflection(cfg: Week09Config, data: WeekData, res: WeekResults, model: Any) -> dict[str, Any]:
    """Answers of SFT and SFT + DPO to held-out HH prompts and the share that deflect
    (:func:`shared.data.preference.deflects`); answers to the first eval-set instructions side by side."""
    from shared.data.prompts import format_prompt

    items = data.eval_items[:cfg.data.samples]
    answers = side_by_side(cfg, res, model, [format_prompt(i.instruction, i.input, cfg.data.template, res.tokenizer)
                                             for i in items], cfg.harness.max_new_tokens)
    res.samples = [{"item": i.id, "instruction": i.instruction, "SFT": a, "SFT + DPO": b}
                   for i, (a, b) in zip(items, answers, strict=True)]
    if not data.deflect:
        return {}
    answers = side_by_side(cfg, res, model, [p.prompt for p in data.deflect], cfg.data.deflect_max_new_tokens)
    rows = [{"id": p.id, "last human turn": p.prompt.rsplit("Human:", 1)[-1].replace("Assistant:", "").strip(),
             "SFT": a, "SFT + DPO": b, "SFT deflects": deflects(a), "DPO deflects": deflects(b)}
            for p, (a, b) in zip(data.deflect, answers, strict=True)]
    return {"rows": rows, "sft_rate": sum(r["SFT deflects"] for r in rows) / len(rows),
            "dpo_rate": sum(r["DPO deflects"] for r in rows) / len(rows), "n": len(rows),
            "max_new_tokens": cfg.data.deflect_max_new_tokens}


def export(cfg: Week09Config, profile: str, res: WeekResults, r: DPORun) -> Any:
    """Merge the run's adapters and save the plain Hugging Face model to ``models/week09/dpo`` (reloaded: its
    logits on one batch must equal the merged model's)."""
    from transformers import AutoModelForCausalLM

    from shared.models.causal_lm import HFCausalLM
    from shared.models.hf import save_pretrained_hf
    from shared.nn.lora import unload_lora

    hf = unload_lora(r.model.hf)
    out = models_root() / EXPORT
    info = {"start": res.start.name, "start_sha256": res.start.sha256, "run_id": r.run_id, "steps": r.steps,
            "dpo": {"loss": r.dpo.loss, "beta": r.dpo.beta, "sft_weight": r.dpo.sft_weight}, "lr": r.lr,
            "base_model": res.start.name, "profile": profile}
    with torch.no_grad():
        save_pretrained_hf(hf, out, res.tokenizer, info)
        ids = torch.tensor([res.tokenizer.encode("### Instruction:\nSay hello.\n\n### Response:\n")])
        again = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True, dtype=torch.float32).eval()
        diff = float((hf(input_ids=ids).logits - again(input_ids=ids).logits).abs().max())
    res.export.update({"path": f"models/{EXPORT}", "max_abs_logit_diff": diff,
                       "bytes": sum(p.stat().st_size for p in out.glob("*.safetensors"))})
    return HFCausalLM(hf).eval()


def trl_stage(cfg: Week09Config, data: WeekData, res: WeekResults) -> None:
    """TRL on one fixed batch, then TRL's first ``trl.steps`` steps of the main run on the same batches."""
    if not cfg.trl.enabled:
        res.skipped["trl"] = "trl.enabled=false"
        return
    from week09_dpo.trl_ref import compare_batch, trl_train

    t = time.perf_counter()
    by_id = {p.id: p for p in data.train}
    ex = data.enc_train.examples
    first = [ex[i] for i in range(cfg.loop.micro_batch)]
    res.trl_batch = compare_batch(res.start.folder, res.tokenizer, [by_id[e.id] for e in first], first, cfg.lora,
                                  cfg.dpo, cfg.optim, cfg.schedule, cfg.loop)
    res.timings["TRL fixed batch"] = time.perf_counter() - t
    t = time.perf_counter()
    task = DPOTask(ex, data.periodic, pad_id(res.tokenizer), cfg.loop.seed, AdapterOffReference(), cfg.dpo)
    steps = min(cfg.trl.steps, cfg.run.max_steps)
    order = [by_id[ex[i].id] for s in range(steps) for i in task.example_indices(s, 0, 1, cfg.loop.micro_batch)]
    res.trl_run = trl_train(res.start.folder, res.tokenizer, order, cfg.lora, cfg.dpo, cfg.optim, cfg.schedule,
                            replace(cfg.loop, grad_accum_steps=1), cfg.run.max_steps, steps)
    res.timings["TRL run"] = time.perf_counter() - t


def bench_stage(cfg: Week09Config, data: WeekData, res: WeekResults) -> None:
    """Seconds per step, hand vs TRL, on the first training batch; and the reference's memory: a frozen copy of
    the start model's weights vs none (adapters switched off)."""
    t = time.perf_counter()
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(res.start.folder), local_files_only=True, dtype=torch.float32)
    copy_bytes = sum(p.numel() * p.element_size() for p in hf.parameters()) + \
        sum(b.numel() * b.element_size() for b in hf.buffers())
    del hf
    res.memory = {"frozen copy (bytes)": float(copy_bytes), "adapters off (bytes)": 0.0}
    if cfg.trl.enabled:
        from week09_dpo.trl_ref import bench

        by_id = {p.id: p for p in data.train}
        first = data.enc_train.examples[:cfg.loop.micro_batch]
        res.bench = bench(res.start.folder, res.tokenizer, [by_id[e.id] for e in first], first, cfg.lora, cfg.dpo,
                          cfg.optim, cfg.loop, cfg.trl.bench_steps)
        for b in res.bench:
            console(f"bench {b['impl']}: {b['s/step']:.2f} s/step")
    res.timings["step benchmark"] = time.perf_counter() - t


def sweep_stage(cfg: Week09Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """The beta sweep, the beyond-DPO variant, the deliberately bad setting and its two mitigations (short runs)."""
    n = cfg.run.short_steps
    for b in cfg.run.betas:
        res.roles.setdefault("sweep", []).append(_run(cfg, profile, data, res, f"beta{b:g}", steps=n, beta=b).name)
    v = _run(cfg, profile, data, res, cfg.run.variant, steps=n, loss=cfg.run.variant, beta=cfg.run.variant_beta)
    res.roles["variant"] = [v.name]
    bad = _run(cfg, profile, data, res, "bad", steps=n, lr=cfg.run.bad_lr, beta=cfg.run.bad_beta)
    fix_sft = _run(cfg, profile, data, res, "fix-sft-term", steps=n, lr=cfg.run.bad_lr, beta=cfg.run.bad_beta,
                   sft_weight=cfg.run.fix_sft_weight)
    fix_lr = _run(cfg, profile, data, res, "fix-lower-lr", steps=n, lr=cfg.run.fix_lr, beta=cfg.run.bad_beta)
    res.roles["failure"] = [bad.name, fix_sft.name, fix_lr.name]


def rerun_stage(cfg: Week09Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """Re-train the first sweep run from its config into a fresh folder; compare its numbers."""
    t = time.perf_counter()
    name = res.roles["sweep"][0]
    first = res.runs[name]
    for old in (runs_root() / "week09" / profile).glob(f"rerun-{name}-*"):
        shutil.rmtree(old)  # a rerun must train, not reuse a cached result
    again = _run(cfg, profile, data, res, f"rerun-{name}", steps=cfg.run.short_steps, beta=first.dpo.beta)
    res.runs.pop(again.name)
    res.rerun = {"name": name, "original": first.evals[-1], "rerun": again.evals[-1],
                 "train_original": [r["loss"] for r in first.train_rows],
                 "train_rerun": [r["loss"] for r in again.train_rows],
                 "command": f"python -m week09_dpo --profile {profile}"}
    res.timings["rerun"] = time.perf_counter() - t


def load_start_tokenizer(cfg: Week09Config) -> tuple[Start, Any]:
    start = make_start(cfg)
    return start, load_tokenizer(start.folder)
