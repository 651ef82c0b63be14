"""The harness table: one row per (model, eval set, harness config) in ``runs/harness.csv``, from week 7 on.

Base, SFT (week 7), LoRA / QLoRA (week 8) and DPO (week 9) models are scored by the same harness on the same frozen
eval set, and each score lands in one table, so the stages compare row by row. A row's identity is the model, the
eval set's hash and :func:`harness_hash` (the generation settings and the prompt template).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from shared.evals.harness import HarnessResult, run_harness
from shared.evals.instruct import EvalItem, HarnessConfig, write_table_row
from shared.paths import runs_root


def harness_csv() -> Path:
    """``runs/harness.csv``: one row per model scored by the harness (weeks 7-9 add to it)."""
    return runs_root() / "harness.csv"


def harness_hash(cfg: HarnessConfig, template: str) -> str:
    """Short hash of the harness settings and the prompt template (a row's identity with the model and eval set)."""
    return hashlib.sha256(json.dumps({**asdict(cfg), "template": template}, sort_keys=True).encode()).hexdigest()[:8]


def evaluate(spec: str | Path, items: list[EvalItem], cfg: HarnessConfig, template: str, stage: str,
             eval_sha256: str, label: str | None = None, model: Any = None, tokenizer: Any = None,
             table: Path | None = None) -> tuple[HarnessResult, dict[str, Any]]:
    """Score one model and record its row in the harness table.

    Args:
        spec: what to load (a registry name, a Hugging Face folder or a checkpoint folder, see
            :func:`shared.models.loading.load_any_lm`); ignored when ``model`` and ``tokenizer`` are given.
        stage: what the model is ("base", "sft-v1", "lora", "dpo", ...).
        label: the row's model name (default: the loaded model's name).

    Raises:
        ValueError: ``spec`` is not a model (see :func:`shared.models.loading.load_any_lm`).
    """
    import torch

    from shared.repro import environment

    name = label
    if model is None:
        from shared.models.loading import load_any_lm

        lm = load_any_lm(spec)
        model, tokenizer, name = lm.model, lm.tokenizer, label or lm.name
    model.eval()
    with torch.no_grad():
        res = run_harness(model, tokenizer, items, template, cfg)
    row = {"model": name, "stage": stage, "eval_set": eval_sha256[:12], "harness": harness_hash(cfg, template),
           **{k: v for k, v in res.summary.items() if k != "rougeL_by_type"}, "template": template,
           "source": str(spec), "git_commit": environment().get("git_commit"), "seconds": round(res.seconds, 1)}
    write_table_row(table or harness_csv(), row)
    return res, row
