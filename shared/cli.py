"""Command line of every week: ``python -m weekNN_x [--profile P] [key=value ...]``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

PROFILES = ("smoke", "cpu", "gpu")


def resolve_profile(name: str) -> str:
    """``auto`` -> ``gpu`` when CUDA is visible, else ``cpu``; an explicit profile as given.

    Raises:
        ValueError: unknown profile name.
    """
    if name == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"unknown profile '{name}'. Choose one of: auto, {', '.join(PROFILES)}")
    return name


def week_arg_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The parser every week shares: ``--profile`` (default ``$PROFILE`` or ``auto``) and ``key=value`` overrides;
    a week may add its own options before parsing."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--profile", default=os.environ.get("PROFILE") or "auto", choices=("auto", *PROFILES),
        help="smoke (CI, under a minute), cpu (laptop), gpu (full size); auto picks cpu or gpu",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides such as train.lr=0.05")
    return parser


def parse_week_args(prog: str, description: str, argv: list[str] | None = None) -> tuple[str, list[str]]:
    """Parse ``--profile`` and ``key=value`` overrides (see :func:`week_arg_parser`); the profile resolved."""
    args = week_arg_parser(prog, description).parse_args(sys.argv[1:] if argv is None else argv)
    return resolve_profile(args.profile), args.overrides


def config_files(week_dir: Path, base: str, profile: str) -> list[Path]:
    """The YAML layers of a week: ``configs/<base>`` then ``configs/profiles/<profile>.yaml``."""
    return [week_dir / "configs" / base, week_dir / "configs" / "profiles" / f"{profile}.yaml"]


def command_line(prog: str, profile: str, overrides: list[str]) -> str:
    """The command that reproduces this run, for the log header."""
    return " ".join([f"python -m {prog}", f"--profile {profile}", *overrides])


TRACEBACK_ENV = "AIFS_TRACEBACK"


def _explained_errors() -> tuple[type[BaseException], ...]:
    """The project's own errors: each message already names the bad thing and the fix."""
    from shared.checkpoint import CheckpointError
    from shared.config import ConfigError
    from shared.data.fetch import DatasetError
    from shared.data.tokenizer import TokenizerError
    from shared.dist import DistSetupError
    from shared.evals.instruct import EvalSetError
    from shared.models.registry import ModelError
    from shared.rundir import RunLockedError
    from shared.tasks.dpo import PreferenceDataError
    from shared.train.step import NonFiniteLossError

    return (ConfigError, DatasetError, CheckpointError, TokenizerError, NonFiniteLossError, DistSetupError,
            RunLockedError, ModelError, PreferenceDataError, EvalSetError)


INTERRUPTED = 130  # the shell's status for a process stopped by SIGINT (128 + 2)


def run_week(main: Callable[[], int]) -> int:
    """Run a week's ``main()`` for the command line: the project's own errors (a bad config key or value, missing
    or corrupt data, a checkpoint from another model, a diverged run, a bad launch) print their message, which says
    what to fix, without a traceback, and exit with 2. Ctrl-C prints one line and exits with 130 (a training run
    has already said which step it saved; see :func:`shared.train.loop.fit`). Set ``AIFS_TRACEBACK=1`` to see where
    either was raised; any other exception is a bug and keeps its traceback."""
    show = os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
    try:
        return main()
    except KeyboardInterrupt:
        if show:
            raise
        print(f"interrupted (Ctrl-C): stopped with exit status {INTERRUPTED}", file=sys.stderr)
        return INTERRUPTED
    except Exception as e:
        if show or not isinstance(e, _explained_errors()):
            raise
        print(f"error: {e}\n({TRACEBACK_ENV}=1 shows where it was raised)", file=sys.stderr)
        return 2
