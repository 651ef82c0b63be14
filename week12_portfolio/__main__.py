"""``python -m week12_portfolio [--profile smoke|cpu|gpu] [key=value ...]`` (``make week12``).

The portfolio: the flagship pipeline's recorded rows (the pipeline runs first when it has none; finished stages are
reused) and its final export scored again; RESULTS.md from the registry; the Q&A's citations; TALK.md; every relative
link; the docs site in a headless browser; the drill; the logs' freshness and the CHANGELOG's tags; then the log.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import sys  # noqa: E402

from shared.cli import resolve_profile, run_week, week_arg_parser  # noqa: E402
from week12_portfolio import config, portfolio  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    t0 = T_START if argv is None else time.perf_counter()
    parser = week_arg_parser("week12_portfolio", __doc__.splitlines()[0])
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    profile, overrides = resolve_profile(args.profile), args.overrides
    cfg = config.load(profile, overrides)
    from shared.report import log_dir
    from shared.repro import environment

    env = environment()  # before the stages: the week writes RESULTS.md, TALK.md and docs/results/ itself
    from week12_portfolio.flagship_config import load_flagship

    out_dir = log_dir("week12", profile) / "week12"
    res = portfolio.WeekResults(profile)
    stages = {
        "flagship": lambda: portfolio.flagship_stage(cfg, load_flagship(profile), profile, res),
        "results": lambda: portfolio.results_stage(cfg, res, out_dir),
        "qa": lambda: portfolio.qa_stage(cfg, res),
        "drill": lambda: portfolio.drill_stage(cfg, res, out_dir),
        "talk": lambda: portfolio.talk_stage(cfg, res, out_dir),
        "links": lambda: portfolio.links_stage(cfg, res),
        "site": lambda: portfolio.site_stage(cfg, res, out_dir),
        "logs": lambda: portfolio.logs_stage(res),
        "changelog": lambda: portfolio.changelog_stage(res),
    }
    for name, fn in stages.items():  # the talk reads the flagship, RESULTS, the Q&A and the drill: they go first
        if name in cfg.stages:
            portfolio.timed(res, name, fn)
    from week12_portfolio.report import write_log

    return write_log(cfg, profile, overrides, res, t0, env)


if __name__ == "__main__":
    sys.exit(run_week(main))
