"""Data-version manifests: what a packed data version was made from, how, and the hashes that prove it.

A manifest (``manifest.json`` beside the packed files) records the source files (below the dataset cache, with
sha256 and size), every filter with its parameters and what it removed, document and token counts, the tokenizer's
sha256, and each packed file's sha256 and size. A run names its manifest in its config, so a result traces back to
the exact bytes it trained on; :func:`verify_manifest` re-hashes every file and names the first that changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.atomic import atomic_write_text
from shared.data.fetch import DatasetError, sha256sum
from shared.paths import data_root

MANIFEST_NAME = "manifest.json"
VERSION = 1  # of the manifest format


class ManifestError(DatasetError):
    """A manifest is missing or malformed, or a file it describes changed."""


def file_entry(path: Path, relative_to: Path) -> dict[str, Any]:
    """``{"path", "sha256", "bytes"}`` of one file, its path relative to ``relative_to``."""
    return {"path": str(path.relative_to(relative_to)), "sha256": sha256sum(path), "bytes": path.stat().st_size}


def write_manifest(folder: Path, *, name: str, sources: list[dict[str, Any]], filters: list[dict[str, Any]],
                   counts: dict[str, Any], tokenizer_sha256: str, files: list[Path], extra: dict | None = None) -> Path:
    """Write ``folder/manifest.json`` atomically and return its path.

    Args:
        sources: ``{"dataset", "path", "sha256", "bytes"}`` per source file, ``path`` below the dataset cache.
        filters: ``{"name", "params", "removed_docs", "removed_bytes"}`` per filter, in the order applied.
        counts: documents and tokens per split (e.g. ``{"train": {"documents": 9, "tokens": 99}, ...}``).
        files: the packed files in ``folder`` (hashed here).
    """
    manifest = {"format": VERSION, "name": name, "sources": sources, "filters": filters, "counts": counts,
                "tokenizer_sha256": tokenizer_sha256, "files": [file_entry(f, folder) for f in files],
                **(extra or {})}
    return atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path`` (a ``manifest.json`` or the folder holding one).

    Raises:
        ManifestError: missing, not JSON, or without the keys a manifest has.
    """
    path = path / MANIFEST_NAME if path.is_dir() else path
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"no data-version manifest at {path}: build the data version first") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON ({e}): delete its folder and rebuild the data version") from None
    missing = {"name", "sources", "filters", "counts", "tokenizer_sha256", "files"} - manifest.keys()
    if missing:
        raise ManifestError(f"{path} lacks {', '.join(sorted(missing))}: not a data-version manifest")
    return manifest


def verify_manifest(path: Path, raw_root: Path | None = None) -> dict[str, Any]:
    """Re-hash every source file (below ``raw_root``, default the dataset cache) and every packed file (beside
    the manifest); return the manifest when all match.

    Raises:
        ManifestError: naming the first file that is missing or whose size or sha256 differs, both values, and the
            fix.
    """
    manifest = read_manifest(path)
    folder = (path if path.is_dir() else path.parent)
    raw_root = raw_root or data_root()
    checks = [(raw_root / s["path"], s, "source file") for s in manifest["sources"]]
    checks += [(folder / f["path"], f, "packed file") for f in manifest["files"]]
    for file, entry, what in checks:
        if not file.is_file():
            raise ManifestError(f"{what} {file} named by {folder / MANIFEST_NAME} is missing: rebuild the data "
                                "version (or fetch the dataset with `make data`)")
        size = file.stat().st_size
        digest = sha256sum(file) if size == entry["bytes"] else None
        if size != entry["bytes"] or digest != entry["sha256"]:
            got = f"{size:,} bytes" if digest is None else f"sha256 {digest[:16]}…"
            want = f"{entry['bytes']:,} bytes" if digest is None else f"sha256 {entry['sha256'][:16]}…"
            raise ManifestError(f"{what} {file} has {got}, but {folder / MANIFEST_NAME} records {want}: the data "
                                "changed after the manifest was written. Rebuild the data version, or restore the file")
    return manifest


def list_versions(root: Path) -> list[dict[str, Any]]:
    """Every readable manifest below ``root``: ``{"path", "name", "documents", "tokens", "tokenizer_sha256"}``,
    sorted by path (what ``make data`` lists)."""
    out = []
    for path in sorted(root.rglob(MANIFEST_NAME)) if root.is_dir() else []:
        try:
            m = read_manifest(path)
        except ManifestError:
            continue
        counts = m["counts"]
        out.append({"path": str(path.parent), "name": m["name"],
                    "documents": sum(c.get("documents", 0) for c in counts.values() if isinstance(c, dict)),
                    "tokens": sum(c.get("tokens", 0) for c in counts.values() if isinstance(c, dict)),
                    "tokenizer_sha256": m["tokenizer_sha256"][:12]})
    return out
