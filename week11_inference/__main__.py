"""``python -m week11_inference [--profile smoke|cpu|gpu] [--stage S] [key=value ...]`` (``make week11``).

Inference: the hand-written KV cache against no cache (the project's GPT and SmolLM2), its speed and memory, the
attention backends, the engine (continuous batching over a paged KV cache) against static batching and HF
``generate``, the weeks 7-9 models, int8 quantisation, ``torch.export`` + ONNX, vLLM and llama.cpp on localhost, the
chat page in a real browser; then ``docs/inference-memo.md`` and the log, from the measurements. ``--stage S`` runs
the stages up to S and prints their rows, writing no log.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402

from shared.cli import resolve_profile, run_week, week_arg_parser  # noqa: E402
from week11_inference import config, experiments  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    t0 = T_START if argv is None else time.perf_counter()
    parser = week_arg_parser("week11_inference", __doc__.splitlines()[0])
    parser.add_argument("--stage", choices=config.STAGES, default=None, help="run the stages up to this one, no log")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    profile, overrides = resolve_profile(args.profile), args.overrides
    cfg = config.load(profile, overrides)
    res = experiments.WeekResults(profile)
    t = time.perf_counter()
    subj = experiments.load_subject(cfg)
    res.timings["load the project's GPT and its val tokens"] = time.perf_counter() - t
    res.facts.update(gpt=subj.name, gpt_weights=subj.weights, gpt_params=subj.model.num_params(False),
                     gpt_block_size=subj.model.cfg.block_size, val_tokens=len(subj.tokens))
    stages = {
        "cache_check": lambda: experiments.cache_check_stage(cfg, subj, res),
        "cache_bench": lambda: experiments.cache_bench_stage(cfg, res),
        "attention": lambda: experiments.attention_stage(cfg, res),
        "engine": lambda: experiments.engine_stage(cfg, subj, res),
        "stage_models": lambda: experiments.stage_models_stage(cfg, res),
        "quantize": lambda: experiments.quantize_stage(cfg, subj, res),
        "export": lambda: experiments.export_stage(cfg, subj, res),
        "serving": lambda: experiments.serving_stage(cfg, res),
        "chat": lambda: experiments.chat_stage(cfg, subj, res),
    }
    for name in config.STAGES:
        if name in cfg.stages:
            stages[name]()
        else:
            res.skipped.setdefault(name, f"not in this profile's stages ({', '.join(cfg.stages)})")
        if name == args.stage:
            print(json.dumps({k: m.rows for k, m in res.measured.items()}, indent=1, default=str))
            return 0
    experiments.greedy_stage(cfg, subj, res)
    from week11_inference.report import write_log

    return write_log(cfg, profile, overrides, res, t0)


if __name__ == "__main__":
    sys.exit(run_week(main))
