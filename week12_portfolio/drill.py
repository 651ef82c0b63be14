"""``python -m week12_portfolio.drill [--profile smoke|cpu] [--repo PATH] [--venv PATH] [--keep] [--out FILE]``
(``make drill``): the timed cold-start drill, REPRODUCE.md run by a machine.

It clones the repository's committed HEAD into a temporary folder (refusing a working tree with uncommitted changes
unless ``--allow-dirty``: they are not in the clone), reads the commands to run from the *clone's* REPRODUCE.md,
runs each one in the clone, times it, stops at the first failure, and writes ``docs/reproduction-log.md``: the
machine, every step's command, seconds and exit status, a failed step's last lines of output, the total time, and
the drill issues (each failure with its fix when REPRODUCE.md's known-issues table records one).

**Markers** (:mod:`week12_portfolio.drill_markers`). A fenced ```bash block on the line after
``<!-- drill: NAME -->`` belongs to section NAME; each command of it is one step, run with
``bash -c 'set -euo pipefail; ...'`` in the clone's root, a fresh shell per step. :data:`PROFILES` names the sections
a profile runs; ``<!-- drill: issues -->`` above a table records the known failures and their fixes.

**Environment.** A step gets the caller's environment (``AIFS_DATA_MIRROR``, the offline mirror, passes through)
without what would leak the caller's set-up into the clone (:func:`step_environment`), with standard input closed:
a step that waits for a person fails instead of hanging, so "completed" means completed without manual steps.

**Set-up.** By default the clone's ``setup`` section runs for real (``make install``: a fresh ``.venv``, several GB).
``--venv PATH`` reuses an installed environment without changing it (:mod:`week12_portfolio.drill_venv`): the clone
gets a ``.venv`` of its own whose one ``.pth`` file puts the clone's root first and then PATH's packages, and is marked
installed, so ``make install`` has nothing to do; at the end the drill checks that PATH's installed packages did not
change.

This module holds the steps (:func:`run_step`, the clone), :func:`run_drill`, :func:`drill_completed`, the log
(:func:`render_log`, :func:`write_log`) and :func:`main`; it re-exports the markers' and ``--venv``'s public names.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from week12_portfolio.drill_markers import (
    PROFILES,
    REPRODUCE,
    DrillError,
    drill_commands,
    extract_sections,
    known_issues,
)
from week12_portfolio.drill_venv import reuse_venv, venv_fingerprint, venv_purelib

# the names other code uses from this module (week12_portfolio.portfolio, the tests), wherever they are defined
__all__ = ["DEFAULT_TIMEOUT_S", "PROFILES", "REPRODUCE", "DrillError", "DrillResult", "Step",
           "clone", "display", "drill_commands", "drill_completed", "extract_sections", "known_issues", "machine_rows",
           "main", "render_log", "reuse_venv", "run_drill", "run_step", "source_repository", "step_environment",
           "venv_fingerprint", "venv_purelib", "write_log"]

TAIL_LINES = 60
DEFAULT_TIMEOUT_S = 3600.0
HEARTBEAT_S = 60.0
NESTED_ENV = "AIFS_DRILL"  # set for every step, so a drill started by a step refuses to run (no recursion)
LEAKY_ENV = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
DRILL = "drill"  # the section of the drill's own steps (clone, read, venv, venv check)


# ---- the result ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    """One timed step: a marked command (``section`` = its REPRODUCE.md section) or the drill's own (``drill``).
    ``returncode`` None = stopped at the step timeout; ``output`` = the last lines of a failed step's output."""

    section: str
    command: str
    seconds: float
    returncode: int | None
    output: str = ""
    log_file: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def status(self) -> str:
        return "PASS" if self.ok else "FAIL"

    @property
    def exit_text(self) -> str:
        return self.note if self.returncode is None else str(self.returncode)


@dataclasses.dataclass
class DrillResult:
    """What a drill did: ``planned`` steps (None until REPRODUCE.md was read), the ``steps`` that ran, the commands
    ``not_run`` after a failure, ``seconds`` of wall time in all, the drill ``issues`` (markdown lines), the
    ``environment`` rows of the log and the ``setup`` used, in words."""

    profile: str
    invocation: str
    planned: int | None = None
    steps: list[Step] = dataclasses.field(default_factory=list)
    not_run: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    issues: list[str] = dataclasses.field(default_factory=list)
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    setup: str = ""
    started: str = ""

    @property
    def passed(self) -> bool:
        return drill_completed(self)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data (for ``--json``), with ``passed``."""
        return {**dataclasses.asdict(self), "passed": self.passed}


def drill_completed(result: DrillResult) -> bool:
    """True when the drill completed without manual steps: its commands were read, every planned step ran, and each
    one exited 0."""
    return (result.planned is not None and not result.not_run and len(result.steps) == result.planned
            and all(s.ok for s in result.steps))


# ---- running --------------------------------------------------------------------------------------------------------


def step_environment(base: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The environment of every step: ``base`` without an activated virtual environment (``VIRTUAL_ENV`` and its
    ``bin`` on ``PATH``), ``PYTHONPATH``/``PYTHONHOME`` and an outer make's flags, plus ``AIFS_DRILL=1``. Returns it
    and the list of what was removed (for the log)."""
    env, removed = dict(base), []
    venv = env.get("VIRTUAL_ENV")
    if venv:
        parts = env.get("PATH", "").split(os.pathsep)
        kept = [p for p in parts if p and Path(p) != Path(venv) / "bin"]
        if len(kept) != len(parts):
            env["PATH"] = os.pathsep.join(kept)
            removed.append(f"{venv}/bin from PATH")
    for key in LEAKY_ENV:
        if env.pop(key, None) is not None:
            removed.append(key)
    env[NESTED_ENV] = "1"
    return env, removed


def _tail(path: Path, n: int = TAIL_LINES, max_bytes: int = 2 << 20) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - max_bytes))
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-n:]) if n else text


def _stop(proc: subprocess.Popen) -> None:
    # the step runs in its own session, so its whole process group (make, python, torchrun's workers) is stopped
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(section: str, command: str, cwd: Path, env: Mapping[str, str], log_file: Path, timeout_s: float,
             echo: Callable[[str], None] = print) -> Step:
    """Run ``command`` with bash (``set -euo pipefail``) in ``cwd``, stdin closed, stdout and stderr into
    ``log_file``; stop its process group after ``timeout_s`` seconds (``returncode`` None) or on Ctrl-C (130)."""
    t0 = time.perf_counter()
    note = ""
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", "set -euo pipefail\n" + command], cwd=cwd, env=dict(env),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        rc: int | None = None
        try:
            while True:
                left = timeout_s - (time.perf_counter() - t0)
                if left <= 0:
                    _stop(proc)
                    note = f"timeout after {timeout_s:.0f} s"
                    rc = None
                    break
                try:
                    rc = proc.wait(timeout=min(HEARTBEAT_S, left))
                    break
                except subprocess.TimeoutExpired:
                    echo(f"[drill]     ... still running ({time.perf_counter() - t0:.0f} s)")
        except KeyboardInterrupt:
            _stop(proc)
            rc, note = 130, "interrupted (Ctrl-C)"
    step = Step(section, command, time.perf_counter() - t0, rc, log_file=str(log_file), note=note)
    if not step.ok:
        step.output = _tail(log_file)
    return step


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise DrillError(f"`git {' '.join(args)}` in {cwd} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def source_repository(repo: str | Path, allow_dirty: bool) -> tuple[Path, str, int]:
    """The top folder of the git repository at ``repo``, its HEAD commit and the number of uncommitted paths.
    Raises :class:`DrillError` when ``repo`` is not in a git repository, or has uncommitted changes and
    ``allow_dirty`` is False."""
    repo = Path(repo).expanduser().absolute()
    if not repo.is_dir():
        raise DrillError(f"--repo {repo} is not a folder; pass the checkout to drill (default: the current folder)")
    try:
        top = Path(_git("rev-parse", "--show-toplevel", cwd=repo))
    except DrillError as e:
        raise DrillError(f"--repo {repo} is not in a git repository; pass a clone of the project ({e})") from None
    head = _git("rev-parse", "HEAD", cwd=top)
    dirty = [ln for ln in _git("status", "--porcelain", cwd=top).splitlines() if ln.strip()]
    if dirty and not allow_dirty:
        shown = ", ".join(ln[3:] for ln in dirty[:5]) + (", ..." if len(dirty) > 5 else "")
        raise DrillError(f"{top} has {len(dirty)} uncommitted path(s) ({shown}): the drill clones the committed HEAD "
                         f"{head[:12]}, so they would not be tested. Commit them, or pass --allow-dirty to drill "
                         "HEAD without them")
    return top, head, len(dirty)


def clone(source: Path, commit: str, dest: Path) -> str:
    """``git clone`` ``source`` into ``dest`` and check out ``commit`` (its HEAD, even a detached one); returns
    the clone's ``<sha> <subject>``. Raises :class:`DrillError` when git fails or the commits differ."""
    _git("clone", "--quiet", "--no-checkout", str(source), str(dest), cwd=dest.parent)
    _git("fetch", "--quiet", "origin", "HEAD", cwd=dest)
    _git("checkout", "--quiet", "--detach", commit, cwd=dest)
    got = _git("log", "-1", "--format=%H %s", cwd=dest)
    if not got.startswith(commit):
        raise DrillError(f"the clone is at {got[:12]}, not the source's HEAD {commit[:12]}")
    return got




# ---- the drill ------------------------------------------------------------------------------------------------------


def _first_line(argv: list[str], env: Mapping[str, str]) -> str:
    if not shutil.which(argv[0], path=env.get("PATH")):
        return "not found"
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(env))
    out = (done.stdout.strip() or done.stderr.strip()).splitlines()
    return out[0] if out else f"exit status {done.returncode}"


def machine_rows(env: Mapping[str, str]) -> dict[str, str]:
    """The machine and tools the steps see: host, OS, CPU cores, GPUs, python3/git/make on the steps' PATH."""
    gpus = _first_line(["nvidia-smi", "-L"], env)
    return {"host": platform.node(), "OS": platform.platform(), "CPU cores": str(os.cpu_count()),
            "GPU": "none visible (no nvidia-smi)" if gpus == "not found" else gpus,
            "python3 (the one `make install` uses)": _first_line(["python3", "--version"], env),
            "git": _first_line(["git", "--version"], env), "make": _first_line(["make", "--version"], env)}


def display(command: str) -> str:
    """``command`` without a trailing ``# comment`` (a ``#`` after a blank, outside quotes), blanks collapsed."""
    quote = ""
    for i, ch in enumerate(command):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i > 0 and command[i - 1].isspace():
            command = command[:i]
            break
    return " ".join(command.split())


def _own_step(result: DrillResult, command: str, fn: Callable[[], Any], echo: Callable[[str], None]) -> Any:
    """Run one of the drill's own steps (clone, read, venv, venv check) timed; a failure becomes a FAIL step."""
    t0 = time.perf_counter()
    _announce(result, DRILL, command, echo)
    try:
        value, rc, out = fn(), 0, ""
    except (DrillError, OSError, ValueError) as e:
        value, rc, out = None, 1, str(e)
    step = Step(DRILL, command, time.perf_counter() - t0, rc, output=out)
    _record(result, step, echo)
    return value


def _announce(result: DrillResult, section: str, command: str, echo: Callable[[str], None]) -> None:
    of = f"/{result.planned}" if result.planned is not None else ""
    echo(f"[drill] step {len(result.steps) + 1}{of} ({section}) {display(command)}")


def _record(result: DrillResult, step: Step, echo: Callable[[str], None]) -> None:
    result.steps.append(step)
    elapsed = sum(s.seconds for s in result.steps)
    echo(f"[drill]   {step.status} in {step.seconds:.1f} s (exit status {step.exit_text}; {elapsed:.1f} s so far)")
    if not step.ok and step.output:
        echo("\n".join(f"[drill]   | {ln}" for ln in step.output.splitlines()[-15:]))


def _issues(result: DrillResult, table: list[tuple[str, str]]) -> list[str]:
    lines = []
    for n, step in enumerate(result.steps, 1):
        if step.ok:
            continue
        text = _tail(Path(step.log_file), 0) if step.log_file and Path(step.log_file).is_file() else step.output
        head = f"Step {n} `{display(step.command)}` ({step.section}) failed (exit status {step.exit_text})"
        hits = [(sym, fix) for sym, fix in table if sym in text]
        lines += [f"{head}. Known issue, the output says `{sym}`: {fix}" for sym, fix in hits] or [
            f"{head}: no recorded fix. Once it is known, add a row to the known-issues table of REPRODUCE.md "
            "(The drill)"]
    return lines


def run_drill(repo: str | Path = ".", profile: str = "cpu", *, venv: str | Path | None = None,
              allow_dirty: bool = False, keep: bool = False, step_timeout_s: float = DEFAULT_TIMEOUT_S,
              workdir: str | Path | None = None, invocation: str | None = None,
              echo: Callable[[str], None] = print) -> DrillResult:
    """Clone ``repo``'s HEAD into a temporary folder (under ``workdir``), run ``profile``'s marked commands of the
    clone's REPRODUCE.md there (each stopped after ``step_timeout_s`` s), stop at the first failure, and return
    what happened. ``venv``: reuse that environment's packages for the set-up (:func:`reuse_venv`). The folder is
    deleted unless ``keep``. Raises :class:`DrillError` before cloning (unknown profile, not a git repository,
    uncommitted changes without ``allow_dirty``); every later failure is a FAIL step of the result."""
    if profile not in PROFILES:
        raise DrillError(f"unknown drill profile {profile!r}; use one of {', '.join(PROFILES)}")
    source, head, n_dirty = source_repository(repo, allow_dirty)
    t_start = time.perf_counter()
    invocation = invocation or " ".join(["python -m week12_portfolio.drill", "--profile", profile]
                                        + (["--venv", str(venv)] if venv else []))
    result = DrillResult(profile, invocation, started=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    env, removed = step_environment(os.environ)
    tmp = Path(tempfile.mkdtemp(prefix="aifs-drill-", dir=workdir)).absolute()
    root, logs = tmp / source.name, tmp / "logs"
    logs.mkdir()
    result.setup = "fresh: the setup section ran as written in the clone (no installed environment reused)"
    dirty = f"; {n_dirty} uncommitted path(s) there are not in the clone" if n_dirty else " (clean)"
    result.environment = {**machine_rows(env), "repository": f"{source} at {head[:12]}{dirty}",
                          "clone": f"{root} ({'kept: --keep' if keep else 'deleted after the drill'})",
                          "AIFS_DATA_MIRROR": env.get("AIFS_DATA_MIRROR") or "unset (data is downloaded)",
                          "removed from the steps' environment": ", ".join(removed) or "nothing",
                          "step timeout": f"{step_timeout_s:.0f} s"}
    table: list[tuple[str, str]] = []
    try:
        got = _own_step(result, f"git clone {source} && git checkout --detach {head[:12]}",
                        lambda: clone(source, head, root), echo)
        if got is None:
            return result
        result.environment["commit"] = got

        def read() -> list[tuple[str, str]]:
            path = root / REPRODUCE
            if not path.is_file():
                raise DrillError(f"the clone has no {REPRODUCE}; commit one that marks the drill's commands")
            text = path.read_text()
            table.extend(known_issues(text))
            return drill_commands(text, profile, f"{REPRODUCE} at {head[:12]}")

        commands = _own_step(result, f"read the {profile} profile's commands from the clone's {REPRODUCE}", read, echo)
        if commands is None:
            return result
        result.planned = len(result.steps) + len(commands) + (2 if venv else 0)
        before: list[tuple[Path, str]] = []
        if venv:
            def prepare() -> str:
                purelib = venv_purelib(venv)
                before.append((purelib, venv_fingerprint(purelib)))
                return reuse_venv(Path(venv), root, env)[0]

            words = _own_step(result, f"reuse {venv}'s packages in the clone's .venv (--venv)", prepare, echo)
            if words is None:
                result.not_run = [c for _, c in commands]
            else:
                result.setup = words
        for i, (section, command) in enumerate(commands):
            if result.not_run:
                break
            _announce(result, section, command, echo)
            step = run_step(section, command, root, env, logs / f"{len(result.steps) + 1:02d}.log", step_timeout_s, echo)
            _record(result, step, echo)
            if not step.ok:
                result.not_run = [c for _, c in commands[i + 1:]]
        if before:
            def unchanged() -> None:
                purelib, print_before = before[0]
                if venv_fingerprint(purelib) != print_before:
                    raise DrillError(f"{purelib} changed during the drill (an install or removal): the drill must "
                                     "never change the environment it reuses")

            _own_step(result, f"check that {venv}'s installed packages are unchanged", unchanged, echo)
        python = root / ".venv" / "bin" / "python"
        if python.exists():
            result.environment["the clone's .venv"] = _first_line([str(python), "--version"], env)
    finally:
        result.issues = _issues(result, table)
        result.seconds = time.perf_counter() - t_start
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


# ---- the log --------------------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_log(result: DrillResult) -> str:
    """``docs/reproduction-log.md`` for ``result``: verdict, environment, steps with their times, failures with the
    last lines of their output, drill issues."""
    failed = [(n, s) for n, s in enumerate(result.steps, 1) if not s.ok]
    if drill_completed(result):
        verdict = (f"**completed**: all {len(result.steps)} steps ran and exited 0, with no manual step, in "
                   f"{result.seconds:.1f} s")
    elif failed:
        n, s = failed[0]
        verdict = (f"**not completed**: step {n} (`{display(s.command)}`) failed (exit status {s.exit_text})"
                   + (f"; {len(result.not_run)} command(s) not run" if result.not_run else ""))
    else:
        verdict = f"**not completed**: {len(result.steps)} of {result.planned} planned steps ran"
    rows = {"profile": f"`{result.profile}` (sections {', '.join(PROFILES[result.profile])})",
            **result.environment, "set-up": result.setup}
    out = ["# Reproduction drill", "", f"`{result.invocation}`, started {result.started}: {verdict}.", "",
           "Written by `python -m week12_portfolio.drill` (`make drill`): it clones the committed HEAD into a temporary "
           "folder and runs, in order, the commands REPRODUCE.md marks for the drill (its section *The drill*), each "
           "in a fresh `bash` with `set -euo pipefail` and standard input closed, in the clone's root.", "",
           "## Environment", "", "| | |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in rows.items()), "",
           "## Steps", "", "| # | section | command | seconds | exit status | result |", "|---|---|---|---:|---|---|"]
    out += [f"| {n} | {s.section} | `{_cell(display(s.command))}` | {s.seconds:.1f} | {s.exit_text} | {s.status} |"
            for n, s in enumerate(result.steps, 1)]
    out += [f"| | | **total** (steps; the drill's wall time: {result.seconds:.1f} s) | "
            f"{sum(s.seconds for s in result.steps):.1f} | | |", ""]
    if result.not_run:
        out += ["Not run after the failure: " + ", ".join(f"`{display(c)}`" for c in result.not_run) + ".", ""]
    if failed:
        out += ["## Failures", ""]
        for n, s in failed:
            fence = "````" if "```" in s.output else "```"
            out += [f"### Step {n}: `{display(s.command)}`", "",
                    f"Exit status {s.exit_text} after {s.seconds:.1f} s; the end of its output (at most {TAIL_LINES} lines):",
                    "",
                    fence + "text", s.output.rstrip() or "(no output)", fence, ""]
    out += ["## Drill issues", ""]
    out += [f"- {ln}" for ln in result.issues] or ["None: the drill completed without manual steps." if
                                                   drill_completed(result) else "None recorded."]
    return "\n".join(out) + "\n"


def write_log(result: DrillResult, path: str | Path) -> Path:
    """Write :func:`render_log` to ``path`` atomically (folders created); returns the path."""
    from shared.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(render_log(result))
    return path


def main(argv: list[str] | None = None) -> int:
    """The command line; exit status 0 when the drill completed, 1 when it did not, 2 when it could not start."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m week12_portfolio.drill", description=__doc__.splitlines()[1])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu",
                        help="cpu: set-up, make test, every smoke profile, week 1's CPU profile; smoke: CI's short one")
    parser.add_argument("--repo", default=".", help="the checkout whose committed HEAD is drilled (default: here)")
    parser.add_argument("--venv", default=None, help="reuse this installed environment's packages (never changed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (clone and step outputs)")
    parser.add_argument("--allow-dirty", action="store_true", help="drill HEAD although the tree has changes")
    parser.add_argument("--out", default=None, help="the log (default: <repo>/docs/reproduction-log.md)")
    parser.add_argument("--json", default=None, help="also write the result as JSON to this file")
    parser.add_argument("--step-timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per step")
    parser.add_argument("--workdir", default=None, help="where the temporary folder goes (default: $TMPDIR)")
    args = parser.parse_args(argv)
    if os.environ.get(NESTED_ENV):
        print(f"error: {NESTED_ENV} is set: this is a step of a running drill, which must not start another "
              f"(unset {NESTED_ENV} if it was left over)", file=sys.stderr)
        return 2
    try:
        result = run_drill(args.repo, args.profile, venv=args.venv, allow_dirty=args.allow_dirty, keep=args.keep,
                           step_timeout_s=args.step_timeout, workdir=args.workdir,
                           invocation="python -m week12_portfolio.drill " + shlex.join(argv))
        out = Path(args.out) if args.out else source_repository(args.repo, True)[0] / "docs" / "reproduction-log.md"
    except DrillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C): no log written", file=sys.stderr)
        return 130
    write_log(result, out)
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    print(f"[drill] {'completed' if result.passed else 'NOT completed'} in {result.seconds:.1f} s; log: {out}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
