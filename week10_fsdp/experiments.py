"""Week 10's stages. The collective ones run on every rank of the launch (the parity runs, the gathered export of
the FSDP2 SFT model); then the other ranks leave and rank 0 alone reloads and exports the sharded checkpoints,
launches the child jobs that measure at other world sizes (the memory probes at 1, 2 and 4 ranks, the resharded
load at 4, ``accelerate launch``, the minimal example) and runs the pitfall tests."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shared.dist import DistInfo, barrier
from shared.paths import REPO_ROOT, models_root, runs_root
from shared.tracking import console
from week10_fsdp import launch
from week10_fsdp.config import Week10Config
from week10_fsdp.data import SFTData, build_sft_model
from week10_fsdp.runs import EVAL_ITERS, StrategyRun, lm_run, max_gap, sft_run

ACCELERATE_CONFIG = Path(__file__).resolve().parent / "configs" / "accelerate_fsdp2.yaml"
PITFALL_TESTS = ("shared/tests/test_fsdp.py", "shared/tests/test_dcp.py")


@dataclass
class WeekResults:
    """Everything the log reports (filled stage by stage)."""

    info: DistInfo
    profile: str
    runs: dict[str, StrategyRun] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    sft_full: dict[str, torch.Tensor] | None = None  # the FSDP2 SFT model gathered on rank 0
    probes: dict[int, dict[str, Any]] = field(default_factory=dict)  # world size -> the probe's JSON
    accelerate: dict[str, Any] | None = None
    reshard: list[dict[str, Any]] = field(default_factory=list)
    export: dict[str, Any] = field(default_factory=dict)
    minimal: list[dict[str, Any]] = field(default_factory=list)
    pitfalls: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def out_dir(self) -> Path:
        return runs_root() / "week10" / self.profile / "jobs"


# -- collective stages (every rank) ------------------------------------------------------------------------------
def _pairs(cfg: Week10Config, task: str) -> list[tuple[str, str, int]]:
    """(run name, strategy, micro-batches per step) of one task: DDP and FSDP2, without and with accumulation."""
    k = cfg.parity.grad_accum_steps
    return [(f"{task}-{par}" + ("-accum" if accum > 1 else ""), par, accum) for par in ("ddp", "fsdp2")
            for accum in (1, k)]


def _no_pairs(info: DistInfo, res: WeekResults) -> bool:
    if info.is_distributed:
        return False
    res.skipped["parity"] = ("one process (not launched by torchrun): DDP and FSDP2 need ≥ 2 ranks to differ; run "
                             "`make week10`")
    return True


def lm_stage(cfg: Week10Config, profile: str, info: DistInfo, lm: Any, res: WeekResults) -> None:
    """The week-5 GPT under DDP and FSDP2 on the same batches, without and with accumulation; an FSDP2 rerun in a
    fresh folder (deleted first, so reproducibility is measured on every call, never reused)."""
    if _no_pairs(info, res):
        return
    for name, par, accum in _pairs(cfg, "lm"):
        t = time.perf_counter()
        res.runs[name] = lm_run(cfg, profile, info, lm, par, name, accum)
        res.timings[f"run {name}"] = time.perf_counter() - t
    if info.is_main:
        for old in (runs_root() / "week10" / profile).glob("lm-fsdp2-rerun-*"):
            shutil.rmtree(old)
    barrier()
    t = time.perf_counter()
    res.runs["lm-fsdp2-rerun"] = lm_run(cfg, profile, info, lm, "fsdp2", "lm-fsdp2-rerun", 1, rerun=1)
    res.timings["run lm-fsdp2-rerun"] = time.perf_counter() - t


def sft_stage(cfg: Week10Config, profile: str, info: DistInfo, sft: SFTData, res: WeekResults) -> None:
    """The week-7 SFT task under DDP and FSDP2, without and with accumulation; then the FSDP2 model gathered to
    rank 0 (collective) for its export."""
    if _no_pairs(info, res):
        return
    for name, par, accum in _pairs(cfg, "sft"):
        t = time.perf_counter()
        res.runs[name] = sft_run(cfg, profile, info, sft, par, name, accum)
        res.timings[f"run {name}"] = time.perf_counter() - t
    from shared.dcp import full_state_dict

    res.sft_full = full_state_dict(res.runs["sft-fsdp2"].model)


def release_models(res: WeekResults) -> None:
    """Drop the trained models: what follows reads checkpoints and exports from disk."""
    for r in res.runs.values():
        r.model = None


def parity_rows(res: WeekResults, cfg: Week10Config) -> list[dict[str, Any]]:
    """One row per DDP/FSDP2 pair: max |Δ loss| over the steps, and the rerun's gap to the first FSDP2 run."""
    rows = []
    for task in cfg.parity.tasks:
        for suffix in ("", "-accum"):
            a, b = res.runs.get(f"{task}-ddp{suffix}"), res.runs.get(f"{task}-fsdp2{suffix}")
            if a and b:
                rows.append({"task": task, "pair": f"DDP vs FSDP2{' (accumulation)' if suffix else ''}",
                             "steps": len(b.losses), "max_abs_diff": max_gap(a.losses, b.losses),
                             "ddp_first": a.losses[0], "ddp_last": a.losses[-1], "fsdp2_last": b.losses[-1]})
    a, b = res.runs.get("lm-fsdp2"), res.runs.get("lm-fsdp2-rerun")
    if a and b:
        rows.append({"task": "lm", "pair": "FSDP2 vs its rerun", "steps": len(b.losses),
                     "max_abs_diff": max_gap(a.losses, b.losses), "ddp_first": float("nan"),
                     "ddp_last": float("nan"), "fsdp2_last": b.losses[-1]})
    return rows


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


# -- rank 0 alone -------------------------------------------------------------------------------------------------
def export_lm(cfg: Week10Config, lm: Any, res: WeekResults) -> None:
    """The FSDP2 LM run's last DCP checkpoint loaded in one process into a plain GPT (DCP reshards N -> 1, no
    process group), scored on the run's eval batches, exported to Hugging Face format (``models/week10/lm-fsdp2``,
    the SFT task's start on a CPU) and loaded back."""
    from shared.dcp import load_sharded_into
    from shared.models.gpt import GPT, GPTConfig
    from shared.models.hf import load_hf, save_hf
    from shared.tasks.lm import LMTask

    run = res.runs.get("lm-fsdp2")
    if run is None or "lm" in res.export:
        return
    t = time.perf_counter()
    ckpt = Path(run.run_dir) / "checkpoints" / "last"
    meta = json.loads((ckpt / "meta.json").read_text())
    model = GPT(GPTConfig(**meta["model_config"]))
    load_sharded_into(model, ckpt)
    model.eval()
    task = LMTask(lm.train, lm.val, model.cfg.block_size, cfg.loop.seed, EVAL_ITERS, cfg.parity.micro_batch)
    with torch.no_grad():
        one = task.evaluate(model)
    res.reshard.append({"loaded on": "1 process (plain GPT, no process group)", "world_size": 1,
                        "saved_world_size": meta.get("world_size"), "step": meta["step"],
                        "val_loss": one["val_loss"], "saved_val_loss": run.evals[-1]["val_loss"],
                        "train_loss": one["train_loss"]})
    out = save_hf(model, models_root() / "week10" / "lm-fsdp2", lm.tokenizer.tokenizer,
                  {"run_id": run.run_id, "checkpoint": str(ckpt), "trained_with": "fsdp2"})
    back = load_hf(out)
    x = torch.from_numpy(lm.val[: model.cfg.block_size].astype("int64"))[None]
    with torch.no_grad():
        gap = (back(x) - model(x)).abs().max().item()
    hf_class = json.loads((out / "aifs_export.json").read_text())["hf_class"]
    res.export["lm"] = {"path": _rel(out), "max_abs_logit_diff": gap, "hf_class": hf_class}
    res.timings["LM: sharded checkpoint -> 1 process -> HF export"] = time.perf_counter() - t


def export_sft(cfg: Week10Config, sft: SFTData | None, res: WeekResults) -> None:
    """The gathered FSDP2 SFT model into a plain model, exported (``models/week10/sft-fsdp2``), loaded back and
    scored on the task's val set again."""
    if res.sft_full is None or sft is None:
        return
    t = time.perf_counter()
    plain = build_sft_model(sft.base_dir, cfg.sft.base.n_layer)(torch.device("cpu"))
    plain.load_state_dict(res.sft_full)
    res.sft_full = None
    meta = {"run_id": res.runs["sft-fsdp2"].run_id, "base_model": _rel(sft.base_dir), "trained_with": "fsdp2"}
    out = save_sft_export(plain, models_root() / "week10" / "sft-fsdp2", sft.tokenizer, meta)
    reloaded = build_sft_model(out, 0)(torch.device("cpu")).eval()
    with torch.no_grad():
        val = sft.task.evaluate(reloaded)["val_loss"]
    res.export["sft"] = {"path": _rel(out), "val_loss": val,
                         "saved_val_loss": res.runs["sft-fsdp2"].evals[-1]["val_loss"]}
    res.timings["SFT: gathered state dict -> HF export"] = time.perf_counter() - t


def save_sft_export(model: torch.nn.Module, out: Path, tokenizer: Any, meta: dict[str, Any]) -> Path:
    """The project's GPT through :func:`shared.models.hf.save_hf`, a Hugging Face model through
    :func:`shared.models.hf.save_pretrained_hf`."""
    from shared.models.gpt import GPT
    from shared.models.hf import save_hf, save_pretrained_hf

    if isinstance(model, GPT):
        return save_hf(model, out, tokenizer, meta)
    return save_pretrained_hf(model, out, tokenizer, meta)


def reshard_stage(cfg: Week10Config, res: WeekResults) -> None:
    """The FSDP2 LM checkpoint loaded by child ``torchrun`` jobs of ``memory.reshard_world_sizes`` ranks."""
    run = res.runs.get("lm-fsdp2")
    if run is None:
        return
    ckpt = Path(run.run_dir) / "checkpoints" / "last"
    for world in (w for w in cfg.memory.reshard_world_sizes if w != res.info.world_size):
        path = res.out_dir() / f"reshard-{world}.json"
        cmd = launch.torchrun(world, ["-m", "week10_fsdp.reshard", "--ckpt", str(ckpt), "--out", str(path),
                                      "--profile", res.profile, "--eval-batch", str(cfg.parity.micro_batch)])
        _, s = launch.run(cmd, 600, res.out_dir() / f"reshard-{world}.log")
        res.timings[f"reshard at {world} ranks"] = s
        got = json.loads(path.read_text())
        res.reshard.append({"loaded on": f"{world} ranks (FSDP2, torchrun)", **got,
                            "saved_val_loss": run.evals[-1]["val_loss"]})


def memory_stage(cfg: Week10Config, vocab: int, res: WeekResults) -> None:
    """The probe at every world size of ``memory.world_sizes`` (with the throughput benchmark at the launch's own),
    the same probe under ``accelerate launch`` with the FSDP2 config file, and the minimal example."""
    bench_at = res.info.world_size if res.info.world_size > 1 else 2
    for world in cfg.memory.world_sizes:
        path = res.out_dir() / f"probe-{world}.json"
        cmd = launch.torchrun(world, ["-m", "week10_fsdp.probe", "--out", str(path), "--vocab", str(vocab),
                                      "--profile", res.profile, *(["--bench"] if world == bench_at else [])])
        _, s = launch.run(cmd, 600, res.out_dir() / f"probe-{world}.log")
        res.timings[f"memory probe at {world} rank(s)"] = s
        res.probes[world] = json.loads(path.read_text())
    if not cfg.memory.accelerate:
        res.skipped["accelerate"] = "memory.accelerate=false in this profile (week10_fsdp/tests runs an accelerate smoke)"
    elif importlib.util.find_spec("accelerate") is None:
        res.skipped["accelerate"] = "accelerate is not installed (pip install accelerate)"
    else:
        path = res.out_dir() / "probe-accelerate.json"
        cmd = launch.accelerate(2, ACCELERATE_CONFIG, ["-m", "week10_fsdp.probe", "--out", str(path), "--vocab",
                                                      str(vocab), "--profile", res.profile])
        _, s = launch.run(cmd, 600, res.out_dir() / "probe-accelerate.log")
        res.timings["accelerate launch probe (2 ranks)"] = s
        res.accelerate = json.loads(path.read_text())
    if cfg.memory.minimal:
        out, s = launch.run(launch.torchrun(2, [str(Path(__file__).resolve().parent / "minimal.py")]), 300,
                            res.out_dir() / "minimal.log")
        res.timings["minimal example"] = s
        res.minimal = [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def pitfall_stage(cfg: Week10Config, res: WeekResults) -> None:
    """Run the pitfall tests (pytest) and keep each test's outcome and time."""
    if not cfg.check.run_pitfall_tests:
        res.skipped["pitfalls"] = "check.run_pitfall_tests=false (smoke: `make test` runs them)"
        return
    xml = res.out_dir() / "pitfalls.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                        *PITFALL_TESTS], cwd=REPO_ROOT, env=launch.child_env(), capture_output=True, text=True,
                       timeout=1200)
    res.timings["pitfall tests"] = time.perf_counter() - t
    if not xml.is_file():
        raise launch.LaunchError(f"pytest wrote no report (exit {p.returncode}):\n{(p.stdout + p.stderr)[-3000:]}")
    res.pitfalls = junit_rows(xml)
    if p.returncode != 0:
        console(f"pitfall tests: exit {p.returncode}\n{p.stdout[-2000:]}")


def junit_rows(path: Path) -> list[dict[str, Any]]:
    """``[{"test", "file", "outcome", "seconds"}]`` from a pytest JUnit XML report."""
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = {c.tag for c in case}
        outcome = ("failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed")
        rows.append({"test": case.get("name", ""), "file": case.get("classname", "").rsplit(".", 1)[-1],
                     "outcome": outcome, "seconds": float(case.get("time", 0.0))})
    return rows
