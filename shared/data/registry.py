"""The dataset registry: name -> files (relative paths, checksums, source URLs) and licence.

Every dataset the curriculum reads is declared here once. :mod:`shared.data.fetch` puts the files
into the cache (``datasets/raw/<relpath>``) from the cache itself, a mirror folder, or the source
URLs, always verifying the sha256 below. The relative paths are the same in the cache, in the
mirror (``$AIFS_DATA_MIRROR/<relpath>``) and, where possible, in the source layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset.

    Attributes:
        relpath: path below the cache root and the mirror root, e.g. ``mnist/MNIST/raw/x.gz``.
        sha256: expected sha256 (hex) of the file's bytes.
        size: expected size in bytes.
        urls: source URLs tried in order when the file has to be downloaded.
    """

    relpath: str
    sha256: str
    size: int
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its files, licence, and a one-line description."""

    name: str
    files: tuple[FileSpec, ...]
    license: str
    description: str
    homepage: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Total size of the dataset's files in bytes."""
        return sum(f.size for f in self.files)


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")


def _mnist(filename: str, sha256: str, size: int) -> FileSpec:
    return FileSpec(f"mnist/MNIST/raw/{filename}", sha256, size, tuple(m + filename for m in _MNIST_MIRRORS))


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mnist",
            files=(
                _mnist("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
                _mnist("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
                _mnist("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
                _mnist("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
            ),
            license="CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)",
            description="MNIST handwritten digits: 60k train + 10k test, 28x28 grey, gzip'd IDX",
            homepage="http://yann.lecun.com/exdb/mnist/",
        ),
        DatasetSpec(
            name="tiny_shakespeare",
            files=(
                FileSpec(
                    "tiny_shakespeare/input.txt",
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                    1115394,
                    ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
                ),
            ),
            license="public domain text (char-rnn code: MIT)",
            description="Tiny Shakespeare: 1.1 MB of plays, 65 distinct characters (char-rnn, nanoGPT)",
            homepage="https://github.com/karpathy/char-rnn",
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name.

    Raises:
        KeyError: unknown name; the message lists the registered ones.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataset '{name}'. Registered datasets: {', '.join(sorted(REGISTRY))}") from None
