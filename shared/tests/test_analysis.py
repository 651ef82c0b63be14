import math

import pytest
import torch
from torch.utils.data import TensorDataset

from shared.analysis import (
    confusion_fit_signals,
    confusion_matrix,
    confusion_pairs,
    pair_signal,
    plot_confusion,
    plot_error_grid,
    predict,
    rate_gap_z,
)
from shared.data.sampling import batch_loader

CLASSES = ("cat", "dog", "ship")


def test_confusion_matrix_and_pairs_on_a_known_prediction_set():
    target = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 1, 2, 1, 0, 1, 2, 2, 2])  # cat->dog x2, cat->ship x1, dog->cat x1
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 2, 1], [1, 2, 0], [0, 0, 3]]
    assert int(cm.sum()) == 10
    pairs = confusion_pairs(cm, CLASSES)
    assert pairs[["true", "predicted", "count"]].values.tolist() == [["cat", "dog", 2], ["cat", "ship", 1], ["dog", "cat", 1]]
    assert pairs["share of errors"].sum() == 1.0
    assert pairs.loc[0, "true-class error rate"] == 0.5


def test_confusion_pairs_top_none_returns_every_pair_with_an_error():
    cm = torch.tensor([[5, 1, 2], [3, 5, 0], [0, 4, 5]])
    assert len(confusion_pairs(cm, CLASSES, top=2)) == 2
    assert confusion_pairs(cm, CLASSES, top=None)["count"].tolist() == [4, 3, 2, 1]


def test_rate_gap_z_is_the_pooled_two_proportion_statistic():
    # 40/100 vs 35/100: pooled p = 0.375, se = sqrt(p (1 - p) (1/100 + 1/100))
    assert rate_gap_z(0.40, 100, 0.35, 100) == pytest.approx(0.05 / math.sqrt(0.375 * 0.625 * 0.02), rel=1e-12)
    assert rate_gap_z(0.30, math.inf, 0.01, 100) == pytest.approx(0.29 / math.sqrt(0.3 * 0.7 / 100), rel=1e-12)
    assert rate_gap_z(0.0, 100, 0.0, 100) == 0.0  # undefined: no difference claimed


def test_pair_signal_overfitting_underfitting_or_none():
    assert pair_signal(0.40, 100, 2, 100).kind == "overfitting"  # 40% on test, 2% on train
    assert pair_signal(0.40, 100, 35, 100).kind == "underfitting"  # confused on train too
    assert pair_signal(0.05, 100, 1, 100).kind == ""  # 5 vs 1: too few to tell
    cm_test, cm_train = torch.tensor([[60, 40], [5, 95]]), torch.tensor([[65, 35], [1, 99]])
    df = confusion_fit_signals(cm_test, cm_train, ["cat", "dog"])
    assert df.signal.tolist() == ["underfitting", ""]
    assert df["fit signal"].iloc[0].startswith("underfitting: confused on training images too (35 images")
    assert df["train rate"].tolist() == [0.35, 0.01]


def test_predict_returns_argmax_labels_in_loader_order():
    x = torch.eye(3).repeat(4, 1)  # rows one-hot: the identity "model" predicts the hot index
    y = torch.arange(3).repeat(4)
    pred, target = predict(torch.nn.Identity(), batch_loader(TensorDataset(x, y), 5, shuffle=False), torch.device("cpu"))
    assert torch.equal(pred, y)
    assert torch.equal(target, y)


def test_plots_build_figures_with_the_right_number_of_panels():
    cm = confusion_matrix(torch.tensor([0, 1, 2, 1]), torch.tensor([0, 1, 2, 2]), 3)
    fig = plot_confusion(cm, CLASSES)
    assert len(fig.axes) == 2  # the matrix and its colour bar
    grid = plot_error_grid(torch.rand(30, 3, 8, 8), ["cat"] * 30, ["dog"] * 30, cols=8)
    shown = [ax for ax in grid.axes if ax.images]
    assert len(shown) == 30
    assert shown[0].get_title() == "cat\n→ dog"
