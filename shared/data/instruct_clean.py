"""Cleaning an instruction dataset (version 2 of week 7's data): each rule with what it removed and examples.

The rules, in order (a record is counted by the first rule that removes it):

1. ``format``: fixes, not removals — surrounding whitespace stripped, runs of 3+ newlines cut to 2, a literal
   ``\\n`` turned into a newline, a ``<noinput>`` input emptied (counted as fixed);
2. ``empty_output``: an output that is empty or a placeholder (``<nooutput>``, ``N/A``, ``none``, ...);
3. ``unseen_reference``: an instruction that points at something the model cannot see ("this image", "the video
   below", "the attached file", a link: Alpaca's generator was told such tasks are impossible for a text model,
   Taori et al. 2023), an output with a link (a text model cannot vouch for one), or an output that is a refusal /
   "as an AI language model" boilerplate (a common cleaning step since Vicuna's ShareGPT filtering, Chiang et al.
   2023);
4. ``exact_duplicate``: the same normalised instruction + input + output as an earlier record
   (:func:`shared.data.dedup.exact_dedup`);
5. ``near_duplicate``: a record whose text has a Jaccard similarity ≥ the threshold to an earlier one
   (MinHash + LSH, :func:`shared.data.dedup.near_dedup`);
6. ``too_long``: more than ``max_words`` words in instruction + input + output (the SFT encoder drops what exceeds
   ``max_length`` tokens anyway; this removes them before the budget is spent on them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import regex

from shared.config import at_least
from shared.data.dedup import DedupConfig, exact_dedup, near_dedup
from shared.data.instruct import InstructionRecord
from shared.data.sources import record_text

PLACEHOLDERS = {"", "<nooutput>", "nooutput", "n/a", "na", "none", "no output", "<noinput>", "null", "-", "."}
# a task about something only a human with the attachment could see: "describe this image", "the attached file",
# "watch the video below", or a link to open (a text model sees none of them)
_UNSEEN = regex.compile(r"\b(this|the|following|given|attached|above|below|provided|my)\s+(image|images|photo|photos|"
                        r"picture|pictures|video|videos|chart|diagram|graph|audio|recording|screenshot|painting|pdf|"
                        r"spreadsheet|link|url|website)\b|\battach(ed|ment)\b|https?://|www\.", regex.I)
_LINK = regex.compile(r"https?://|www\.", regex.I)
_REFUSAL = regex.compile(r"\b(as an ai|as a language model|as an ai language model|i'?m sorry,? but i (cannot|can't)|"
                         r"i (cannot|can't|am unable to) (provide|access|view|see|browse))\b", regex.I)
_NEWLINES = regex.compile(r"\n{3,}")


@dataclass
class CleanConfig:
    """Version 2's rules (see the module docstring)."""

    max_words: int = at_least(1, 400)  # instruction + input + output, in words
    dedup: DedupConfig = field(default_factory=DedupConfig)


@dataclass
class CleanStep:
    """One rule's effect: how many records it removed (or fixed), and up to ``examples`` of them."""

    name: str
    removed: int
    fixed: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)


@dataclass
class CleanResult:
    """The kept records and what every rule did."""

    records: list[InstructionRecord]
    steps: list[CleanStep]

    @property
    def removed(self) -> int:
        return sum(s.removed for s in self.steps)


def fix_format(r: InstructionRecord) -> InstructionRecord:
    """The ``format`` rule's fixes of one record (the same record when nothing changes)."""
    def fix(text: str) -> str:
        return _NEWLINES.sub("\n\n", text.replace("\\n", "\n")).strip()

    inp = "" if r.input.strip().lower() in ("<noinput>", "noinput") else fix(r.input)
    return replace(r, instruction=fix(r.instruction), input=inp, output=fix(r.output))


def is_placeholder(output: str) -> bool:
    """An empty or placeholder output (``<nooutput>``, ``N/A``, ...)."""
    return output.strip().lower() in PLACEHOLDERS


def needs_unseen(r: InstructionRecord) -> bool:
    """The record refers to an image/link/attachment the model cannot see, or its output is a refusal."""
    return bool(_UNSEEN.search(f"{r.instruction}\n{r.input}") or _LINK.search(r.output) or _REFUSAL.search(r.output))


def _example(r: InstructionRecord, why: str = "") -> dict[str, str]:
    text = record_text(r.to_json()).replace("\n", " ")
    return {"id": r.id, "text": text[:160] + ("…" if len(text) > 160 else ""), "why": why}


def clean_records(records: Sequence[InstructionRecord], cfg: CleanConfig, examples: int = 5) -> CleanResult:
    """Apply the rules in order; every removed record is counted once, by the first rule that removed it.

    Raises:
        ValueError: nothing is left (the rules removed every record).
    """
    steps: list[CleanStep] = []
    fixed = [fix_format(r) for r in records]
    changed = [(a, b) for a, b in zip(records, fixed, strict=True) if a != b]
    steps.append(CleanStep("format", 0, len(changed), [_example(a, "fixed") for a, _ in changed[:examples]]))
    kept = list(fixed)

    def keep_if(name: str, ok: list[bool], why: list[str] | None = None) -> None:
        nonlocal kept
        gone = [(r, w) for r, o, w in zip(kept, ok, why or [""] * len(kept), strict=True) if not o]
        steps.append(CleanStep(name, len(gone), 0, [_example(r, w) for r, w in gone[:examples]]))
        kept = [r for r, o in zip(kept, ok, strict=True) if o]

    keep_if("empty_output", [not is_placeholder(r.output) for r in kept])
    keep_if("unseen_reference", [not needs_unseen(r) for r in kept])
    texts = [record_text(r.to_json()) for r in kept]
    ex = exact_dedup(texts)
    keep_if("exact_duplicate", [i not in ex.removed for i in range(len(kept))],
            [f"= {kept[ex.removed[i]].id}" if i in ex.removed else "" for i in range(len(kept))])
    nd = near_dedup([record_text(r.to_json()) for r in kept], cfg.dedup)
    keep_if("near_duplicate", [i not in nd.removed for i in range(len(kept))],
            [f"≈ {kept[nd.removed[i]].id} (Jaccard {nd.similarity[i]:.2f})" if i in nd.removed else ""
             for i in range(len(kept))])
    keep_if("too_long", [len(record_text(r.to_json()).split()) <= cfg.max_words for r in kept])
    if not kept:
        raise ValueError(f"cleaning removed all {len(records)} records ({', '.join(f'{s.name} {s.removed}' for s in steps)}): "
                         "loosen clean.max_words or the dedup threshold")
    return CleanResult(kept, steps)
