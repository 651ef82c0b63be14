import torch
from torch.utils.data import TensorDataset

from shared.analysis import confusion_matrix, confusion_pairs, plot_confusion, plot_error_grid, predict
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
