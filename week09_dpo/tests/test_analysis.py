"""Preference accuracy from per-pair scores, and the SFT-only vs SFT+DPO decision."""

from __future__ import annotations

import pytest

from shared.tasks.dpo import PairScores
from week09_dpo.analysis import accuracy_rows, decide
from week09_dpo.config import Week09Config


class Res:
    def __init__(self, heldout):
        self.heldout = heldout


def scores(deltas, sources):
    """Pairs whose DPO log-prob gap exceeds the SFT model's by ``deltas`` (the reference = SFT)."""
    n = len(deltas)
    return PairScores([f"p{i}" for i in range(n)], sources, [-10.0 + d for d in deltas], [-12.0] * n, [-10.0] * n,
                      [-12.0] * n, [5] * n, [5] * n, [0.1] * n)


def test_reward_accuracy_is_the_share_of_pairs_dpo_prefers_more_than_sft_with_a_sign_test():
    cfg = Week09Config()
    deltas = [1.0] * 9 + [-1.0] + [0.5] * 5 + [-0.5] * 5
    rows, hits, p, per = accuracy_rows(Res(scores(deltas, ["a"] * 10 + ["b"] * 10)), cfg)
    assert hits == [1.0] * 9 + [0.0] + [1.0] * 5 + [0.0] * 5
    assert per["a"][0] == pytest.approx(0.9)
    assert per["a"][2] == pytest.approx(11 / 1024)  # P(X >= 9 | n=10, 1/2)
    assert per["b"][0] == 0.5
    assert per["b"][2] > 0.5
    assert rows[-1]["pairs"] == "all"
    assert rows[-1]["DPO log-prob acc"] == pytest.approx(1.0)  # -10 + d > -12 for every pair here
    assert 0 < p < 0.05
    assert accuracy_rows(Res(None), cfg)[0] == []


def test_the_decision_needs_a_significant_gain_and_no_significant_harness_drop():
    from shared.evals.paired import paired_harness

    cfg = Week09Config()
    sft = [{"id": i, "compliant": 1, "rougeL": 0.3} for i in range(20)]
    same = paired_harness(sft, sft)
    hits = [1.0] * 9 + [0.0]
    assert decide(hits, 0.01, same, cfg)[0] == "SFT + DPO"
    assert decide(hits, 0.2, same, cfg)[0] == "SFT only"
    decision, why, _ = decide(hits, 0.01, paired_harness(sft, [{**r, "rougeL": 0.1} for r in sft]), cfg)
    assert decision == "SFT only"
    assert "rougeL" in why
    assert decide(hits, 0.01, None, cfg)[0] == "SFT only"
    decision, why, _ = decide(hits, 0.01, same, cfg, ["collapse"])
    assert decision == "SFT + DPO"
    assert "flag collapse" in why
