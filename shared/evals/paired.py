"""Two models on the same eval items: per-metric paired tests with Holm's adjustment (weeks 7 and 9 judge a change
of model this way, never by two means of one run each)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.stats import holm, paired

PAIRED_METRICS = {"compliant": "format compliance", "rougeL": "ROUGE-L"}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def paired_harness(a_items: Sequence[Mapping], b_items: Sequence[Mapping]) -> dict[str, dict]:
    """b against a on the same eval items, per harness metric (format compliance 0/1, ROUGE-L): the paired test
    (:func:`shared.stats.paired`) and its Holm-adjusted one-sided p-values over the metrics (``p_better``: b higher,
    ``p_worse``: b lower).

    Raises:
        ValueError: the two models were scored on different items (ids or order differ).
    """
    ids_a, ids_b = [i["id"] for i in a_items], [i["id"] for i in b_items]
    if ids_a != ids_b:
        raise ValueError("a paired comparison needs both models scored on the same items in the same order")
    tests = {m: paired([float(i[m]) for i in a_items], [float(i[m]) for i in b_items]) for m in PAIRED_METRICS}
    better = holm([t.p_greater for t in tests.values()])
    worse = holm([t.p_less for t in tests.values()])
    return {m: {"test": t, "p_better": pb, "p_worse": pw}
            for (m, t), pb, pw in zip(tests.items(), better, worse, strict=True)}


def describe_paired(result: Mapping[str, dict], fmt: Mapping[str, Any] | None = None) -> str:
    """``"format compliance 70% → 82% (higher on 6 items, lower on 1; p(better) = 0.12, p(worse) = 1)"``, one clause
    per metric (p-values Holm-adjusted)."""
    fmt = fmt or {"compliant": _pct, "rougeL": lambda x: f"{x:.3f}"}
    parts = []
    for m, r in result.items():
        t = r["test"]
        parts.append(f"{PAIRED_METRICS[m]} {fmt[m](t.mean_a)} → {fmt[m](t.mean_b)} (higher on {t.wins} items, lower "
                     f"on {t.losses}; p(better) = {r['p_better']:.3g}, p(worse) = {r['p_worse']:.3g})")
    return "; ".join(parts)
