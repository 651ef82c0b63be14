"""Week 7's stages: the base model on the harness, SFT on v1 and v2, the TRL reference, the over-fitting study and
the from-scratch GPT row. Each returns what the log and the checks read; finished runs are reused by config hash."""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shared.evals.instruct import EvalItem
from shared.paths import REPO_ROOT, runs_root
from shared.tasks.sft import SFTTask, encode_records
from shared.tracking import console
from week07_sft import eval as harness
from week07_sft.config import Week07Config
from week07_sft.data import WeekData
from week07_sft.overfit import Onset, memorisation_rate, overfit_onset
from week07_sft.runs import DataRef, SFTResult, load_model, sft_run, weights_sha256, with_steps


@dataclass
class Scored:
    """A model scored by the harness: its table row and per-item rows."""

    label: str
    row: dict[str, Any]
    items: list[dict[str, Any]]


@dataclass
class WeekResults:
    """Everything the log reports."""

    base_dir: Path
    base: Scored
    runs: dict[str, SFTResult] = field(default_factory=dict)
    scored: dict[str, Scored] = field(default_factory=dict)
    seeds: dict[str, list[Scored]] = field(default_factory=dict)  # v1/v2: one Scored per seed, run.seeds' order
    trl: dict[str, Any] = field(default_factory=dict)
    overfit: dict[str, Any] = field(default_factory=dict)
    scratch_reason: str = ""
    scratch_window: dict[str, int] = field(default_factory=dict)
    rerun: dict[str, Any] = field(default_factory=dict)
    rerun_args: tuple = ()
    export_check: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _free() -> None:
    gc.collect()


def score(cfg: Week07Config, label: str, stage: str, spec: Path | str, items: list[EvalItem], eval_sha: str,
          template: str | None = None, model: Any = None, tokenizer: Any = None, table: Path | None = None) -> Scored:
    """Run the harness on one model; its row goes to ``table`` (default: the shared ``runs/harness.csv``)."""
    res, row = harness.evaluate(spec, items, cfg.harness, template or cfg.sft.template, stage, eval_sha, label=label,
                                model=model, tokenizer=tokenizer, table=table)
    console(f"harness {label}: compliance {row['format_compliance']:.2f}, ROUGE-L {row['rougeL']:.3f}, "
            f"{res.seconds:.0f} s")
    return Scored(label, row, res.rows)


def data_ref(version: str, records: list, val_sha: str, sha: str) -> DataRef:
    return DataRef(version, sha, val_sha, len(records))


def val_task(cfg: Week07Config, tokenizer: Any, data: WeekData) -> SFTTask:
    """The val records encoded as the SFT runs encode them, behind the runs' evaluator (``mean_loss``)."""
    val = encode_records(data.val, tokenizer, cfg.sft.template, cfg.sft.max_length).examples
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    return SFTTask(val, val, pad, 0, cfg.sft.eval_batch, 0)


def export_reload(cfg: Week07Config, result: SFTResult, data: WeekData) -> dict[str, Any]:
    """Load the export back (``from_pretrained``) and measure its val loss with the run's evaluator."""
    import torch

    from shared.data.tokenizer import load_tokenizer

    task = val_task(cfg, load_tokenizer(result.export_dir), data)
    model = load_model(result.export_dir, torch.device("cpu")).eval()
    loss = task.mean_loss(model, task.val)
    del model
    _free()
    return {"path": str(result.export_dir.relative_to(REPO_ROOT) if result.export_dir.is_relative_to(REPO_ROOT)
                        else result.export_dir), "recorded": result.final_val_loss, "reloaded": loss}


def run_sft_versions(cfg: Week07Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """SFT on v1 and on v2 at the same budget, once per seed in ``run.seeds``; each run scored by the harness.

    The first seed's runs are ``sft-v1`` / ``sft-v2``: exported to ``models/week07/`` (what weeks 8, 9 and 11 start
    from) and scored into the shared harness table. Further seeds change only the order of the examples: they are
    scored from memory (their rows go to the week's own ``harness_seeds.csv``) so the v1-vs-v2 verdict can average
    each eval item over seeds.
    """
    if not cfg.run.seeds or len(set(cfg.run.seeds)) != len(cfg.run.seeds):
        raise ValueError(f"run.seeds={cfg.run.seeds}: give one or more distinct seeds")
    base_sha = weights_sha256(res.base_dir)
    versions = (("v1", data.v1), ("v2", data.v2))
    for k, seed in enumerate(cfg.run.seeds):
        loop = with_steps(cfg.loop, cfg.run.max_steps, seed=seed)
        for version, records in versions:
            t = time.perf_counter()
            ref = data_ref(version, records, data.hashes["val"], data.hashes[version])
            name = f"sft-{version}" if k == 0 else f"sft-{version}-seed{seed}"
            r = sft_run(name, profile, res.base_dir, records, data.val, ref, cfg.sft, cfg.optim, cfg.schedule, loop,
                        base_sha256=base_sha, meta={"base_registry_name": cfg.base.name}, export=k == 0,
                        keep_model=k > 0)
            res.runs[version if k == 0 else f"{version} seed {seed}"] = r
            _free()
            if k == 0:
                s = score(cfg, name, name, r.export_dir, data.eval_items, data.hashes["eval_set"])
                res.scored[version] = s
            else:
                from shared.data.tokenizer import load_tokenizer

                s = score(cfg, name, f"sft-{version}", r.run_dir, data.eval_items, data.hashes["eval_set"],
                          model=r.model, tokenizer=load_tokenizer(res.base_dir),
                          table=runs_root() / "week07" / profile / "harness_seeds.csv")
                r.model = None
            res.seeds.setdefault(version, []).append(s)
            _free()
            res.timings[f"SFT {version} + harness" + ("" if k == 0 else f" (seed {seed})")] = time.perf_counter() - t
    t = time.perf_counter()
    res.export_check = export_reload(cfg, res.runs["v1"], data)
    res.timings["export reload"] = time.perf_counter() - t


def run_trl(cfg: Week07Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """The fixed-batch loss, TRL's training run beside the project's v1 run, and the step benchmark."""
    from shared.data.tokenizer import load_tokenizer
    from week07_sft.bench import run_bench
    from week07_sft.trl_ref import compare_batch, trl_train

    loop = with_steps(cfg.loop, cfg.run.max_steps, seed=cfg.run.seeds[0])
    t = time.perf_counter()
    cmp = compare_batch(res.base_dir, data.v1, cfg.sft, cfg.optim, cfg.schedule, loop)
    res.timings["TRL fixed batch"] = time.perf_counter() - t
    t = time.perf_counter()
    run = trl_train(res.base_dir, data.v1, val_task(cfg, load_tokenizer(res.base_dir), data), cfg.sft, cfg.optim,
                    cfg.schedule, loop)
    _free()
    res.timings["TRL training"] = time.perf_counter() - t
    t = time.perf_counter()
    bench = run_bench(res.base_dir, data.v1[:4 * loop.micro_batch], runs_root() / "week07" / profile / "bench",
                      cfg.sft.template, cfg.sft.max_length, loop.micro_batch, cfg.trl.bench_steps, cfg.optim.lr)
    res.timings["step benchmark"] = time.perf_counter() - t
    res.trl = {"batch": cmp, "run": run, "bench": bench}


def run_overfit(cfg: Week07Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """Several epochs of a small subset of v2: the onset, and memorisation on train vs eval prompts."""
    from shared.data.tokenizer import load_tokenizer

    t = time.perf_counter()
    tok = load_tokenizer(res.base_dir)
    from week07_sft.trl_ref import fitting

    subset = fitting(data.v2, tok, cfg.sft.template, cfg.sft.max_length)[:cfg.overfit.examples]
    mb = min(cfg.loop.micro_batch, len(subset))
    per_epoch = math.ceil(len(subset) / mb)
    steps = cfg.overfit.epochs * per_epoch
    loop = with_steps(cfg.loop, steps, micro_batch=mb, seed=cfg.run.seeds[0],
                      eval_every=max(1, per_epoch // cfg.overfit.evals_per_epoch))
    sft = replace(cfg.sft, train_eval_examples=len(subset))
    ref = DataRef("overfit", data.hashes["v2"] + f":first{len(subset)}", data.hashes["val"], len(subset))
    optim = replace(cfg.optim, lr=cfg.overfit.lr or cfg.optim.lr)
    r = sft_run("overfit", profile, res.base_dir, subset, data.val, ref, sft, optim, cfg.schedule, loop,
                export=False, keep_model=True)
    res.runs["overfit"] = r
    onset: Onset = overfit_onset(r.evals)
    train_items = [EvalItem(x.id, x.instruction, x.input, x.output, x.task_type, x.source) for x in subset]
    eval_items = data.eval_items[:len(subset)]
    mem = {}
    for which, items in (("train", train_items), ("eval", eval_items)):
        s = score(cfg, f"overfit ({which} prompts)", "overfit", "overfit", items, data.hashes["eval_set"],
                  model=r.model, tokenizer=tok, table=r.run_dir / "memorisation.csv")  # not the eval set's table
        mem[which] = memorisation_rate(s.items, cfg.overfit.rouge_threshold)
        mem[f"{which}_rows"] = s.items
    r.model = None
    _free()
    res.rerun_args = ("overfit", res.base_dir, subset, ref, sft, optim, loop)
    res.overfit = {"onset": onset, "epochs": steps * mb / len(subset), "per_epoch": per_epoch, "memorised": mem,
                   "examples": len(subset)}
    res.timings["over-fitting study"] = time.perf_counter() - t


def run_scratch(cfg: Week07Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """The project's GPT (week 5's HF export), SFT'd with the same objective; the rerun check re-trains it."""
    from shared.models.hf import EXPORT_FILE
    from shared.paths import models_root

    path = models_root() / cfg.scratch.path.format(profile=cfg.scratch.export_profile)
    if not (path / EXPORT_FILE).is_file():
        res.scratch_reason = (f"no GPT export at models/{cfg.scratch.path.format(profile=cfg.scratch.export_profile)}"
                              f": run `make week05 PROFILE={cfg.scratch.export_profile}` first")
        return
    import json

    t = time.perf_counter()
    block = json.loads((path / EXPORT_FILE).read_text())["gpt_config"]["block_size"]
    sft = replace(cfg.sft, max_length=min(cfg.sft.max_length, block))
    optim = replace(cfg.optim, lr=cfg.scratch.lr)
    loop = with_steps(cfg.loop, cfg.scratch.max_steps, micro_batch=cfg.scratch.micro_batch, seed=cfg.run.seeds[0],
                      eval_every=max(1, cfg.scratch.max_steps // 3))
    ref = data_ref("v2", data.v2, data.hashes["val"], data.hashes["v2"])
    try:
        r = sft_run("scratch-gpt", profile, path, data.v2, data.val, ref, sft, optim, cfg.schedule, loop)
    except ValueError as e:  # no example fits the GPT's window: the row cannot be measured, and the log says why
        res.scratch_reason = f"the GPT at {path.name} (block_size {block}) cannot take the examples: {e}"
        return
    res.runs["scratch"] = r
    res.scored["scratch"] = score(cfg, "scratch-gpt (SFT)", "sft-scratch", r.export_dir, data.eval_items,
                                  data.hashes["eval_set"])
    res.scratch_window = prompt_room(path, block, data.eval_items, cfg.sft.template)
    res.timings["from-scratch GPT"] = time.perf_counter() - t
    res.rerun_args = ("scratch-gpt", path, data.v2, ref, sft, optim, loop)


def prompt_room(model_dir: Path, block: int, items: list[EvalItem], template: str, room: int = 16) -> dict[str, int]:
    """How many eval prompts, in ``template`` and the tokenizer of ``model_dir``, leave fewer than ``room`` of
    ``block`` positions for the answer."""
    from shared.data.prompts import format_prompt
    from shared.data.tokenizer import load_tokenizer

    tok = load_tokenizer(model_dir)
    lengths = [len(tok.encode(format_prompt(i.instruction, i.input, template, tok))) for i in items]
    return {"block_size": block, "items": len(items), "room": room,
            "cramped": sum(block - n < room for n in lengths)}


def run_rerun(cfg: Week07Config, profile: str, data: WeekData, res: WeekResults) -> None:
    """Re-train one finished run from its config into a fresh folder (the scratch GPT's, else the over-fitting
    run's) and compare the final val loss."""
    import shutil

    t = time.perf_counter()
    name, base, records, ref, sft, optim, loop = res.rerun_args
    for old in (runs_root() / "week07" / profile).glob(f"{name}-rerun-*"):
        shutil.rmtree(old)  # a rerun must train, not reuse a cached result
    again = sft_run(f"{name}-rerun", profile, base, records, data.val, ref, sft, optim, cfg.schedule, loop,
                    export=False)
    res.rerun = {"name": name, "original": res.runs[name.removesuffix("-gpt")].final_val_loss,
                 "rerun": again.final_val_loss, "config_hash": again.config_hash}
    res.timings["rerun"] = time.perf_counter() - t
