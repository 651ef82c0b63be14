"""The instruction-following eval harness: one frozen eval set, greedy answers, the same scores for every model.

Per answer (all computed from the text and how generation ended; nothing is judged by another model):

- **format compliance**: it ended with EOS before the token limit, does not echo the prompt template (its markers,
  :data:`shared.data.prompts.ECHO_MARKERS`), and is not empty;
- **ROUGE-L** F-measure against the reference (Lin 2004, https://aclanthology.org/W04-1013/; Google's
  ``rouge-score`` with the Porter stemmer, as the Self-Instruct and Super-NaturalInstructions evals use);
- **exact match** where the reference is short (at most ``short_reference_words`` words: classification labels,
  numbers, one-word answers), after lower-casing and stripping punctuation, on the answer's first line;
- **instruction following**: verifiable constraints read off the instruction (in the spirit of IFEval, Zhou et al.
  2023, https://arxiv.org/abs/2311.07911): an asked-for number of list items, "in one sentence", "in one word",
  "yes or no", "in N words or fewer", JSON. An item with no such constraint is not counted.

:func:`summarise` turns the per-item rows into one row per model (rates in [0, 1], ROUGE-L mean), and
:func:`write_table_row` keeps one CSV row per (model, eval set, harness config), replacing a re-run's row, so the
table across base → SFT → LoRA → DPO grows week by week.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import regex

from shared.config import at_least
from shared.data.prompts import ECHO_MARKERS

NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
# "list 5 ...", "give three ...": a count the answer can be checked against, not "the two players" or "$3"
_COUNT = regex.compile(r"\b(?:list|give|name|provide|suggest|write|generate|create|come up with|brainstorm|offer)"
                       r"\b[^.?!\n]{0,40}?(?<!\bthe |\$)\b(\d{1,2}|two|three|four|five|six|seven|eight|nine|ten)"
                       r"\s+(?:[\w-]+\s+){0,2}?[\w-]*[a-z]s\b")
_ITEM = regex.compile(r"^\s*(?:\d+[.):-]|[-*•])\s+\S", regex.M)
_ASK_LIST = regex.compile(r"\b(?:make|give|create|write|generate|provide|prepare|compile|brainstorm)\b[^.?!\n]{0,30}?"
                          r"\b(?:a |an )?(?:bullet(?:ed)?[- ]point |bullet(?:ed)? |numbered )?list\b")
_ASK_TABLE = regex.compile(r"\b(?:make|create|design|draw|build|generate|prepare|in|as|into|using)\b(?: a| the)?"
                           r"(?: (?!following\b|given\b|above\b|below\b|this\b)\w+){0,2} table\b")
_CODE = regex.compile(r"\b(?:write|create|generate|give)\b[^.?!\n]{0,40}?\b(?:code|script|program|function|html|sql)\b")
_WORD_LIMIT = regex.compile(r"\b(?:in|under|within|at most|no more than|fewer than|less than)\s+(\d+)\s+words\b")
_PUNCT = regex.compile(r"[\p{P}\p{S}]+")
_SENTENCE_END = regex.compile(r"[.!?](?:\s|$)")


@dataclass
class HarnessConfig:
    """How answers are generated and scored."""

    max_new_tokens: int = at_least(1, 128)  # greedy tokens per answer; an answer that reaches it is not compliant
    batch_size: int = at_least(1, 8)  # prompts per generation batch (left padding)
    short_reference_words: int = at_least(1, 5)  # references this short are also scored by exact match
    samples: int = at_least(0, 6)  # answers shown in the log's sample table


@dataclass(frozen=True)
class EvalItem:
    """One eval prompt: its id, the instruction (+ input), the reference answer, its task type and source."""

    id: str
    instruction: str
    input: str
    reference: str
    task_type: str
    source: str


def normalise_answer(text: str) -> str:
    """Lower case, punctuation and symbols dropped, whitespace collapsed (for exact match)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def asked_count(instruction: str) -> int | None:
    """The number of items the instruction asks for ("List 5 ...", "give three ..."), or None."""
    m = _COUNT.search(instruction.lower())
    if not m:
        return None
    word = m.group(1)
    return int(word) if word.isdigit() else NUMBER_WORDS[word]


def list_items(text: str) -> int:
    """Lines that start a list item (``1.``, ``2)``, ``-``, ``*``, ``•``)."""
    return len(_ITEM.findall(text))


def item_count(text: str) -> int:
    """The items of a list answer: marked lines (:func:`list_items`), else non-empty lines, else the comma-separated
    parts after the last colon when each is short (≤ 4 words: a list, not prose); 1 for any other non-empty text."""
    marked = list_items(text)
    if marked >= 2:
        return marked
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) >= 2:
        return len(lines)
    tail = text.rsplit(":", 1)[-1].strip().rstrip(".")
    parts = [regex.sub(r"^\s*(?:and|or)\s+", "", p).strip() for p in regex.split(r"[,;]", tail)]
    parts = [p for p in parts if p]
    if len(parts) >= 2 and all(len(p.split()) <= 4 for p in parts):
        return len(parts)
    return int(bool(text.strip()))


def _json_ok(text: str) -> bool:
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def instruction_checks(instruction: str, answer: str) -> dict[str, bool]:
    """The verifiable constraints of ``instruction`` and whether ``answer`` meets each (empty: none apply)."""
    low, out = instruction.lower(), {}
    if _CODE.search(low):  # the answer is code: its counts, lists and JSON are the program's, not the answer's form
        return out
    n = asked_count(instruction)
    if n is not None:
        out["count"] = item_count(answer) == n
    elif _ASK_LIST.search(low):
        out["list"] = item_count(answer) >= 2
    if _ASK_TABLE.search(low):  # rows with cell separators (markdown pipes or tabs)
        rows = [ln for ln in answer.splitlines() if "|" in ln or "\t" in ln]
        out["table"] = len(rows) >= 2 or any(ln.count("|") >= 3 for ln in rows)
    if regex.search(r"\b(in|using) (just |only |exactly )?(one|a single) sentence\b", low):
        out["one_sentence"] = len(_SENTENCE_END.findall(answer.strip())) <= 1 and bool(answer.strip())
    if regex.search(r"\b(in )?(one|a single) word\b", low):
        out["one_word"] = len(answer.split()) == 1
    if regex.search(r"\byes or no\b", low):
        out["yes_no"] = normalise_answer(answer).split()[:1] in (["yes"], ["no"])
    m = _WORD_LIMIT.search(low)
    if m:
        out["word_limit"] = 0 < len(answer.split()) <= int(m.group(1))
    if regex.search(r"\bjson\b", low):
        out["json"] = _json_ok(answer)
    return out


def score_answer(item: EvalItem, answer: str, ended: bool, template: str, cfg: HarnessConfig,
                 scorer: Any = None) -> dict[str, Any]:
    """All scores of one answer (see the module docstring).

    Args:
        answer: the decoded continuation (special tokens dropped).
        ended: generation stopped at EOS (not at ``cfg.max_new_tokens``).
        template: the prompt template used (its echo markers are looked for).
        scorer: a ``rouge_score.rouge_scorer.RougeScorer`` (one is built when None).

    Returns:
        ``{"id", "task_type", "answer", "ended", "nonempty", "no_echo", "compliant", "rougeL", "exact"
        (None unless the reference is short), "checks" (dict), "followed" (None when no check applies)}``.
    """
    if scorer is None:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    nonempty = bool(answer.strip())
    no_echo = not any(m in answer for m in ECHO_MARKERS.get(template, ()))
    rouge = scorer.score(item.reference, answer)["rougeL"].fmeasure if nonempty else 0.0
    short = len(item.reference.split()) <= cfg.short_reference_words
    first = answer.strip().splitlines()[0] if nonempty else ""
    checks = instruction_checks(item.instruction, answer)
    return {"id": item.id, "task_type": item.task_type, "answer": answer, "ended": ended, "nonempty": nonempty,
            "no_echo": no_echo, "compliant": ended and nonempty and no_echo, "rougeL": float(rouge),
            "exact": (normalise_answer(first) == normalise_answer(item.reference)) if short else None,
            "checks": checks, "followed": (all(checks.values()) if checks else None)}


def _rate(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One model's harness numbers from its per-item rows.

    Returns:
        ``{"items", "format_compliance", "ended_eos", "nonempty", "no_echo", "rougeL", "exact_match",
        "exact_items", "instruction_following", "following_items", "rougeL_by_type"}``; a rate is None when no
        item applies.
    """
    exact = [r["exact"] for r in rows if r["exact"] is not None]
    followed = [r["followed"] for r in rows if r["followed"] is not None]
    by_type: dict[str, list[float]] = {}
    for r in rows:
        by_type.setdefault(r["task_type"], []).append(r["rougeL"])
    return {"items": len(rows), "format_compliance": _rate([r["compliant"] for r in rows]),
            "ended_eos": _rate([r["ended"] for r in rows]), "nonempty": _rate([r["nonempty"] for r in rows]),
            "no_echo": _rate([r["no_echo"] for r in rows]),
            "rougeL": sum(r["rougeL"] for r in rows) / len(rows) if rows else None,
            "exact_match": _rate(exact), "exact_items": len(exact),
            "instruction_following": _rate(followed), "following_items": len(followed),
            "rougeL_by_type": {k: sum(v) / len(v) for k, v in sorted(by_type.items())}}


TABLE_KEYS = ("model", "stage", "eval_set", "harness", "items", "format_compliance", "rougeL", "exact_match",
              "instruction_following", "ended_eos", "no_echo", "nonempty", "exact_items", "following_items",
              "template", "source", "git_commit", "seconds")


def write_table_row(path: str | Path, row: dict[str, Any]) -> Path:
    """Put ``row`` into the harness CSV at ``path``, replacing the row of the same (model, eval_set, harness);
    written atomically (a temporary file renamed over the old one). Keys outside :data:`TABLE_KEYS` are ignored."""
    path = Path(path)
    rows: list[dict[str, str]] = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    key = tuple(str(row.get(k, "")) for k in ("model", "eval_set", "harness"))
    rows = [r for r in rows if tuple(r.get(k, "") for k in ("model", "eval_set", "harness")) != key]
    rows.append({k: "" if row.get(k) is None else str(row[k]) for k in TABLE_KEYS})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(TABLE_KEYS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def read_items(path: str | Path) -> list[EvalItem]:
    """An eval set file (JSONL of :class:`EvalItem` fields).

    Raises:
        ValueError: a line without one of the fields (file and line named).
    """
    items = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        d = json.loads(line)
        missing = [k for k in EvalItem.__dataclass_fields__ if k not in d]
        if missing:
            raise ValueError(f"{path}: line {i + 1} lacks {', '.join(missing)}; an eval item needs "
                             f"{', '.join(EvalItem.__dataclass_fields__)}")
        items.append(EvalItem(**{k: d[k] for k in EvalItem.__dataclass_fields__}))
    return items


def write_items(path: str | Path, items: Sequence[EvalItem]) -> Path:
    """Write an eval set as JSONL (sorted keys, one item per line: a stable hash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(i), sort_keys=True, ensure_ascii=False) + "\n" for i in items),
                    encoding="utf-8")
    return path


class EvalSetError(ValueError):
    """A frozen eval set that is missing or is not the one a week pinned (the message names the fix)."""


def read_pinned_items(path: str | Path, sha256: str = "", limit: int = 0,
                      config_file: str = "the week's config") -> tuple[list[EvalItem], str]:
    """A frozen eval set read by path, its sha256 checked against the pinned one (weeks 8 and 9 score week 7's
    items this way, so every stage is scored on the same items); the first ``limit`` items (0: all) and the hash.

    Raises:
        EvalSetError: the file is missing, or its hash is not ``sha256`` (when one is pinned).
    """
    import hashlib

    path = Path(path)
    if not path.is_file():
        raise EvalSetError(f"the eval set {path} is missing: restore it (git checkout -- {path})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha256 and digest != sha256:
        raise EvalSetError(f"{path} has sha256 {digest[:16]}…, but {config_file} pins {sha256[:16]}…: the eval set "
                           f"changed; pin its new hash in {config_file} (the weeks must score the same items)")
    items = read_items(path)
    return (items[:limit] if limit else items), digest
