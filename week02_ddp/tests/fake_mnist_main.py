"""Week 2's entry point on the fake MNIST that a test wrote into ``$AIFS_DATA_MIRROR``, for child processes.

``python fake_mnist_main.py --profile smoke ...`` (one process, no torchrun) or
``torchrun --standalone --nproc-per-node=1 fake_mnist_main.py ...``: a fresh interpreter starts with the default
registry, so this registers ``fake_mnist`` from the files in the mirror, then runs ``week02_ddp``'s ``main``
exactly as ``python -m week02_ddp`` would.
"""

import hashlib
import os
import sys
from pathlib import Path

from shared.cli import run_week
from shared.data import registry
from shared.data.registry import DatasetSpec, FileSpec


def register_fake_mnist() -> None:
    raw = Path(os.environ["AIFS_DATA_MIRROR"]) / "fake_mnist" / "MNIST" / "raw"
    files = tuple(FileSpec(f"fake_mnist/MNIST/raw/{p.name}", hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
                  for p in sorted(raw.glob("*.gz")))
    registry.REGISTRY["fake_mnist"] = DatasetSpec("fake_mnist", files, license="generated", description="fake MNIST")


if __name__ == "__main__":
    from week02_ddp.__main__ import main

    register_fake_mnist()
    sys.exit(run_week(main))
