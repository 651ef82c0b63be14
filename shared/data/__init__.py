"""Datasets: the registry, verified fetching, samplers, and per-dataset loaders (``mnist``, ``cifar``, ``text``), and the LM data path (``corpus`` -> ``tokenizer`` -> ``pack``)."""

from shared.data.fetch import ChecksumError, DatasetError, DatasetUnavailableError, prepare
from shared.data.registry import REGISTRY, ArchiveSpec, DatasetSpec, FileSpec, get_spec

__all__ = [
    "REGISTRY",
    "ArchiveSpec",
    "ChecksumError",
    "DatasetError",
    "DatasetSpec",
    "DatasetUnavailableError",
    "FileSpec",
    "get_spec",
    "prepare",
]
