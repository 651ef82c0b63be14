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
from pathlib import Path

from shared.cli import resolve_profile, run_week, week_arg_parser
from shared.evals.table import evaluate, harness_csv, harness_hash  # noqa: F401 (the week's eval API)
from week07_sft import config
from week07_sft.data import load_eval_set


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
