"""``python -m week07_sft.evalset [--write]``: draw the eval set once and freeze it in ``data/eval_set.jsonl``.

From Self-Instruct's user-oriented instructions and AlpacaEval (references no longer than
``eval_set.max_reference_words``), every candidate with an exact or near duplicate in the training records (or in an
earlier candidate's instruction: AlpacaEval contains the Self-Instruct tasks) is dropped; the rest are grouped by task type and
drawn round-robin over the types, seeded, so the first k items of the file cover as many types as k allows. Within a
type, candidates whose instruction carries a checkable constraint (an asked-for count, a list, a table, one sentence,
yes/no, a word limit, JSON: :func:`shared.evals.instruct.instruction_checks`) are drawn first, so the harness's
instruction-following rate rests on at least ``eval_set.min_constrained`` items. The
file is committed and its sha256 pinned in ``configs/week07.yaml``: the eval set never changes under a run.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import defaultdict

import numpy as np

from shared.data.dedup import contaminated, exact_dedup, near_dedup, normalise
from shared.data.instruct import load_records
from shared.data.sources import record_text
from shared.evals.instruct import EvalItem, instruction_checks, write_items
from week07_sft import config
from week07_sft.data import eval_set_path


def draw(cfg: config.Week07Config) -> list[EvalItem]:
    """The eval items (see the module docstring).

    Raises:
        ValueError: fewer candidates, task types or constrained items than asked for.
    """
    train = [record_text(r.to_json()) for s in cfg.data.sources for r in load_records(s)]
    cands = [r for s in cfg.eval_set.sources for r in load_records(s)
             if r.output.strip() and len(r.output.split()) <= cfg.eval_set.max_reference_words]
    texts = [record_text(r.to_json()) for r in cands]
    clean = set(contaminated(texts, train, cfg.overlap).kept)
    # one item per task: AlpacaEval holds Self-Instruct's tasks too, and some tasks repeat with other inputs
    # (AlpacaEval appends the input to the instruction: the first words of the instruction are the task's identity)
    heads = [" ".join(normalise(r.instruction).split()[:10]) for r in cands]
    unique = set(exact_dedup(heads).kept) & set(near_dedup(texts, cfg.overlap).kept)
    by_type: dict[str, list] = defaultdict(list)
    for i, r in enumerate(cands):
        if i in clean and i in unique:
            by_type[r.task_type].append(r)
    if len(by_type) < cfg.eval_set.min_task_types:
        raise ValueError(f"only {len(by_type)} task types among the candidates ({', '.join(sorted(by_type))}); "
                         f"eval_set.min_task_types={cfg.eval_set.min_task_types}")
    rng = np.random.default_rng(cfg.eval_set.seed)
    pools = {t: [rs[i] for i in rng.permutation(len(rs))] for t, rs in sorted(by_type.items())}
    # constrained first within each type (a stable sort keeps the seeded order inside both groups)
    pools = {t: sorted(rs, key=lambda r: not constrained(r.instruction)) for t, rs in pools.items()}
    items: list[EvalItem] = []
    while len(items) < cfg.eval_set.size and any(pools.values()):
        for t in sorted(pools):
            if pools[t] and len(items) < cfg.eval_set.size:
                r = pools[t].pop(0)
                items.append(EvalItem(r.id, r.instruction, r.input, r.output, r.task_type, r.source))
    if len(items) < cfg.eval_set.size:
        raise ValueError(f"only {len(items)} clean candidates for an eval set of {cfg.eval_set.size}")
    n_con = sum(constrained(i.instruction) for i in items)
    if n_con < cfg.eval_set.min_constrained:
        raise ValueError(f"only {n_con} drawn items carry a checkable instruction constraint; "
                         f"eval_set.min_constrained={cfg.eval_set.min_constrained}")
    return items


def constrained(instruction: str) -> bool:
    """True when the harness can check the instruction's constraint (``instruction_checks`` finds one)."""
    return bool(instruction_checks(instruction, ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="week07_sft.evalset", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write data/eval_set.jsonl (refuses to overwrite)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing eval set")
    args = parser.parse_args(argv)
    cfg = config.load("cpu")
    items = draw(cfg)
    path = eval_set_path(cfg)
    if args.write:
        if path.exists() and not args.force:
            print(f"{path} exists (the frozen eval set): pass --force to replace it", file=sys.stderr)
            return 2
        write_items(path, items)
    types = defaultdict(int)
    for i in items:
        types[i.task_type] += 1
    print(f"{len(items)} items, {len(types)} task types: {dict(sorted(types.items()))}; "
          f"{sum(constrained(i.instruction) for i in items)} with a checkable constraint")
    if args.write:
        print(f"wrote {path}\nsha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
