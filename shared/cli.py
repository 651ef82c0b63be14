"""Command line of every week: ``python -m weekNN_x [--profile P] [key=value ...]``."""

from __future__ import annotations

import argparse
import os
import sys
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


def parse_week_args(prog: str, description: str, argv: list[str] | None = None) -> tuple[str, list[str]]:
    """Parse ``--profile`` (default ``$PROFILE`` or ``auto``) and ``key=value`` overrides."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--profile", default=os.environ.get("PROFILE") or "auto", choices=("auto", *PROFILES),
        help="smoke (CI, under a minute), cpu (laptop), gpu (full size); auto picks cpu or gpu",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides such as train.lr=0.05")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return resolve_profile(args.profile), args.overrides


def config_files(week_dir: Path, base: str, profile: str) -> list[Path]:
    """The YAML layers of a week: ``configs/<base>`` then ``configs/profiles/<profile>.yaml``."""
    return [week_dir / "configs" / base, week_dir / "configs" / "profiles" / f"{profile}.yaml"]


def command_line(prog: str, profile: str, overrides: list[str]) -> str:
    """The command that reproduces this run, for the log header."""
    return " ".join([f"python -m {prog}", f"--profile {profile}", *overrides])
