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


def test_an_unpacked_idx_file_is_never_read_so_flipped_bytes_in_it_change_nothing(fake_mnist, aifs_dirs):
    """Older code unpacked the .gz next to itself and trusted the copy when newer: flipped label bytes there were
    trained on while the .gz still verified. Now only the verified .gz is read (decompressed in memory)."""
    import gzip
    import os

    from shared.data.mnist import load_raw
    from shared.testing import fake_mnist_arrays

    cfg = MNISTConfig(dataset="fake_mnist", val_size=100)
    before = load_mnist(cfg, fake_mnist)
    raw = aifs_dirs["data"] / "fake_mnist" / "MNIST" / "raw"
    for gz in raw.glob("*.gz"):  # a stale unpacked copy of each file, newer than its .gz, with flipped bytes
        unpacked = bytearray(gzip.decompress(gz.read_bytes()))
        unpacked[-50:] = bytes(b ^ 0x01 for b in unpacked[-50:])
        gz.with_suffix("").write_bytes(bytes(unpacked))
        os.utime(gz, (0, 0))
    after = load_mnist(cfg, fake_mnist)
    for a, b in zip((before.train, before.val, before.test), (after.train, after.val, after.test), strict=True):
        assert torch.equal(a.tensors[0], b.tensors[0])
        assert torch.equal(a.tensors[1], b.tensors[1])
    images, labels = fake_mnist_arrays(600, 0)
    x, y, _, _ = load_raw(fake_mnist)
    assert torch.equal(x, torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels).long())


def test_a_corrupt_archive_is_an_error_naming_the_repair_not_silent_data(fake_mnist, aifs_dirs):
    load_mnist(MNISTConfig(dataset="fake_mnist", val_size=100), fake_mnist)
    gz = aifs_dirs["data"] / fake_mnist.files[1].relpath  # the training labels
    data = bytearray(gz.read_bytes())
    data[-20] ^= 0x01
    gz.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.gz.*python -m shared.data fake_mnist"):
        load_mnist(MNISTConfig(dataset="fake_mnist", val_size=100), fake_mnist)


def test_read_idx_refuses_a_file_that_is_not_uint8_idx(tmp_path):
    import gzip

    from shared.data.mnist import read_idx

    bad = tmp_path / "x-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc"))  # 0x0d: float32
    with pytest.raises(DatasetError, match="not a uint8 IDX file"):
        read_idx(bad)
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc"))  # 3 of 5 bytes
    with pytest.raises(DatasetError, match=r"declares shape \(5,\), its data holds 3 bytes"):
        read_idx(bad)
    bad.write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match="not a readable gzip file"):
        read_idx(bad)
