"""Instruction records: one schema for every instruction dataset the project has, their task types and stats.

A record is ``(instruction, input, output, source, task_type)``. The loaders read Alpaca's 5,000 sampled records,
the LLMs-from-scratch ch07 records (both ``[{"instruction", "input", "output"}, ...]`` JSON), Self-Instruct's
252 user-oriented tasks (JSONL, one ``instances`` list per task; each instance becomes a record) and AlpacaEval's
805 prompts (JSONL; ``output`` is the text-davinci-003 reference). Nothing is silently repaired: a record without a
string ``instruction`` or ``output`` is an error naming the file and the record's index.

The task type is a rule on the instruction's wording (:func:`task_type`), the same for every dataset, so an eval
set can be drawn to cover every type and a harness score can be broken down by type. The rules are deliberately
simple and listed in :data:`TASK_RULES` (first match wins); ``open_qa`` is what is left.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import regex

from shared.data.corpus import CorpusError

INSTRUCTION_SOURCES = ("alpaca", "llms_from_scratch_ch07", "self_instruct", "alpaca_eval")
SOURCE_FILES = {  # registry dataset -> its file of instruction records
    "alpaca": "alpaca/alpaca_5000.json",
    "llms_from_scratch_ch07": "llms_from_scratch_ch07/instruction-data.json",
    "self_instruct": "self_instruct/user_oriented_instructions.jsonl",
    "alpaca_eval": "alpaca_eval/alpaca_eval.jsonl",
}

# (task type, pattern on the lower-cased instruction + input), first match wins; ``open_qa`` when none matches
TASK_RULES: tuple[tuple[str, str], ...] = (
    ("classification", r"\b(classify|categori[sz]e|which category|sentiment|is this (a|an)|true or false|yes or no|"
                       r"determine (whether|if)|identify (whether|if)|positive or negative|label)\b"),
    ("math", r"\b(calculate|compute|solve|equation|how many|how much|sum of|product of|multiply|divide|divided|"
             r"add (up )?(\d|the numbers)|subtract|"
             r"percent|average of|convert \d|\d+\s*[-+*/x^]\s*\d+|square root|math)\b"),
    ("extraction", r"\b(extract|find all|pull out|from the (text|passage|article|paragraph|sentence)|"
                   r"identify the|what is the (main|name)|which words?)\b"),
    ("summarization", r"\b(summari[sz]e|summary|tl;?dr|in (one|a) sentence|main points?|key points?)\b"),
    ("rewriting", r"\b(rewrite|rephrase|paraphrase|edit|correct|proofread|translate|convert|change the|make (it|this|"
                  r"the) (more|less)|simplify|shorten|passive voice|active voice|fix)\b"),
    ("brainstorming", r"\b(list|brainstorm|suggest|ideas?|come up with|name (some|a few|\d+|three|five|ten)|"
                      r"give (me )?(some|a few|\d+|three|five|ten)|examples? of|recommend)\b"),
    ("creative_writing", r"\b(write|compose|create|generate|draft|poem|story|essay|letter|tweet|slogan|haiku)\b"),
)
TASK_TYPES = tuple(t for t, _ in TASK_RULES) + ("open_qa",)
_COMPILED = tuple((t, regex.compile(p)) for t, p in TASK_RULES)


@dataclass(frozen=True)
class InstructionRecord:
    """One instruction-following example.

    Attributes:
        instruction: the task, as the user states it.
        input: optional context the task works on ("" when there is none).
        output: the reference response.
        source: the dataset it came from (a registry name).
        task_type: one of :data:`TASK_TYPES` (see :func:`task_type`).
        id: where it sits in its file (``<source>:<index>`` or ``<source>:<index>.<instance>``).
    """

    instruction: str
    input: str
    output: str
    source: str
    task_type: str
    id: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def task_type(instruction: str, input: str = "") -> str:
    """The task type of an instruction by :data:`TASK_RULES` (first match on ``instruction + input``, lower case)."""
    text = f"{instruction}\n{input}".lower()
    for name, pattern in _COMPILED:
        if pattern.search(text):
            return name
    return "open_qa"


def _field(rec: dict, key: str, path: Path | str, index: int | str, required: bool) -> str:
    value = rec.get(key, "" if not required else None)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        what = "is missing" if value is None else f"is a {type(value).__name__}, not a string"
        raise CorpusError(f"{path}: record {index} has no usable '{key}' ({what}). Fix the record or drop it from the "
                          "file; every record needs a string 'instruction' and 'output'")
    return value


def make_record(rec: dict, source: str, path: Path | str, index: int | str) -> InstructionRecord:
    """One raw ``{"instruction", "input"?, "output"}`` dict as a record (its task type computed).

    Raises:
        CorpusError: ``instruction`` or ``output`` is missing or not a string (the message names ``path`` and
            ``index``).
    """
    if not isinstance(rec, dict):
        raise CorpusError(f"{path}: record {index} is a {type(rec).__name__}, not an object with 'instruction' and "
                          "'output'")
    instruction = _field(rec, "instruction", path, index, True)
    inp = _field(rec, "input", path, index, False)
    output = _field(rec, "output", path, index, True)
    return InstructionRecord(instruction, inp, output, source, task_type(instruction, inp), f"{source}:{index}")


def read_records(path: str | Path, source: str) -> list[InstructionRecord]:
    """The records of one file: a JSON list (Alpaca, ch07) or JSONL (one record, or one Self-Instruct task with an
    ``instances`` list, per line).

    Raises:
        CorpusError: the file does not parse, or a record lacks ``instruction``/``output`` (file and index named).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines()
                                                                 if line.strip()]
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'JSONL'}: {e}") from e
    if not isinstance(rows, list):
        raise CorpusError(f"{path} holds a {type(rows).__name__}; expected a list of instruction records")
    out: list[InstructionRecord] = []
    for i, row in enumerate(rows):
        if isinstance(row, dict) and "instances" in row:  # Self-Instruct: a task with several instances
            instruction = _field(row, "instruction", path, i, True)
            for j, inst in enumerate(row["instances"]):
                out.append(make_record({"instruction": instruction, **inst}, source, path, f"{i}.{j}"))
        else:
            out.append(make_record(row, source, path, i))
    return out


def load_records(source: str) -> list[InstructionRecord]:
    """The records of a registered instruction dataset (fetched and verified on first use).

    Raises:
        CorpusError: an unknown source (the message lists them) or a malformed file.
        DatasetError: the file cannot be fetched or fails its checksum.
    """
    from shared.data.fetch import prepare
    from shared.data.registry import get_spec

    if source not in SOURCE_FILES:
        raise CorpusError(f"'{source}' is not an instruction dataset. Known: {', '.join(INSTRUCTION_SOURCES)}")
    return read_records(prepare(get_spec(source)) / SOURCE_FILES[source], source)


def record_stats(records: Sequence[InstructionRecord], lengths: Sequence[int] | None = None) -> dict:
    """Counts for a log: records, per source, per task type, with input, empty outputs, and (given each record's
    token length) min / median / p95 / max tokens."""
    stats: dict = {"records": len(records), "sources": dict(Counter(r.source for r in records)),
                   "task_types": dict(sorted(Counter(r.task_type for r in records).items())),
                   "with_input": sum(bool(r.input.strip()) for r in records),
                   "empty_output": sum(not r.output.strip() for r in records)}
    if lengths is not None and len(lengths):
        s = sorted(lengths)
        stats["tokens"] = {"min": s[0], "median": s[len(s) // 2], "p95": s[min(len(s) - 1, int(0.95 * len(s)))],
                           "max": s[-1]}
    return stats


def records_hash(records: Sequence[InstructionRecord]) -> str:
    """sha256 of the records' fields, in order (a data version's identity)."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def split_val(records: Sequence[InstructionRecord], n: int, seed: int) -> tuple[list, list]:
    """(train, val): ``n`` records drawn with ``seed``, the rest in file order.

    Raises:
        ValueError: ``n`` leaves no training record.
    """
    if n >= len(records):
        raise ValueError(f"data.val_examples={n} leaves no training record of {len(records)}: lower it")
    chosen = set(np.random.default_rng(seed).choice(len(records), n, replace=False).tolist())
    return ([r for i, r in enumerate(records) if i not in chosen], [r for i, r in enumerate(records) if i in chosen])
