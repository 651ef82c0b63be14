"""``--venv`` of :mod:`week12_portfolio.drill`: the clone's set-up reuses an installed environment without
changing it.

:func:`reuse_venv` gives the clone a ``.venv`` of its own whose one ``.pth`` file puts the clone's root first and then
the reused environment's packages (its editable installs, which point at another checkout, left out), copies its
console scripts, and writes the install stamp, so ``make install`` has nothing to do. :func:`venv_fingerprint` is
what the drill compares before and after, to check that the reused environment's installed packages did not change.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from week12_portfolio.drill_markers import DrillError  # defined there, so drill.py imports both without a cycle

INSTALL_STAMP = ".venv/.installed"  # the Makefile's $(STAMP): present and newer than its inputs = installed
_FINDER_IMPORT = re.compile(r"import\s+(__editable___\w+_finder)")


# ---- --venv: a clone environment that reuses an installed one ----------------------------------------------------


def _python_info(python: Path) -> dict[str, str]:
    code = "import json, sys, sysconfig; print(json.dumps({'purelib': sysconfig.get_paths()['purelib'], " \
           "'version': sys.version.split()[0]}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise DrillError(f"{python} does not run: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout)


def _is_editable(pth: Path, text: str) -> bool:
    # setuptools' PEP 660 installs (``__editable__.*.pth`` + its finder) and legacy path entries naming a source
    # checkout (a folder with pyproject.toml or setup.py) point at a checkout outside the environment
    if pth.name.startswith("__editable__.") or _FINDER_IMPORT.search(text):
        return True
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith(("#", "import ", "import\t")):
            p = (pth.parent / s)
            if (p / "pyproject.toml").is_file() or (p / "setup.py").is_file():
                return True
    return False


def venv_purelib(venv: str | Path) -> Path:
    """The site-packages folder of the environment ``venv``. Raises :class:`DrillError` when it has no python."""
    python = Path(venv).expanduser().absolute() / "bin" / "python"
    if not python.exists():
        raise DrillError(f"--venv {venv} has no bin/python; pass an installed environment (the checkout's .venv "
                         "after `make install`)")
    return Path(_python_info(python)["purelib"])


def venv_fingerprint(purelib: Path) -> str:
    """sha256 over what an install changes in ``purelib``: the names of its ``*.dist-info``/``*.egg-info``/
    ``*.egg-link`` entries with their RECORD's mtime, and the bytes of its ``*.pth`` and ``__editable__*`` files."""
    h = hashlib.sha256()
    for p in sorted(purelib.iterdir()):
        if p.name.endswith((".dist-info", ".egg-info", ".egg-link")):
            rec = p / "RECORD"
            h.update(f"{p.name}:{rec.stat().st_mtime_ns if rec.exists() else 0}\n".encode())
        elif p.suffix == ".pth" or p.name.startswith("__editable__"):
            h.update(p.name.encode() + b"\n" + p.read_bytes())
    return h.hexdigest()


def _check_imports(python: Path, clone_root: Path, env: Mapping[str, str]) -> None:
    # every top-level package of the clone must be found in the clone, not in the reused environment's checkout
    names = sorted(p.parent.name for p in clone_root.glob("*/__init__.py"))
    code = ("import importlib.util, json, sys; "
            "print(json.dumps({n: importlib.util.find_spec(n).origin for n in sys.argv[1:]}))")
    done = subprocess.run([str(python), "-c", code, *names], cwd="/", capture_output=True, text=True, env=dict(env))
    if done.returncode:
        raise DrillError(f"the clone's .venv cannot find its packages: {done.stderr.strip()[-400:]}")
    outside = {n: o for n, o in json.loads(done.stdout).items() if not Path(o).is_relative_to(clone_root)}
    if outside:
        raise DrillError(f"in the clone's .venv these packages resolve outside the clone: {outside}")


def reuse_venv(venv: Path, clone_root: Path, env: Mapping[str, str]) -> tuple[str, Path]:
    """Give ``clone_root`` a ``.venv`` that sees ``venv``'s installed packages, leaving ``venv`` unchanged:
    ``python -m venv --without-pip``, one ``.pth`` (the clone's root, then ``venv``'s site-packages and its ``.pth``
    lines but editable installs'), ``venv``'s console scripts copied with the new interpreter in their first line,
    and the install stamp. Returns the set-up in words and ``venv``'s site-packages. Raises :class:`DrillError`
    when ``venv`` has no python, imports do not resolve into the clone, or ``make install`` would still install."""
    venv = venv.expanduser().absolute()
    python, purelib = venv / "bin" / "python", venv_purelib(venv)
    dest = clone_root / ".venv"
    done = subprocess.run([str(python), "-m", "venv", "--without-pip", str(dest)], capture_output=True, text=True)
    if done.returncode:
        raise DrillError(f"`python -m venv {dest}` failed: {done.stderr.strip()[-400:]}")
    dest_purelib = Path(_python_info(dest / "bin" / "python")["purelib"])
    lines = ["# week12_portfolio.drill --venv: the clone's code first, then the packages of an environment the drill "
             "never changes", str(clone_root), str(purelib)]
    left_out = []
    for pth in sorted(purelib.glob("*.pth")):
        text = pth.read_text(errors="replace")
        if _is_editable(pth, text):
            left_out.append(pth.name)
            continue
        for line in text.splitlines():
            s = line.strip()
            if s and not s.startswith("#"):
                lines.append(s if s.startswith(("import ", "import\t")) else str((purelib / s).absolute()))
    (dest_purelib / "_aifs_drill_reuse.pth").write_text("\n".join(lines) + "\n")
    scripts = 0
    old_bin, new_bin = str(venv / "bin").encode(), str(dest / "bin").encode()
    for f in sorted((venv / "bin").iterdir()):
        target = dest / "bin" / f.name
        if target.exists() or target.is_symlink() or f.is_symlink() or not f.is_file() or f.name.startswith("pip"):
            continue
        data = f.read_bytes()
        first, _, rest = data.partition(b"\n")
        if first.startswith(b"#!") and old_bin in first:
            target.write_bytes(first.replace(old_bin, new_bin) + b"\n" + rest)
            target.chmod(0o755)
            scripts += 1
    (clone_root / INSTALL_STAMP).touch()
    _check_imports(dest / "bin" / "python", clone_root, env)
    if shutil.which("make", path=env.get("PATH")) and (clone_root / "Makefile").is_file():
        q = subprocess.run(["make", "-q", "install"], cwd=clone_root, env=dict(env), capture_output=True, text=True)
        if q.returncode != 0:
            raise DrillError(f"after {INSTALL_STAMP} was written, `make -q install` still says the clone would "
                             f"install (exit status {q.returncode}); the Makefile's install stamp is not {INSTALL_STAMP}")
    words = (f"reused: the clone's .venv (`python -m venv --without-pip`) sees {venv}'s packages through one .pth "
             f"file, the clone's code first (editable installs left out: {', '.join(left_out) or 'none'}); {scripts} "
             f"console scripts copied with the clone's interpreter; {INSTALL_STAMP} written, so the setup section "
             f"ran and had nothing to install. {venv} itself is checked unchanged at the end")
    return words, purelib
