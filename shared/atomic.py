"""Atomic file writes: write a temporary file in the target folder, fsync, then rename.

``os.replace`` is atomic on POSIX within one filesystem, so a reader sees either the old file
or the complete new one, never a half-written file, even if the process dies mid-write. A process killed
mid-write (SIGKILL: no ``finally`` runs) leaves its ``.<name>.*.tmp`` file behind; :func:`remove_orphans`, called
by the owner of a folder when it starts (e.g. a run that holds its directory's lock), deletes them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary file is removed if the body raises, so nothing half-written is left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_orphans(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of interrupted :func:`atomic_path` writes directly in ``folder``; returns them.

    Only the folder's owner may call this (another process could be writing right now otherwise)."""
    removed = [p for p in Path(folder).glob(f".*{TMP_SUFFIX}") if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def atomic_write(path: str | os.PathLike, writer: Callable[[IO], None], mode: str = "w") -> Path:
    """Call ``writer(file_object)`` on a temporary file and atomically move it to ``path``."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
        writer(f)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    return atomic_write(path, lambda f: f.write(text))
