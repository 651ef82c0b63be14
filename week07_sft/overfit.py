"""Over-fitting on purpose: several epochs of a small subset, the step where val loss turns up, and memorisation.

The onset is the eval step with the lowest val loss, provided the val loss then rises: by more than ``tol``
(relative), or at ``patience`` consecutive evals in a row (the val set is fixed and the eval deterministic, so a
steady climb is signal, not noise), while the train loss keeps falling: past it the model fits its few examples
better and everything else worse.
Memorisation (Carlini et al. 2021, https://arxiv.org/abs/2012.07805, in its simplest form): the share of prompts
whose greedy answer reproduces the reference (ROUGE-L ≥ ``threshold``), on the training prompts the model saw vs
eval prompts it never saw; a large gap is memorised text, not learned skill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Onset:
    """Where val loss turned up (None: it did not within the run)."""

    step: int | None
    best_val: float
    last_val: float
    rise: float  # (last val - best val) / best val
    train_fell_after: bool  # the train loss at the end is below its value at the onset


def overfit_onset(evals: Sequence[dict[str, float]], tol: float = 0.01, patience: int = 3) -> Onset:
    """The over-fitting onset of eval rows ``{"step", "val_loss", "train_loss"}`` (in step order).

    Raises:
        ValueError: fewer than 3 evals (no turn can be seen) or rows without ``val_loss``/``train_loss``.
    """
    if len(evals) < 3:
        raise ValueError(f"{len(evals)} evals: at least 3 are needed to see the val loss turn up")
    if any("val_loss" not in e or "train_loss" not in e for e in evals):
        raise ValueError("every eval row needs val_loss and train_loss (set sft.train_eval_examples > 0)")
    i = min(range(len(evals)), key=lambda k: evals[k]["val_loss"])
    best, last = evals[i]["val_loss"], evals[-1]["val_loss"]
    later = max((e["val_loss"] for e in evals[i + 1:]), default=best)
    rise = (later - best) / best
    after = [e["val_loss"] for e in evals[i:]]
    steps = zip(after[:patience], after[1:patience + 1], strict=True)
    climbs = len(after) > patience and all(b > a for a, b in steps)
    turned = i < len(evals) - 1 and (rise > tol or climbs)
    fell = evals[-1]["train_loss"] < evals[i]["train_loss"]
    return Onset(int(evals[i]["step"]) if turned else None, best, last, (last - best) / best, fell)


def memorisation_rate(rows: Sequence[dict], threshold: float) -> float:
    """Share of harness rows whose answer has ROUGE-L ≥ ``threshold`` against the reference."""
    return sum(r["rougeL"] >= threshold for r in rows) / len(rows) if rows else float("nan")
