"""Preference pairs for DPO: a prompt, the response people preferred (``chosen``) and the one they did not
(``rejected``), from two offline sources, with the checks and the written rubric that say what the data teaches.

Sources:

- ``llms_from_scratch_ch07``: ``instruction-data-with-preference.json`` (Raschka, *Build a Large Language Model
  (From Scratch)* ch. 7, DPO notebook), 1,100 instruction records whose ``chosen`` answer is the polite one and whose
  ``rejected`` answer the impolite one. The prompt is the record formatted by :func:`shared.data.prompts.format_prompt`
  (the same template SFT used).
- ``hh_rlhf``: Anthropic's HH-RLHF harmless-base test split (Bai et al. 2022, https://arxiv.org/abs/2204.05862),
  2,312 pairs of full dialogues ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` that differ only in the last Assistant
  turn. The prompt is the dialogue up to and including the last ``"\\n\\nAssistant:"`` (:func:`split_hh_dialogue`);
  the responses keep their leading space, so ``prompt + chosen`` is the chosen dialogue (trailing whitespace aside).

Nothing is silently repaired: a pair that cannot be used raises :class:`PairError` with one of
:data:`DROP_REASONS`, and the loaders drop it and count it by reason. The train/val split
(:func:`split_by_prompt`) is fixed by hashes of the prompts, so it depends on neither file order nor a seed, and
never puts one prompt on both sides.

The rubric (:data:`RUBRIC`) states, per source, what "chosen is better" means in this data as rules a program can
check (:func:`rule_passes`), and the share of pairs that must pass for the data to be called aligned with it
(:func:`rubric_shares`). The lexicons are deliberately simple and listed below; they measure wording, not meaning.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.data.corpus import CorpusError
from shared.data.prompts import format_prompt
from shared.data.sources import source_file

PREFERENCE_SOURCES = ("llms_from_scratch_ch07", "hh_rlhf")
PREFERENCE_FILES = {  # registry dataset -> its file of preference pairs
    "llms_from_scratch_ch07": "llms_from_scratch_ch07/instruction-data-with-preference.json",
    "hh_rlhf": "hh_rlhf/harmless-base/test.jsonl.gz",
}
DROP_REASONS = ("no_final_assistant_turn", "prompt_mismatch", "empty_chosen", "empty_rejected", "identical")
ASSISTANT_TURN = "\n\nAssistant:"

# Politeness (ch07): markers counted case-insensitively as whole words/phrases (not preceded or followed by a letter,
# digit or underscore), after curly apostrophes become straight ones. Polite: courtesy words and hedges; impolite:
# dismissive words, swearing and put-downs; both extended past the textbook lists by the markers that the ch07
# answers use most ("indeed", "if I may" / "freaking", "if you must know"). "!" is NOT counted: in this data it sits
# mostly inside quoted inputs ("I love this song!") that both answers repeat, and rude answers are rude in words.
POLITE_MARKERS = ("please", "thank", "thanks", "thank you", "happy to", "glad", "gladly", "kindly", "would you",
                  "could you", "certainly", "of course", "I'd be", "I would", "hope", "appreciate", "sorry",
                  "welcome", "would be", "here is", "here are", "if I may", "indeed", "suggest", "feel free", "perhaps",
                  "you may")
IMPOLITE_MARKERS = ("obviously", "just", "duh", "whatever", "seriously", "stupid", "figure it out", "do it yourself",
                    "get it", "get it together", "got it", "okay?", "look it up", "yourself", "geez", "already",
                    "not that hard", "come on", "clearly", "dumb", "idiot", "ridiculous", "ridiculously", "bother",
                    "bothered", "bothering", "deal with it", "ugh", "damn", "damned", "freaking", "crap", "crappy",
                    "hell", "if you must know", "in case you didn't know", "pain in the neck")

# Deflection (HH): phrases with which an assistant refuses, warns or steers away instead of helping, matched like the
# politeness markers. "I don't know" and "I'm not sure" are NOT counted: in HH they are as often a confused helpful
# answer as a refusal.
DEFLECTION_MARKERS = ("I'm sorry", "I am sorry", "I can't", "I cannot", "I can not", "I won't", "I will not",
                      "I'm not able", "I am not able", "I'm unable", "I am unable", "not comfortable",
                      "I don't feel comfortable", "illegal", "not appropriate", "inappropriate", "I don't think",
                      "instead", "I'd rather not", "I would rather not", "harmful", "dangerous", "against the law",
                      "please don't", "please do not", "I don't want to", "I do not want to", "I wouldn't",
                      "I would not", "not a good idea", "not okay", "not ok", "unethical", "I refuse",
                      "I don't recommend", "I do not recommend", "I'd recommend against", "seek help", "therapist",
                      "not something I", "can't help", "cannot help", "can't do that", "I'm not going to",
                      "I am not going to")


def _lexicon(markers: Sequence[str]) -> re.Pattern[str]:
    words = sorted((re.escape(m.lower()).replace(r"\ ", r"\s+") for m in markers), key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)")


_POLITE = _lexicon(POLITE_MARKERS)
_IMPOLITE = _lexicon(IMPOLITE_MARKERS)
_DEFLECTION = _lexicon(DEFLECTION_MARKERS)


@dataclass(frozen=True)
class PreferencePair:
    """One preference pair.

    Attributes:
        id: where it sits in its file (``<source>:<index>``; for HH the line index).
        source: one of :data:`PREFERENCE_SOURCES`.
        prompt: the exact text the model reads before the response.
        chosen: the preferred response (HH: with its leading space, trailing whitespace stripped).
        rejected: the other response.
    """

    id: str
    source: str
    prompt: str
    chosen: str
    rejected: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


class PairError(ValueError):
    """A pair that cannot be used; ``reason`` is one of :data:`DROP_REASONS` (what the loaders count it under)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason '{reason}'. Known: {', '.join(DROP_REASONS)}")
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


def _split_turn(text: str, side: str) -> tuple[str, str]:
    at = text.rfind(ASSISTANT_TURN)
    if at < 0:
        raise PairError("no_final_assistant_turn", f"the {side} dialogue has no '\\n\\nAssistant:' turn")
    end = at + len(ASSISTANT_TURN)
    return text[:end], text[end:].rstrip()


def split_hh_dialogue(chosen_text: str, rejected_text: str) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) of one HH-RLHF pair of dialogues.

    The prompt is each text up to and including its last ``"\\n\\nAssistant:"``; the responses are what follows, with
    their leading space kept and trailing whitespace stripped. Identical responses are not an error here (the loaders
    count them as ``identical``).

    Raises:
        PairError: ``no_final_assistant_turn`` (a text has no ``"\\n\\nAssistant:"``), ``prompt_mismatch`` (the two
            dialogues differ before their last Assistant turn), ``empty_chosen`` / ``empty_rejected`` (a final turn
            is blank).
    """
    prompt, chosen = _split_turn(chosen_text, "chosen")
    other, rejected = _split_turn(rejected_text, "rejected")
    if prompt != other:
        at = len(os.path.commonprefix([prompt, other]))
        raise PairError("prompt_mismatch", f"the dialogues differ before their last Assistant turn, from character "
                                           f"{at}: {prompt[at:at + 40]!r} vs {other[at:at + 40]!r}")
    if not chosen.strip():
        raise PairError("empty_chosen", "the chosen dialogue's last Assistant turn is empty")
    if not rejected.strip():
        raise PairError("empty_rejected", "the rejected dialogue's last Assistant turn is empty")
    return prompt, chosen, rejected


def _check_responses(chosen: str, rejected: str) -> None:
    if not chosen.strip():
        raise PairError("empty_chosen", "the chosen response is empty")
    if not rejected.strip():
        raise PairError("empty_rejected", "the rejected response is empty")
    if chosen.strip() == rejected.strip():
        raise PairError("identical", "chosen and rejected are the same text")


def hh_pairs_from_lines(lines: Iterable[str], where: str = "hh_rlhf") -> tuple[list[PreferencePair], Counter]:
    """The pairs of HH-RLHF JSONL lines (``{"chosen": dialogue, "rejected": dialogue}``), ids ``hh_rlhf:<line>``;
    unusable pairs are dropped and counted by reason. Blank lines are skipped (and keep their index).

    Raises:
        CorpusError: a line is not JSON or lacks a string ``chosen``/``rejected`` (``where`` and the line named).
    """
    pairs: list[PreferencePair] = []
    dropped: Counter = Counter()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{where}: line {i} is not valid JSON ({e}). Fix or remove the line") from e
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("chosen", "rejected")):
            raise CorpusError(f"{where}: line {i} needs string 'chosen' and 'rejected' dialogues. Fix or remove it")
        try:
            prompt, chosen, rejected = split_hh_dialogue(row["chosen"], row["rejected"])
            _check_responses(chosen, rejected)
        except PairError as e:
            dropped[e.reason] += 1
            continue
        pairs.append(PreferencePair(f"hh_rlhf:{i}", "hh_rlhf", prompt, chosen, rejected))
    return pairs, dropped


def _text_field(rec: Any, key: str, where: str, index: int) -> str:
    value = rec.get(key, "") if key == "input" else rec.get(key)
    if not isinstance(value, str):
        what = "is missing" if value is None else f"is a {type(value).__name__}, not a string"
        raise CorpusError(f"{where}: record {index} has no usable '{key}' ({what}). Fix the record or drop it from the "
                          "file; every record needs string 'instruction', 'chosen' and 'rejected'")
    return value


def ch07_pairs_from_records(records: Sequence[Any], template: str = "alpaca", tokenizer: Any = None,
                            where: str = "llms_from_scratch_ch07") -> tuple[list[PreferencePair], Counter]:
    """The pairs of ch07 preference records (``instruction``, ``input``, ``chosen``, ``rejected``), the prompt
    formatted with ``template``, ids ``llms_from_scratch_ch07:<index>``; unusable pairs dropped and counted by reason.

    Raises:
        CorpusError: a record is not an object or lacks a string field (``where`` and the index named).
        ConfigError, TokenizerError: see :func:`shared.data.prompts.format_prompt`.
    """
    pairs: list[PreferencePair] = []
    dropped: Counter = Counter()
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise CorpusError(f"{where}: record {i} is a {type(rec).__name__}, not an object with 'instruction', "
                              "'chosen' and 'rejected'")
        instruction, inp = _text_field(rec, "instruction", where, i), _text_field(rec, "input", where, i)
        chosen, rejected = _text_field(rec, "chosen", where, i), _text_field(rec, "rejected", where, i)
        try:
            _check_responses(chosen, rejected)
        except PairError as e:
            dropped[e.reason] += 1
            continue
        prompt = format_prompt(instruction, inp, template, tokenizer)
        pairs.append(PreferencePair(f"llms_from_scratch_ch07:{i}", "llms_from_scratch_ch07", prompt, chosen, rejected))
    return pairs, dropped


def read_hh_pairs(path: str | Path) -> tuple[list[PreferencePair], Counter]:
    """The pairs of an HH-RLHF ``.jsonl.gz`` (or plain ``.jsonl``) file; see :func:`hh_pairs_from_lines`.

    Raises:
        CorpusError: a malformed line, a truncated or non-gzip ``.gz`` file, or bytes that are not UTF-8.
        FileNotFoundError: no file at ``path``.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (gzip.BadGzipFile, EOFError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path} cannot be read as {'gzip ' if path.suffix == '.gz' else ''}UTF-8 JSONL ({e}). Fix: "
                          "replace it with an intact copy (for a registered file: python -m shared.data hh_rlhf)") from e
    return hh_pairs_from_lines(lines, str(path))


def read_ch07_pairs(path: str | Path, template: str = "alpaca",
                    tokenizer: Any = None) -> tuple[list[PreferencePair], Counter]:
    """The pairs of a ch07 preference JSON file (a list of records); see :func:`ch07_pairs_from_records`.

    Raises:
        CorpusError: the file is not a JSON list, or a record is malformed.
    """
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(records, list):
        raise CorpusError(f"{path} holds a {type(records).__name__}; expected a list of preference records")
    return ch07_pairs_from_records(records, template, tokenizer, str(path))


def load_hh_pairs() -> tuple[list[PreferencePair], Counter]:
    """HH-RLHF harmless-base test pairs from the registry (fetched and verified on first use), with drop counts.

    Raises:
        DatasetError: the file cannot be fetched or fails its checksum.
        CorpusError: a malformed line.
    """
    return read_hh_pairs(source_file("hh_rlhf", PREFERENCE_FILES["hh_rlhf"]))


def load_ch07_pairs(template: str = "alpaca", tokenizer: Any = None) -> tuple[list[PreferencePair], Counter]:
    """LLMs-from-scratch ch07 preference pairs from the registry, prompts formatted with ``template``, with drop
    counts.

    Raises:
        DatasetError: the file cannot be fetched or fails its checksum.
        CorpusError: a malformed record.
        ConfigError, TokenizerError: see :func:`shared.data.prompts.format_prompt`.
    """
    name = "llms_from_scratch_ch07"
    return read_ch07_pairs(source_file(name, PREFERENCE_FILES[name]), template, tokenizer)


def load_pairs(sources: Sequence[str], template: str = "alpaca",
               tokenizer: Any = None) -> tuple[list[PreferencePair], dict[str, Counter]]:
    """The pairs of several sources, concatenated in the order named, and each source's drop counts.

    ``template`` and ``tokenizer`` format the ch07 prompts; HH prompts are the dialogue itself.

    Raises:
        CorpusError: no source named, an unknown one (the message lists them), or one named twice.
        DatasetError, ConfigError, TokenizerError: see :func:`load_hh_pairs`, :func:`load_ch07_pairs`.
    """
    known = ", ".join(PREFERENCE_SOURCES)
    if not sources:
        raise CorpusError(f"no preference source named: list at least one of {known}")
    unknown = [s for s in sources if s not in PREFERENCE_SOURCES]
    if unknown:
        raise CorpusError(f"unknown preference source(s) {', '.join(map(repr, unknown))}. Known: {known}")
    if len(set(sources)) != len(sources):
        raise CorpusError(f"a preference source is named twice in {list(sources)}: name each once")
    pairs: list[PreferencePair] = []
    dropped: dict[str, Counter] = {}
    for name in sources:
        got, dropped[name] = load_hh_pairs() if name == "hh_rlhf" else load_ch07_pairs(template, tokenizer)
        pairs += got
    return pairs, dropped


def _by_source(pairs: Iterable[PreferencePair]) -> dict[str, list[PreferencePair]]:
    groups: dict[str, list[PreferencePair]] = {}
    for p in pairs:
        groups.setdefault(p.source, []).append(p)
    return groups


def _lengths(texts: Sequence[str]) -> dict[str, float]:
    n = [len(t) for t in texts]
    return {"mean": round(statistics.fmean(n), 1), "median": statistics.median(n), "max": max(n)}


def pair_stats(pairs: Sequence[PreferencePair]) -> dict[str, dict]:
    """Per source (in order of first appearance): pairs, unique prompts, character lengths (mean, median, max) of
    prompt / chosen / rejected, and the share of pairs whose chosen response is longer than the rejected one."""
    out: dict[str, dict] = {}
    for source, group in _by_source(pairs).items():
        out[source] = {"pairs": len(group), "unique_prompts": len({p.prompt for p in group}),
                       "chars": {side: _lengths([getattr(p, side) for p in group])
                                 for side in ("prompt", "chosen", "rejected")},
                       "chosen_longer_share": sum(len(p.chosen) > len(p.rejected) for p in group) / len(group)}
    return out


def prompt_rank(source: str, prompt: str) -> str:
    """The key that orders prompts for :func:`split_by_prompt`: sha256 of ``source + "\\x00" + prompt`` (hex)."""
    return hashlib.sha256(f"{source}\x00{prompt}".encode()).hexdigest()


def _val_prompts(source: str, group: Sequence[PreferencePair], n: int) -> set[str]:
    per_prompt = Counter(p.prompt for p in group)
    val: set[str] = set()
    held = 0
    for prompt in sorted(per_prompt, key=lambda q: (prompt_rank(source, q), q)):
        if held >= n:
            break
        val.add(prompt)
        held += per_prompt[prompt]
    if held < n or held == len(group):
        raise ValueError(f"source {source} has {len(group)} pairs over {len(per_prompt)} distinct prompts: too few to "
                         f"put >= {n} pairs in val and leave train non-empty. Fix: lower val_pairs_per_source")
    return val


def split_by_prompt(pairs: Sequence[PreferencePair],
                    val_pairs_per_source: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, val), each in input order: a fixed split by prompt, the same for any order of ``pairs`` and any seed.

    Within each source the distinct prompts are ranked by :func:`prompt_rank`; the lowest-ranked go to val until it
    holds at least ``val_pairs_per_source`` pairs. All pairs of one prompt land on the same side.

    Raises:
        ValueError: ``val_pairs_per_source`` is negative, or a source has too few prompts to fill val and leave train
            non-empty.
    """
    if val_pairs_per_source < 0:
        raise ValueError(f"val_pairs_per_source={val_pairs_per_source} is negative: use 0 or more")
    val_keys = {(source, prompt) for source, group in _by_source(pairs).items()
                for prompt in _val_prompts(source, group, val_pairs_per_source)}
    train = [p for p in pairs if (p.source, p.prompt) not in val_keys]
    val = [p for p in pairs if (p.source, p.prompt) in val_keys]
    return train, val


def _normalise(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'").lower()


def politeness(text: str) -> int:
    """Polite markers minus impolite markers in ``text`` (:data:`POLITE_MARKERS`, :data:`IMPOLITE_MARKERS`;
    case-insensitive whole words, curly apostrophes read as straight ones)."""
    t = _normalise(text)
    return len(_POLITE.findall(t)) - len(_IMPOLITE.findall(t))


def deflection_score(text: str) -> int:
    """How many :data:`DEFLECTION_MARKERS` ``text`` holds (case-insensitive whole words/phrases)."""
    return len(_DEFLECTION.findall(_normalise(text)))


def deflects(text: str) -> bool:
    """Whether ``text`` refuses, warns or steers away: it holds at least one :data:`DEFLECTION_MARKERS` phrase."""
    return deflection_score(text) > 0


def deflection_rates(pairs: Sequence[PreferencePair]) -> tuple[float, float]:
    """(share of chosen responses that deflect, share of rejected responses that deflect) over ``pairs`` (pass the
    HH pairs: ch07 answers do not deflect).

    Raises:
        ValueError: no pairs.
    """
    if not pairs:
        raise ValueError("deflection_rates needs at least one pair")
    return (sum(deflects(p.chosen) for p in pairs) / len(pairs), sum(deflects(p.rejected) for p in pairs) / len(pairs))


@dataclass(frozen=True)
class Rule:
    """One rubric rule.

    Attributes:
        name: the check's name (a key of :data:`RULE_CHECKS`).
        text: the rule in one sentence.
        applies_to: the source whose pairs it judges.
        min_share: the share of pairs that must pass for the data to be called aligned with the rule.
    """

    name: str
    text: str
    applies_to: str
    min_share: float


def _distinct(p: PreferencePair) -> bool:
    return " ".join(p.chosen.split()) != " ".join(p.rejected.split())


RULE_CHECKS: dict[str, Callable[[PreferencePair], bool]] = {
    "distinct": _distinct,
    "non_empty": lambda p: bool(p.chosen.strip() and p.rejected.strip()),
    "more_polite": lambda p: politeness(p.chosen) > politeness(p.rejected),
    "chosen_deflects_no_less": lambda p: deflection_score(p.chosen) >= deflection_score(p.rejected),
}

_DISTINCT = "Chosen and rejected differ once whitespace is normalised (otherwise the pair teaches nothing)."
_NON_EMPTY = "Chosen and rejected both hold text."
RUBRIC: tuple[Rule, ...] = (
    Rule("distinct", _DISTINCT, "llms_from_scratch_ch07", 1.0),
    Rule("non_empty", _NON_EMPTY, "llms_from_scratch_ch07", 1.0),
    # measured on the 1,094 kept pairs (alpaca prompts): 0.666 pass, 0.006 have chosen LESS polite, the rest tie
    # (same score, mostly answers that differ in words no lexicon lists); the lexicons were read off this data, so
    # 0.666 is an in-sample number, and the bar sits below it
    Rule("more_polite", "The chosen answer scores higher than the rejected one on the politeness lexicon (count of "
                        "polite markers such as 'please', 'kindly', 'if I may' minus impolite ones such as "
                        "'obviously', 'just', 'freaking').", "llms_from_scratch_ch07", 0.6),
    Rule("distinct", _DISTINCT, "hh_rlhf", 1.0),
    Rule("non_empty", _NON_EMPTY, "hh_rlhf", 1.0),
    # measured on the 2,303 kept pairs: 0.910 pass (chosen deflects more in 0.147, less in 0.090, ties 0.763: most
    # final turns hold no marker). With chosen and rejected swapped the same pairs give 0.853, so the bar 0.88 sits
    # between the two: it tells the real labels from swapped ones. Deflection rates: chosen 0.172, rejected 0.117.
    Rule("chosen_deflects_no_less", "The chosen final turn holds at least as many refusal/deflection phrases ('I'm "
                                    "sorry', 'I can't', 'illegal', 'instead', ...) as the rejected one.", "hh_rlhf",
         0.88),
)


def rule_passes(rule_name: str, pair: PreferencePair) -> bool:
    """Whether ``pair`` passes the rubric check ``rule_name`` (a key of :data:`RULE_CHECKS`).

    Raises:
        KeyError: an unknown rule (the message lists them).
    """
    if rule_name not in RULE_CHECKS:
        raise KeyError(f"unknown rubric rule '{rule_name}'. Known: {', '.join(RULE_CHECKS)}")
    return RULE_CHECKS[rule_name](pair)


def rubric_shares(pairs: Sequence[PreferencePair]) -> list[dict]:
    """For each rule of :data:`RUBRIC` whose source is present in ``pairs``: ``source``, ``rule``, ``text``,
    ``passed``, ``total``, ``share``, ``min_share`` and ``ok`` (``share >= min_share``)."""
    groups = _by_source(pairs)
    out = []
    for rule in RUBRIC:
        group = groups.get(rule.applies_to)
        if not group:
            continue
        passed = sum(rule_passes(rule.name, p) for p in group)
        share = passed / len(group)
        out.append({"source": rule.applies_to, "rule": rule.name, "text": rule.text, "passed": passed,
                    "total": len(group), "share": share, "min_share": rule.min_share, "ok": share >= rule.min_share})
    return out
