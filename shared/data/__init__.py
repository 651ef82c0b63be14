"""Datasets: the registry, verified fetching, samplers, and per-dataset loaders."""

from shared.data.fetch import ChecksumError, DatasetError, DatasetUnavailableError, prepare
from shared.data.registry import REGISTRY, DatasetSpec, FileSpec, get_spec

__all__ = [
    "REGISTRY",
    "ChecksumError",
    "DatasetError",
    "DatasetSpec",
    "DatasetUnavailableError",
    "FileSpec",
    "get_spec",
    "prepare",
]
