"""Week 12's config: which artefacts the week builds and checks, where they go, and the checks' thresholds. The
flagship pipeline has its own config (:mod:`week12_portfolio.flagship_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import ConfigError, at_least, load_config, positive

WEEK_DIR = Path(__file__).resolve().parent
STAGES = ("flagship", "results", "qa", "talk", "links", "site", "drill", "logs", "changelog")


@dataclass
class FlagshipPart:
    """How the week reads the flagship pipeline."""

    run: bool = True  # run the pipeline (finished stages are reused) when its recorded result is missing
    rerun_stage: str = "dpo"  # the stage whose export is scored again (a rerun must give the recorded harness row)


@dataclass
class OutputsPart:
    """Where the generated documents go: the repository's own files (cpu) or the run's log folder (smoke, gpu)."""

    in_repo: bool = False  # cpu: RESULTS.md, TALK.md and docs/results/ at their committed places


@dataclass
class QAPart:
    expected: int = at_least(1, 40)  # questions in docs/qa.md
    min_per_week: int = at_least(1, 2)


@dataclass
class DrillPart:
    """The cold-start drill: run here (smoke) or read from its committed log (cpu)."""

    run: bool = False  # run the drill in this process (smoke: the short drill); else read docs/reproduction-log.md
    profile: str = "smoke"  # the drill profile when run here
    log: str = "docs/reproduction-log.md"


@dataclass
class Week12Config:
    """The whole week (``make week12``)."""

    stages: list[str] = field(default_factory=lambda: list(STAGES))
    budget_s: float = positive(900.0)  # the week without the flagship's training (s): the 15 minutes
    flagship: FlagshipPart = field(default_factory=FlagshipPart)
    outputs: OutputsPart = field(default_factory=OutputsPart)
    qa: QAPart = field(default_factory=QAPart)
    drill: DrillPart = field(default_factory=DrillPart)
    key_artefacts: list[str] = field(default_factory=lambda: [
        "RESULTS.md", "TALK.md", "docs/qa.md", "REPRODUCE.md", "CHANGELOG.md", "docs/architecture.md",
        "docs/reproduction-log.md"])
    versions: int = at_least(1, 12)  # CHANGELOG versions v0.1 .. v1.2, one per week


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week12Config:
    """Defaults <- ``week12.yaml`` <- ``profiles/<profile>.yaml`` <- ``key=value`` overrides.

    Raises:
        ConfigError: an unknown stage (listing the stages) or any bad value.
    """
    cfg = load_config(Week12Config, config_files(WEEK_DIR, "week12.yaml", profile), overrides)
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"stages has {unknown}: choose from {', '.join(STAGES)}")
    return cfg
