"""Every registered file agrees with the dataset mirror's MANIFEST.tsv (size and sha256), where a mirror is set."""

import csv
import os
from pathlib import Path

import pytest

from shared.data.fetch import MIRROR_ENV
from shared.data.registry import REGISTRY


def _manifest() -> dict[str, dict[str, str]]:
    mirror = os.environ.get(MIRROR_ENV)
    path = Path(mirror) / "MANIFEST.tsv" if mirror else None
    if path is None or not path.is_file():
        pytest.skip(f"needs a dataset mirror with a MANIFEST.tsv (set {MIRROR_ENV})")
    with path.open(newline="") as f:
        return {row["relative_path"]: row for row in csv.DictReader(f, delimiter="\t")}


def test_registered_files_match_the_mirror_manifest():
    manifest = _manifest()
    checked = 0
    for spec in REGISTRY.values():
        for f in spec.files:
            if f.relpath not in manifest:
                continue  # not mirrored (TinyStories, fetched on demand)
            row = manifest[f.relpath]
            assert int(row["bytes"]) == f.size, f.relpath
            assert row["sha256"] in (f.sha256, ""), f.relpath
            checked += 1
    assert checked >= len(manifest) - 1  # every mirrored file is registered (allowing one the project does not read)


def test_every_registered_file_has_a_source_url():
    for spec in REGISTRY.values():
        for f in spec.files:
            assert f.urls or spec.archive, f"{spec.name}: {f.relpath} has no URL to download it from"
            assert not f.urls or f.urls[0].startswith("https://"), f"{f.relpath}: the first URL tried is not https"
