"""A data version on disk: documents packed with a tokenizer into ``train.bin`` / ``val.bin`` beside a manifest.

The folder is named by the version, the tokenizer and a hash of the documents themselves, so two versions never
share a folder and a rebuilt version whose documents did not change is reused after its manifest verifies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.data.manifest import MANIFEST_NAME, ManifestError, verify_manifest, write_manifest
from shared.data.pack import TokenFileMeta, open_token_file, pack_documents, write_token_file
from shared.data.tokenizer import Tokenizer


@dataclass
class DataVersion:
    """A packed data version and its manifest."""

    name: str
    dir: Path
    manifest: dict[str, Any]
    reused: bool  # found on disk and verified

    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST_NAME

    def stream(self, split: str, tokenizer_sha256: str | None = None) -> np.memmap:
        """The packed ``split`` ("train" or "val") as a memmap, checked against its metadata."""
        return open_token_file(self.dir / f"{split}.bin", tokenizer_sha256)[0]


def documents_hash(docs: Sequence[str]) -> str:
    """sha256 over the documents in order (length-prefixed, so boundaries count)."""
    h = hashlib.sha256()
    for d in docs:
        b = d.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def build_version(root: Path, name: str, splits: dict[str, Sequence[str]], tok: Tokenizer, *,
                  sources: list[dict[str, Any]], filters: list[dict[str, Any]], extra: dict | None = None) -> DataVersion:
    """Pack ``splits`` (split -> documents) with ``tok`` into ``root/<name>-<tokenizer>-<documents hash>/`` and write
    its manifest; reuse the folder when its manifest verifies.

    Raises:
        ManifestError: never for a folder being rebuilt (a folder that fails verification is rebuilt); see
            :func:`shared.data.manifest.verify_manifest` for reading one back.
    """
    key = documents_hash([d for split in sorted(splits) for d in [split, *splits[split]]])[:12]
    folder = root / f"{name}-{tok.sha256[:12]}-{key}"
    try:
        return DataVersion(name, folder, verify_manifest(folder), True)
    except ManifestError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    counts, files = {}, []
    for split, docs in splits.items():
        packed, _ = pack_documents(list(docs), tok)
        path = write_token_file(folder / f"{split}.bin", packed, TokenFileMeta(
            len(packed), len(docs), str(packed.dtype), tok.vocab_size, tok.sha256, tok.bos_id, tok.eos_id))
        files += [path, path.with_suffix(".json")]
        counts[split] = {"documents": len(docs), "tokens": int(len(packed)),
                         "bytes": sum(len(d.encode("utf-8")) for d in docs), "documents_sha256": documents_hash(docs)}
    write_manifest(folder, name=name, sources=sources, filters=filters, counts=counts, tokenizer_sha256=tok.sha256,
                   files=files, extra=extra)
    return DataVersion(name, folder, verify_manifest(folder), False)
