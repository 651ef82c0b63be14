import pytest
import torch

from shared.data.fetch import DatasetError, prepare
from shared.data.mnist import MNISTConfig, load_mnist
from shared.data.sampling import batch_loader


def test_image_and_flat_batches_have_the_right_shapes_and_range(fake_mnist):
    img = load_mnist(MNISTConfig(dataset="fake_mnist", val_size=100, view="image"), fake_mnist)
    flat = load_mnist(MNISTConfig(dataset="fake_mnist", val_size=100, view="flat"), fake_mnist)
    x, y = next(iter(batch_loader(img.train, 32, shuffle=True)))
    assert x.shape == (32, 1, 28, 28)
    assert x.dtype == torch.float32
    assert y.shape == (32,)
    assert y.dtype == torch.int64
    assert y.min() >= 0
    assert y.max() <= 9
    xf, _ = next(iter(batch_loader(flat.train, 32, shuffle=True)))
    assert xf.shape == (32, 784)
    xt = img.train.tensors[0]
    assert abs(xt.mean().item()) < 1e-4
    assert abs(xt.std().item() - 1) < 1e-3
    lo, hi = -img.mean / img.std, (1 - img.mean) / img.std
    assert xt.min().item() >= lo - 1e-5
    assert xt.max().item() <= hi + 1e-5


def test_split_is_disjoint_fixed_and_sized(fake_mnist):
    cfg = MNISTConfig(dataset="fake_mnist", val_size=100)
    a, b = load_mnist(cfg, fake_mnist), load_mnist(cfg, fake_mnist)
    assert len(a.train) == 500
    assert len(a.val) == 100
    assert len(a.test) == 200
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    train_rows = {r.numpy().tobytes() for r in a.raw_train}
    val_raw = (a.val.tensors[0] * a.std + a.mean).mul(255).round().clamp(0, 255).to(torch.uint8).squeeze(1)
    assert not any(r.numpy().tobytes() in train_rows for r in val_raw)


def test_bad_val_size_and_view_are_named(fake_mnist):
    with pytest.raises(ValueError, match="val_size"):
        load_mnist(MNISTConfig(dataset="fake_mnist", val_size=600), fake_mnist)
    with pytest.raises(ValueError, match="data.view"):
        load_mnist(MNISTConfig(dataset="fake_mnist", view="cube"), fake_mnist)


def _real_mnist_or_skip():
    try:
        prepare("mnist")
    except DatasetError as e:
        pytest.skip(f"real MNIST not available here (set AIFS_DATA_MIRROR or go online): {str(e)[:120]}")


def test_real_mnist_splits_and_ranges():
    _real_mnist_or_skip()
    s = load_mnist(MNISTConfig())
    assert (len(s.train), len(s.val), len(s.test)) == (55000, 5000, 10000)
    assert s.raw_train.dtype == torch.uint8
    assert s.raw_train.max() == 255
    assert s.raw_train.min() == 0
    assert 0.12 < s.mean < 0.14
    assert 0.30 < s.std < 0.32
    assert torch.bincount(s.train.tensors[1], minlength=10).min() > 4000
