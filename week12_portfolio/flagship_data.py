"""The flagship's data, drawn once so every stage sees the same splits: the SFT and LoRA instruction records
(train / val), the preference pairs (train / val by prompt), week 7's frozen eval items, and the pre-training corpus
(Shakespeare's speeches and the SFT training records as plain text, never a val record or an eval item) written as one
folder of text that :func:`shared.data.lm.prepare_lm_data` reads like any corpus."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.atomic import atomic_write_text
from shared.data.instruct import INSTRUCTION_SOURCES, load_records, records_hash, split_val
from shared.data.sources import load_sources, record_text
from shared.evals.instruct import EvalItem, read_pinned_items
from shared.paths import REPO_ROOT, runs_root
from week12_portfolio.flagship_config import FlagshipConfig

SEPARATOR = "<|endoftext|>"  # between documents of the written corpus (no record or speech contains it)


@dataclass
class InstructionSplit:
    """One stage's instruction records and the sha256 of each side (the run's config names them)."""

    train: list[Any]
    val: list[Any]

    @property
    def hashes(self) -> dict[str, str]:
        return {"train": records_hash(self.train), "val": records_hash(self.val)}


def instruction_split(sources: list[str], val_examples: int, seed: int, limit: int = 0) -> InstructionSplit:
    """Records of ``sources`` (the first ``limit``; 0: all) split into train and ``val_examples`` val records.

    Raises:
        ValueError: an unknown source (the message lists the known ones) or a val split that leaves no training record.
    """
    unknown = [s for s in sources if s not in INSTRUCTION_SOURCES]
    if unknown:
        raise ValueError(f"instruction sources {unknown} are unknown: choose from {', '.join(INSTRUCTION_SOURCES)}")
    records = [r for s in sources for r in load_records(s)]
    records = records[:limit] if limit else records
    train, val = split_val(records, val_examples, seed)
    return InstructionSplit(train, val)


def eval_items(cfg: FlagshipConfig) -> tuple[list[EvalItem], str]:
    """Week 7's frozen eval set (read by path, its sha256 checked), the first ``eval.items``, and its hash.

    Raises:
        EvalSetError: the file is missing or its hash is not the pinned one.
    """
    path = Path(cfg.eval.path)
    path = path if path.is_absolute() else REPO_ROOT / path
    return read_pinned_items(path, cfg.eval.sha256, cfg.eval.items, "week12_portfolio/configs/flagship.yaml")


def _clean(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text.replace(SEPARATOR, "")).strip()


def pretraining_corpus(sources: list[str], held_out: list[Any]) -> Path:
    """Write the documents of ``sources`` (minus any whose text is a held-out record's) as one ``corpus.txt``,
    documents separated by :data:`SEPARATOR`, under ``runs/week12/data/flagship-corpus-<sha>/``; written once.

    Returns the folder (pass it as ``data.corpus`` with ``data.separator`` = :data:`SEPARATOR`).

    Raises:
        CorpusError: an unknown source, or nothing left to write.
    """
    from shared.data.corpus import CorpusError

    drop = {_clean(record_text(r.to_json())) for r in held_out}
    docs = [t for t in (_clean(d.text) for d in load_sources(sources)) if t and t not in drop]
    if not docs:
        raise CorpusError(f"the flagship corpus from {sources} is empty once the held-out records are removed")
    text = f"\n{SEPARATOR}\n".join(docs) + "\n"
    sha = hashlib.sha256(text.encode()).hexdigest()
    folder = runs_root() / "week12" / "data" / f"flagship-corpus-{sha[:12]}"
    path = folder / "corpus.txt"
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return folder
