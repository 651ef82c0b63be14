"""The lr search extends its grid past an edge until the best lr is inside it; the held-out slice."""

import numpy as np
import pytest

from week05_lm_pipeline.experiments import ShortRun, search_lr, split_holdout


def fake_run(best: float, diverge_above: float = float("inf")):
    tried = []

    def run(lr: float) -> ShortRun:
        tried.append(lr)
        diverged = lr > diverge_above
        loss = None if diverged else 5 + (np.log(lr) - np.log(best)) ** 2
        return ShortRun("g", f"lr {lr:g}", 0, "", loss, 3 if diverged else None, 9.0, 0.1, loss, lr)

    return run, tried


def test_a_best_inside_the_grid_needs_no_extension():
    run, tried = fake_run(best=2e-3)
    s = search_lr(run, [1e-3, 2e-3, 4e-3])
    assert (s.best_lr, s.inside, tried) == (2e-3, True, [1e-3, 2e-3, 4e-3])


def test_a_best_at_the_upper_edge_extends_upward_until_inside():
    run, tried = fake_run(best=16e-3)
    s = search_lr(run, [1e-3, 2e-3, 4e-3])
    assert s.best_lr == pytest.approx(16e-3)
    assert s.inside
    assert tried[3:] == pytest.approx([8e-3, 16e-3, 32e-3])


def test_diverged_runs_rank_last_and_the_search_stops_after_max_extensions():
    run, _ = fake_run(best=1.0, diverge_above=0.5)
    s = search_lr(run, [0.1, 0.2], max_extensions=2)  # the best finite lr is always at the edge below the divergence
    assert s.best_lr == pytest.approx(0.4)
    assert s.inside  # 0.8 diverged: it is still a tried lr above the best
    run, _ = fake_run(best=100.0)
    edge = search_lr(run, [0.1, 0.2], max_extensions=1)
    assert not edge.inside
    assert edge.grid == pytest.approx([0.1, 0.2, 0.4])


def test_split_holdout_never_overlaps_and_refuses_a_bad_size():
    train, held = split_holdout(np.arange(100), 10)
    assert (len(train), len(held), held[0]) == (90, 10, 90)
    with pytest.raises(ValueError, match="short.select_tokens"):
        split_holdout(np.arange(100), 60)
    with pytest.raises(ValueError, match="short.select_tokens"):
        split_holdout(np.arange(100), 0)
