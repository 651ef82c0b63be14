"""The English texts the project has offline, as documents tagged with where they came from.

A :class:`Document` carries its source and a ``group``: documents of one group must land on the same side of a
train/val split (HH-RLHF's chosen and rejected dialogues share everything but the last turn; splitting them apart
would put a near-copy of every val dialogue in train).

Sources: ``tiny_shakespeare`` (speeches, split at blank lines), ``alpaca`` (the 5,000 sampled records),
``llms_from_scratch_ch07`` (1,100 records), ``hh_rlhf`` (2,312 chosen + 2,312 rejected dialogues) and, online,
``tinystories``. An instruction record becomes ``instruction``, ``input`` (when present) and ``output`` joined by
blank lines: the text a model would read, without any prompt template.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from shared.data.corpus import CorpusError, read_text, split_text
from shared.data.fetch import prepare
from shared.data.registry import get_spec

SOURCES = ("tiny_shakespeare", "alpaca", "llms_from_scratch_ch07", "hh_rlhf", "tinystories")
OFFLINE = SOURCES[:4]  # in the dataset mirror; tinystories is downloaded on demand


@dataclass(frozen=True)
class Document:
    """One document: its text, its source dataset and a group id (same group = same side of a split)."""

    text: str
    source: str
    group: str


def record_text(record: dict) -> str:
    """An instruction record as plain text: instruction, input (if any) and output, separated by blank lines."""
    parts = [record.get("instruction", ""), record.get("input", ""), record.get("output", "")]
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def source_file(name: str, relpath: str) -> Path:
    """The cached path of one registered file of dataset ``name`` (fetched and verified on first use).

    Raises:
        KeyError: ``name`` is not a registered dataset, or ``relpath`` is not one of its files (the message lists
            them).
        DatasetError: the file cannot be fetched or fails its checksum.
    """
    spec = get_spec(name)
    relpaths = [f.relpath for f in spec.files]
    if relpath not in relpaths:
        raise KeyError(f"{relpath} is not a file of dataset {name}. Its files: {', '.join(relpaths)}; a new file "
                       "must first be added to shared/data/registry.py")
    return prepare(spec) / relpath


_file = source_file  # the name the loaders below have always used


def load_source(name: str) -> list[Document]:
    """The documents of one source, in file order (fetched and verified on first use).

    Raises:
        CorpusError: an unknown source (the message lists them) or a file that cannot be parsed.
        DatasetError: a file cannot be fetched or fails its checksum.
    """
    if name == "tiny_shakespeare" or name == "tinystories":
        sep = "\n\n" if name == "tiny_shakespeare" else "<|endoftext|>"
        docs = []
        for f in get_spec(name).files:
            docs += split_text(read_text(prepare(get_spec(name)) / f.relpath), sep, f"{name}: {f.relpath}")
        return [Document(t, name, f"{name}:{i}") for i, t in enumerate(docs)]
    if name in ("alpaca", "llms_from_scratch_ch07"):
        rel = "alpaca/alpaca_5000.json" if name == "alpaca" else "llms_from_scratch_ch07/instruction-data.json"
        path = _file(name, rel)
        try:
            records = json.loads(read_text(path))
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path} is not valid JSON: {e}") from None
        texts = [record_text(r) for r in records]
        return [Document(t, name, f"{name}:{i}") for i, t in enumerate(texts) if t]
    if name == "hh_rlhf":
        path = _file(name, "hh_rlhf/harmless-base/test.jsonl.gz")
        out = []
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                pair = json.loads(line)
                for side in ("chosen", "rejected"):
                    if pair[side].strip():
                        out.append(Document(pair[side].strip(), name, f"{name}:{i}"))
        return out
    raise CorpusError(f"unknown text source {name!r}. Known: {', '.join(SOURCES)}")


def load_sources(names: list[str]) -> list[Document]:
    """The documents of several sources, concatenated in the order named.

    Raises:
        CorpusError: no source named, or an unknown one.
    """
    if not names:
        raise CorpusError("no text source named: list at least one of " + ", ".join(SOURCES))
    return [d for name in names for d in load_source(name)]
