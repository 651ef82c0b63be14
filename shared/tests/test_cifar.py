"""CIFAR-10: the verified loader (fake and, where the mirror is present, real data) and batch augmentation."""

import pytest
import torch

from shared.data.cifar import CIFARConfig, load_cifar10, random_crop_flip
from shared.data.fetch import DatasetError
from shared.testing import mirror_has


def test_fake_cifar_splits_are_disjoint_normalised_and_shaped(fake_cifar):
    s = load_cifar10(CIFARConfig(dataset="fake_cifar10", val_size=100))
    assert s.train.tensors[0].shape == (400, 3, 32, 32)
    assert s.train.tensors[0].dtype == torch.float32
    assert s.val.tensors[0].shape == (100, 3, 32, 32)
    assert s.test.tensors[0].shape == (100, 3, 32, 32)
    x = s.train.tensors[0]
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)
    train_rows = {r.numpy().tobytes() for r in x}
    assert not any(r.numpy().tobytes() in train_rows for r in s.val.tensors[0])  # random noise: no image twice


def test_a_corrupt_batch_file_is_named(fake_cifar, aifs_dirs):
    load_cifar10(CIFARConfig(dataset="fake_cifar10", val_size=100))  # fills the cache
    cached = aifs_dirs["data"] / "fake_cifar10" / "cifar-10-batches-py" / "data_batch_3"
    cached.write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar10(CIFARConfig(dataset="fake_cifar10", val_size=100))


def _windows(padded, h, w):
    """Every (H, W) window of a padded (C, H+2p, W+2p) image."""
    ph, pw = padded.shape[1] - h, padded.shape[2] - w
    return [padded[:, dy : dy + h, dx : dx + w] for dy in range(ph + 1) for dx in range(pw + 1)]


def test_crop_flip_keeps_shape_and_dtype_and_is_the_identity_with_p0():
    x = torch.randn(7, 3, 32, 32)
    assert torch.equal(random_crop_flip(x, p_crop=0, p_flip=0), x)
    assert torch.equal(random_crop_flip(x, p_crop=0, p_flip=1), x.flip(3))
    out = random_crop_flip(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    u8 = torch.randint(0, 255, (3, 3, 8, 8), dtype=torch.uint8)
    assert random_crop_flip(u8, padding=2).dtype == torch.uint8


def test_every_crop_is_a_window_of_the_padded_image():
    x = torch.arange(5 * 3 * 32 * 32, dtype=torch.float32).view(5, 3, 32, 32) + 1  # unique, non-zero pixels
    out = random_crop_flip(x, padding=4, p_crop=1.0, p_flip=0.0, generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(5):
        assert any(torch.equal(out[i], win) for win in _windows(padded[i], 32, 32)), f"image {i} is not a crop"
    assert not torch.equal(out, x)  # 5 draws from 81 shifts: some image moved


@pytest.mark.skipif(not mirror_has("cifar10"), reason="real CIFAR-10 mirror not available")
def test_real_cifar10_has_the_known_statistics():
    s = load_cifar10(CIFARConfig())
    assert (len(s.train), len(s.val), len(s.test)) == (45000, 5000, 10000)
    y = torch.cat([s.train.tensors[1], s.val.tensors[1]])
    assert torch.bincount(y).tolist() == [5000] * 10
    assert torch.bincount(s.test.tensors[1]).tolist() == [1000] * 10
    # the widely quoted CIFAR-10 channel means (of all 50k training images): 0.4914, 0.4822, 0.4465
    torch.testing.assert_close(torch.tensor(s.mean), torch.tensor([0.4914, 0.4822, 0.4465]), atol=2e-3, rtol=0)


def test_flipped_bytes_in_a_cached_batch_are_an_error_not_silent_data(fake_cifar, aifs_dirs):
    """The pickles are read straight from the cache, which is verified on every load: a byte flipped inside the
    image data (the pickle still loads) is caught by its checksum, never trained on."""
    cfg = CIFARConfig(dataset="fake_cifar10", val_size=100)
    load_cifar10(cfg)
    cached = aifs_dirs["data"] / "fake_cifar10" / "cifar-10-batches-py" / "data_batch_2"
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0x01
    cached.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"checksum mismatch for fake_cifar10/cifar-10-batches-py/data_batch_2 in "
                                           r"the cache .*python -m shared.data fake_cifar10"):
        load_cifar10(cfg)
