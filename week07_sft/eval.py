"""``python -m week07_sft.eval MODEL [--stage S] [--profile P] [key=value ...]``: the instruction harness on one model.

MODEL is a registry name (``smollm2-135m-instruct``), a Hugging Face folder (``models/week07/sft-v1``, a LoRA
merge or a DPO export of the later weeks) or a project checkpoint folder. The frozen eval set is scored with
:mod:`shared.evals.instruct` (greedy, ``harness.max_new_tokens``) and one row per (model, eval set, harness config)
is kept in ``runs/harness.csv``, the table that grows from base to SFT, LoRA and DPO. Two calls give the same
numbers.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from shared.cli import resolve_profile, run_week, week_arg_parser
from shared.evals.harness import HarnessResult, run_harness
from shared.evals.instruct import EvalItem, HarnessConfig, write_table_row
from shared.paths import runs_root
from week07_sft import config
from week07_sft.data import load_eval_set


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
        spec: what to load (see the module docstring); ignored when ``model`` and ``tokenizer`` are given.
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


def main(argv: list[str] | None = None) -> int:
    parser = week_arg_parser("week07_sft.eval", __doc__.splitlines()[0])
    parser.add_argument("model", help="a registry name, a Hugging Face model folder or a checkpoint folder")
    parser.add_argument("--stage", default="", help="what the model is (base, sft, lora, dpo); default: its name")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = config.load(resolve_profile(args.profile), args.overrides)
    items = load_eval_set(cfg)
    from week07_sft.data import eval_set_path

    sha = hashlib.sha256(eval_set_path(cfg).read_bytes()).hexdigest()
    res, row = evaluate(args.model, items, cfg.harness, cfg.sft.template, args.stage or Path(args.model).name, sha)
    keys = ("items", "format_compliance", "rougeL", "exact_match", "instruction_following", "seconds")
    print(json.dumps({k: row[k] for k in ("model", "stage", *keys)}, indent=2))
    print(f"row written to {harness_csv()}")
    return 0


if __name__ == "__main__":
    sys.exit(run_week(main))
