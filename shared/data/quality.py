"""Heuristic quality filters: the rules of Gopher's MassiveWeb pipeline (Rae et al. 2021,
https://arxiv.org/abs/2112.11446, appendix A.1.1 "quality filtering" and table A1 "repetition removal"), with the
thresholds in config because this corpus is not web text (short instructions and speeches are fine documents).

Each rule is a pure function of one document's text returning its measured value; :func:`apply_filters` runs them
in order and blames a removed document on the first rule it fails, so the counts add up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shared.config import at_least, in_range

BULLETS = ("•", "*", "-", "‣", "◦")
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher's list


@dataclass
class QualityConfig:
    """Gopher's thresholds, loosened where this corpus's documents are short by nature (word counts)."""

    min_words: int = at_least(0, 5)  # Gopher: 50
    max_words: int = at_least(1, 100_000)  # Gopher: 100,000
    min_mean_word_len: float = at_least(0, 3.0)  # Gopher: 3 characters
    max_mean_word_len: float = at_least(0, 10.0)  # Gopher: 10 characters
    max_symbol_ratio: float = at_least(0, 0.1)  # "#" and "..." per word; Gopher: 0.1
    max_bullet_lines: float = in_range(0, 1, 0.9)  # share of lines starting with a bullet; Gopher: 0.9
    max_ellipsis_lines: float = in_range(0, 1, 0.3)  # share of lines ending with "..." or "…"; Gopher: 0.3
    min_alpha_words: float = in_range(0, 1, 0.8)  # share of words with an alphabetic character; Gopher: 0.8
    min_stop_words: int = at_least(0, 1)  # distinct stop words present; Gopher: 2
    max_duplicate_lines: float = in_range(0, 1, 0.3)  # share of non-empty lines that repeat an earlier one; Gopher: 0.3
    rules: list[str] = field(default_factory=lambda: list(RULES))  # which rules run, in this order


def _words(text: str) -> list[str]:
    return text.split()


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def word_count(text: str) -> float:
    return float(len(_words(text)))


def mean_word_length(text: str) -> float:
    words = _words(text)
    return sum(len(w) for w in words) / len(words) if words else 0.0


def symbol_ratio(text: str) -> float:
    """("#" count + "..." / "…" count) per word."""
    words = _words(text)
    symbols = text.count("#") + text.count("...") + text.count("…")
    return symbols / len(words) if words else float("inf")


def bullet_lines(text: str) -> float:
    lines = _lines(text)
    return sum(line.startswith(BULLETS) for line in lines) / len(lines) if lines else 0.0


def ellipsis_lines(text: str) -> float:
    lines = _lines(text)
    return sum(line.endswith(("...", "…")) for line in lines) / len(lines) if lines else 0.0


def alpha_words(text: str) -> float:
    words = _words(text)
    return sum(any(c.isalpha() for c in w) for w in words) / len(words) if words else 0.0


def stop_words(text: str) -> float:
    return float(len(STOP_WORDS & {w.lower().strip(".,;:!?'\"()") for w in _words(text)}))


def duplicate_lines(text: str) -> float:
    """Share of non-empty lines that repeat an earlier line of the document."""
    lines = _lines(text)
    return (len(lines) - len(set(lines))) / len(lines) if lines else 0.0


# rule -> (measure, passes(value, cfg), the criterion in words)
RULES: dict[str, tuple[Callable[[str], float], Callable[[float, QualityConfig], bool], Callable[[QualityConfig], str]]] = {
    "word_count": (word_count, lambda v, c: c.min_words <= v <= c.max_words,
                   lambda c: f"{c.min_words} to {c.max_words:,} words"),
    "mean_word_length": (mean_word_length, lambda v, c: c.min_mean_word_len <= v <= c.max_mean_word_len,
                         lambda c: f"mean word length {c.min_mean_word_len:g} to {c.max_mean_word_len:g}"),
    "symbol_ratio": (symbol_ratio, lambda v, c: v <= c.max_symbol_ratio,
                     lambda c: f"≤ {c.max_symbol_ratio:g} '#'/'...' per word"),
    "bullet_lines": (bullet_lines, lambda v, c: v <= c.max_bullet_lines,
                     lambda c: f"≤ {c.max_bullet_lines:.0%} of lines start with a bullet"),
    "ellipsis_lines": (ellipsis_lines, lambda v, c: v <= c.max_ellipsis_lines,
                       lambda c: f"≤ {c.max_ellipsis_lines:.0%} of lines end with an ellipsis"),
    "alpha_words": (alpha_words, lambda v, c: v >= c.min_alpha_words,
                    lambda c: f"≥ {c.min_alpha_words:.0%} of words have a letter"),
    "stop_words": (stop_words, lambda v, c: v >= c.min_stop_words,
                   lambda c: f"≥ {c.min_stop_words} of Gopher's 8 stop words"),
    "duplicate_lines": (duplicate_lines, lambda v, c: v <= c.max_duplicate_lines,
                        lambda c: f"≤ {c.max_duplicate_lines:.0%} of lines repeat an earlier one"),
}


def check(text: str, rule: str, cfg: QualityConfig) -> tuple[bool, float]:
    """``(passes, measured value)`` of one rule on one document.

    Raises:
        ValueError: an unknown rule (the message lists the known ones).
    """
    if rule not in RULES:
        raise ValueError(f"unknown quality rule {rule!r}. Known: {', '.join(RULES)}")
    measure, passes, _ = RULES[rule]
    value = measure(text)
    return passes(value, cfg), value


@dataclass
class FilterResult:
    """Documents kept, and per rule the documents it removed (index, measured value), first failing rule only."""

    kept: list[int]
    removed: dict[str, list[tuple[int, float]]]

    def criterion(self, rule: str, cfg: QualityConfig) -> str:
        return RULES[rule][2](cfg)


def apply_filters(docs: Sequence[str], cfg: QualityConfig) -> FilterResult:
    """Run ``cfg.rules`` in order on every document.

    Raises:
        ValueError: an unknown rule in ``cfg.rules``.
    """
    for rule in cfg.rules:
        check("", rule, cfg)  # validates the name before any work
    out = FilterResult([], {rule: [] for rule in cfg.rules})
    for i, doc in enumerate(docs):
        for rule in cfg.rules:
            ok, value = check(doc, rule, cfg)
            if not ok:
                out.removed[rule].append((i, value))
                break
        else:
            out.kept.append(i)
    return out
