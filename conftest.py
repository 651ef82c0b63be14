"""Fixtures shared by every test: hermetic folders, a fake MNIST and a fake CIFAR-10 in a mirror, the gpu marker."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CI", "1")  # no progress bars in test output


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _hermetic_outputs(tmp_path_factory, monkeypatch):
    """No test writes into the checkout's runs/, models/ or docs/weekly-logs/ (the data cache stays shared)."""
    out = tmp_path_factory.mktemp("outputs")
    for var in ("AIFS_RUNS_ROOT", "AIFS_MODELS_ROOT", "AIFS_LOGS_ROOT"):
        monkeypatch.setenv(var, str(out / var.lower()))


@pytest.fixture
def aifs_dirs(tmp_path, monkeypatch):
    """Point the data cache, runs, models and logs at a temporary folder; no mirror, offline."""
    dirs = {name: tmp_path / name for name in ("data", "runs", "models", "logs", "mirror")}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setenv("AIFS_DATA_ROOT", str(dirs["data"]))
    monkeypatch.setenv("AIFS_RUNS_ROOT", str(dirs["runs"]))
    monkeypatch.setenv("AIFS_MODELS_ROOT", str(dirs["models"]))
    monkeypatch.setenv("AIFS_LOGS_ROOT", str(dirs["logs"]))
    monkeypatch.delenv("AIFS_DATA_MIRROR", raising=False)
    monkeypatch.setenv("AIFS_OFFLINE", "1")
    return dirs


def _register_fake(spec, mirror, monkeypatch):
    from shared.data import registry

    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    monkeypatch.setenv("AIFS_DATA_MIRROR", str(mirror))
    return spec


@pytest.fixture
def fake_mnist(aifs_dirs, monkeypatch):
    """A registered ``fake_mnist`` dataset (600 train / 200 test) served from a temporary mirror."""
    from shared.testing import write_fake_mnist

    return _register_fake(write_fake_mnist(aifs_dirs["mirror"]), aifs_dirs["mirror"], monkeypatch)


@pytest.fixture
def fake_cifar(aifs_dirs, monkeypatch):
    """A registered ``fake_cifar10`` dataset (5 x 100 train / 100 test) served from a temporary mirror."""
    from shared.testing import write_fake_cifar

    return _register_fake(write_fake_cifar(aifs_dirs["mirror"]), aifs_dirs["mirror"], monkeypatch)


@pytest.fixture
def fake_text(aifs_dirs, monkeypatch):
    """A registered ``fake_text`` corpus (20k characters of repeated lines) served from a temporary mirror."""
    from shared.testing import write_fake_text

    return _register_fake(write_fake_text(aifs_dirs["mirror"]), aifs_dirs["mirror"], monkeypatch)
