"""Put a registered dataset's files into the verified cache.

For each file, in order: (1) the cache ``datasets/raw/<relpath>`` if its sha256 matches;
(2) a copy from the mirror folder named by ``AIFS_DATA_MIRROR``; (3) a download from the source
URLs, or of the dataset's source archive, which is unpacked into the cache (skipped when
``AIFS_OFFLINE=1``). A file may match its sha256 or, where the registry names one, the md5 of the
original release (a mirror can hold another byte-version of the same data). Copies and downloads go to a temporary file that is
verified before it is renamed into the cache, so the cache never holds a half-written file; a copy that does not verify
is reported by where it came from (the mirror file, the URL) and never enters the cache. A cached file that no longer
verifies is an error naming the repair (``python -m shared.data NAME``, which calls :func:`prepare_file` with
``repair=True``: the corrupt copy is replaced once a verified one is in hand, and kept otherwise).

A file whose publisher gives no checksum the project could record (``sha256 = ""`` in the registry) is
accepted by its exact size; the sha256 of the copy accepted first is then pinned beside it
(``<file>.sha256``) and checked on every later read, and printed so that it can be added to the registry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shared.atomic import atomic_write_text
from shared.data.registry import REGISTRY, DatasetSpec, FileSpec, get_spec
from shared.paths import data_root

MIRROR_ENV = "AIFS_DATA_MIRROR"
OFFLINE_ENV = "AIFS_OFFLINE"


class DatasetError(RuntimeError):
    """Base class for dataset problems (a corrupt file, or a file that cannot be found)."""


class ChecksumError(DatasetError):
    """A file's sha256 does not match the registry (corrupt, truncated or a different version)."""


class DatasetUnavailableError(DatasetError):
    """A file is not in the cache, not in the mirror, and could not be downloaded."""


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file (only to recognise files by their published md5, not for security)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def pin_path(cached: Path) -> Path:
    """Where the sha256 of a cached file without a registered checksum is pinned: ``<file>.sha256``."""
    return cached.with_name(cached.name + ".sha256")


def _pinned(cached: Path) -> str:
    pin = pin_path(cached)
    return pin.read_text().split()[0] if pin.is_file() else ""


def matches(path: Path, spec: FileSpec, pinned: str = "") -> bool:
    """True when ``path`` has the registry's sha256, or the alternative (original release) md5.

    For a file registered without a sha256: the registered size, and the ``pinned`` sha256 when one is given.
    """
    if not spec.sha256:
        return path.stat().st_size == spec.size and (not pinned or sha256sum(path) == pinned)
    return sha256sum(path) == spec.sha256 or bool(spec.alt_md5) and md5sum(path) == spec.alt_md5


def _mismatch(path: Path, spec: FileSpec, pinned: str = "", pin_name: str = "") -> str:
    """"" when ``path`` matches ``spec`` (see :func:`matches`), else what differs, for a message."""
    if matches(path, spec, pinned):  # hashes the file once (a 2 GB file takes seconds)
        return ""
    size = path.stat().st_size
    if not spec.sha256:
        return (f"{size:,} bytes, expected {spec.size:,}" if size != spec.size else
                f"sha256 {sha256sum(path)}, but {pin_name} pinned {pinned} when it was first fetched")
    alt = f" (or md5 {spec.alt_md5})" if spec.alt_md5 else ""
    return f"expected sha256 {spec.sha256}{alt}, got {sha256sum(path)} ({size:,} bytes, expected {spec.size:,})"


def repair_command(spec: FileSpec) -> str:
    """The data doctor's command that replaces ``spec``'s cached file with a verified copy."""
    name = next((d.name for d in REGISTRY.values() if spec in d.files), None)
    return f"python -m shared.data {name}" if name else "make data"


def _cache_error(dest: Path, spec: FileSpec, what: str) -> ChecksumError:
    pin = f" and its {pin_path(dest).name}" if not spec.sha256 else ""
    return ChecksumError(
        f"checksum mismatch for {spec.relpath} in the cache ({dest}): {what}. The file is corrupt, truncated or a "
        f"different version. Fix: run `{repair_command(spec)}` (or `make data`), which replaces it with a verified "
        f"copy from the mirror or the source; or delete {dest}{pin} and run again.")


def _source_error(spec: FileSpec, origin: str, where: str, dest: Path, what: str) -> ChecksumError:
    """The bytes from the mirror file or the URL ``where`` did not verify; nothing was written to ``dest``."""
    if origin == "mirror":
        expected = f"sha256 {spec.sha256}" if spec.sha256 else f"{spec.size:,} bytes"
        fix = (f"replace {where} with a good copy (it must have {expected}; the mirror's MANIFEST.tsv lists each "
               f"file's checksum), or unset {MIRROR_ENV} to download the file from its source")
    else:
        fix = (f"run again (a broken download), or set {MIRROR_ENV} to a folder that holds a verified copy of "
               f"{spec.relpath}")
    if not spec.sha256 and "pinned" in what:
        fix += f"; if the source now serves another version on purpose, delete {pin_path(dest)} to accept it"
    return ChecksumError(
        f"checksum mismatch for {spec.relpath} from the {origin} ({where}): {what}. That copy is corrupt, truncated "
        f"or a different version, and was not put into the cache ({dest}). Fix: {fix}.")


def _install(src: Path | None, url: str | None, dest: Path, spec: FileSpec, origin: str) -> None:
    """Copy ``src`` (or download ``url``) to a temp file beside ``dest``, verify (against the registry, and the pinned
    sha256 where the registry has none), then rename over ``dest``: ``dest`` is never half-written, and a copy
    that does not verify never replaces it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if src is not None:
            shutil.copyfile(src, tmp)
        else:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as f:  # noqa: S310
                shutil.copyfileobj(resp, f, length=1 << 20)
        pinned = "" if spec.sha256 else _pinned(dest)
        if what := _mismatch(tmp, spec, pinned, pin_path(dest).name):
            raise _source_error(spec, origin, str(src if src is not None else url), dest, what)
        os.chmod(tmp, 0o644)
        if not spec.sha256 and not pinned:  # pin before the rename: a cached file is never without its pin
            digest = sha256sum(tmp)
            atomic_write_text(pin_path(dest), f"{digest}  {dest.name}\n")
            print(f"{spec.relpath}: no registered sha256; accepted by size ({spec.size:,} bytes) and pinned "
                  f"sha256 {digest} in {pin_path(dest)} (add it to shared/data/registry.py)", file=sys.stderr)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class FileState:
    """Where one file stands: ``verified``, ``missing`` or ``corrupt``, and its cache path; ``repaired`` says what
    was wrong with the cached copy that a verified one replaced ("" when nothing was replaced)."""

    spec: FileSpec
    path: Path
    state: str
    source: str = ""
    repaired: str = ""


def prepare_file(spec: FileSpec, root: Path | None = None, repair: bool = False) -> FileState:
    """Ensure one file is in the cache and verified; return its state (``source`` says from where).

    Args:
        repair: a cached file that does not verify is replaced by a verified copy from the mirror or the source
            (the data doctor); without it, it is an error. The corrupt file is only replaced once a copy has
            verified: when none can be had, it stays where it is.

    Raises:
        ChecksumError: the cached (without ``repair``), mirrored or downloaded bytes do not match the registry.
        DatasetUnavailableError: missing (or, with ``repair``, corrupt) and not to be had anywhere; the message lists
            every place looked at.
    """
    root = root or data_root()
    dest = root / spec.relpath
    corrupt = ""
    if dest.is_file():
        corrupt = _mismatch(dest, spec, _pinned(dest), pin_path(dest).name)
        if not corrupt:
            return FileState(spec, dest, "verified", "cache")
        if not repair:
            raise _cache_error(dest, spec, corrupt)

    looked = [f"cache: {dest} (" + (f"corrupt: {corrupt}; kept until a verified copy replaces it" if corrupt
                                    else "missing") + ")"]
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        src = Path(mirror).expanduser() / spec.relpath
        if src.is_file():
            _install(src, None, dest, spec, "mirror")
            return FileState(spec, dest, "verified", f"mirror {src}", corrupt)
        looked.append(f"mirror: {src} (missing)")
    else:
        looked.append(f"mirror: ${MIRROR_ENV} is not set")

    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        looked.append(f"download: skipped because {OFFLINE_ENV}={os.environ[OFFLINE_ENV]}")
    else:
        for url in spec.urls:
            try:
                _install(None, url, dest, spec, "download")
                return FileState(spec, dest, "verified", f"download {url}", corrupt)
            except ChecksumError:
                raise
            except OSError as e:
                looked.append(f"download: {url} failed ({e})")
        if not spec.urls:
            looked.append("download: no source URL registered")
    raise DatasetUnavailableError(
        f"dataset file {spec.relpath} is not available. Looked in:\n  - "
        + "\n  - ".join(looked)
        + "\nFix: connect to the internet and run again (`make data` fetches every dataset but the on-demand ones), "
        f"or set {MIRROR_ENV} to a folder that holds {spec.relpath}, or copy the file to {dest}."
    )


def prepare(name: str | DatasetSpec, root: Path | None = None) -> Path:
    """Ensure every file of a dataset is cached and verified; return the cache root.

    Args:
        name: a registered dataset name (see :data:`shared.data.registry.REGISTRY`) or a spec.
        root: cache root; defaults to :func:`shared.paths.data_root`.

    Raises:
        KeyError: unknown dataset name.
        ChecksumError, DatasetUnavailableError: see :func:`prepare_file`.
    """
    spec = get_spec(name) if isinstance(name, str) else name
    root = root or data_root()
    try:
        for f in spec.files:
            prepare_file(f, root)
    except DatasetUnavailableError as e:
        if spec.archive is None or os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
            raise
        _fetch_archive(spec, root, e)
        for f in spec.files:
            prepare_file(f, root)
    return root


def _fetch_archive(spec: DatasetSpec, root: Path, missing: DatasetUnavailableError) -> None:
    """Download the dataset's source archive (md5-checked by torchvision) and unpack it into the cache.

    Raises:
        DatasetUnavailableError: the download failed; the message keeps what was looked at before.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    arc = spec.archive
    dest = root / arc.extract_to
    try:
        download_and_extract_archive(arc.url, download_root=str(dest), md5=arc.md5, remove_finished=True)
    except (OSError, RuntimeError) as e:
        raise DatasetUnavailableError(f"{missing}\nThe source archive {arc.url} could not be fetched either: {e}") from e


def inspect(spec: DatasetSpec, root: Path | None = None) -> list[FileState]:
    """State of each file in the cache, without fetching anything."""
    root = root or data_root()
    states = []
    for f in spec.files:
        path = root / f.relpath
        if not path.is_file():
            states.append(FileState(f, path, "missing"))
        else:
            states.append(FileState(f, path, "verified" if matches(path, f, _pinned(path)) else "corrupt", "cache"))
    return states
