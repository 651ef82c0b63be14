"""Week 7's data: the training records (v1 and the cleaned v2), the held-out val split, and the frozen eval set.

The val split is drawn (seeded) before any cleaning, so v1 and v2 are scored on the same records; both versions
are hashed (every record's fields, in order) so a run's config names the exact data it saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.data.dedup import DedupResult, contaminated, text_hash
from shared.data.instruct import InstructionRecord, load_records, records_hash, split_val  # noqa: F401 (re-exported)
from shared.data.instruct_clean import CleanResult, clean_records
from shared.data.sources import record_text
from shared.evals.instruct import EvalItem, read_items
from week07_sft.config import WEEK_DIR, Week07Config


class EvalSetError(ValueError):
    """The eval set file is missing or its hash is not the one the config pins."""


@dataclass
class WeekData:
    """Everything the runs read: v1/v2 training records, the val records, the eval items, and their hashes."""

    v1: list[InstructionRecord]
    v2: list[InstructionRecord]
    val: list[InstructionRecord]
    clean: CleanResult
    eval_items: list[EvalItem]
    hashes: dict[str, str]  # "v1", "v2", "val", "eval_set" -> sha256
    overlap: DedupResult  # eval items with an exact or near duplicate in the training records


def eval_text(item: EvalItem) -> str:
    """An eval item as the text compared with training records (instruction, input, reference)."""
    return record_text({"instruction": item.instruction, "input": item.input, "output": item.reference})


def eval_set_path(cfg: Week07Config) -> Path:
    """The eval set file: ``eval_set.path`` relative to the week's folder."""
    return WEEK_DIR / cfg.eval_set.path


def load_eval_set(cfg: Week07Config) -> list[EvalItem]:
    """The frozen eval set, its sha256 checked against ``eval_set.sha256``.

    Raises:
        EvalSetError: the file is missing, or its hash differs (the message gives both and how to fix it).
    """
    path = eval_set_path(cfg)
    if not path.is_file():
        raise EvalSetError(f"the eval set {path} is missing: run `python -m week07_sft.evalset --write` "
                           "(then put the sha256 it prints into configs/week07.yaml eval_set.sha256)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if cfg.eval_set.sha256 and digest != cfg.eval_set.sha256:
        raise EvalSetError(f"{path} has sha256 {digest[:16]}…, but eval_set.sha256 pins {cfg.eval_set.sha256[:16]}…: "
                           "the frozen eval set changed. Restore it (git checkout) or, if the change is intended, "
                           "pin the new hash")
    items = read_items(path)
    return items[:cfg.eval_set.limit] if cfg.eval_set.limit else items


def load_week_data(cfg: Week07Config) -> WeekData:
    """Load the training sources, split off val, clean v2, load the eval set and measure its overlap with train.

    Raises:
        EvalSetError: see :func:`load_eval_set`.
        CorpusError / DatasetError: a source is unknown, malformed or cannot be fetched.
    """
    records = [r for s in cfg.data.sources for r in load_records(s)]
    if cfg.data.limit:
        records = records[:cfg.data.limit]
    train, val = split_val(records, cfg.data.val_examples, cfg.data.split_seed)
    clean = clean_records(train, cfg.clean, cfg.data.examples)
    items = load_eval_set(cfg)
    overlap = contaminated([eval_text(i) for i in items], [record_text(r.to_json()) for r in records], cfg.overlap)
    hashes = {"v1": records_hash(train), "v2": records_hash(clean.records), "val": records_hash(val),
              "eval_set": hashlib.sha256((eval_set_path(cfg)).read_bytes()).hexdigest()}
    return WeekData(train, clean.records, val, clean, items, hashes, overlap)


def exact_overlap(items: Sequence[EvalItem], records: Sequence[InstructionRecord]) -> int:
    """Eval items whose instruction (normalised) is also a training instruction."""
    train = {text_hash(r.instruction) for r in records}
    return sum(text_hash(i.instruction) in train for i in items)
