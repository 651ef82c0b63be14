"""``python -m week05_lm_pipeline [--profile smoke|cpu|gpu] [--stage S] [key=value ...]`` (``make week05``).

The pre-training pipeline end to end: corpus -> BPE tokenizer -> packed memmaps -> GPT training -> perplexity
on the fixed val set -> a sample from the final checkpoint -> the weekly log. Stages whose verified outputs
exist are skipped (the log says which), so running it again resumes rather than redoes. ``--stage S`` runs one
stage (the stages before it are reused from disk, or built when missing), prints its summary and writes no log.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # "since process start" counts from here (before the heavy imports)

import json  # noqa: E402
import sys  # noqa: E402
from dataclasses import asdict  # noqa: E402
from functools import partial  # noqa: E402

from shared.cli import command_line, resolve_profile, run_week, week_arg_parser  # noqa: E402
from shared.data.corpus import load_corpus  # noqa: E402
from shared.data.lm import open_streams, pack_stage, tokenizer_stage  # noqa: E402
from shared.flops import mfu_peak  # noqa: E402
from shared.models.generation import sample_text  # noqa: E402
from shared.repro import environment  # noqa: E402
from shared.train.perplexity import stream_loss, unigram_loss  # noqa: E402
from week05_lm_pipeline import config, stages  # noqa: E402
from week05_lm_pipeline.eval import evaluate_checkpoint  # noqa: E402

STAGES = ("tokenizer", "pack", "train", "eval", "bench", "ablation", "ladder", "tokenizers", "all")


def _show(stage: str, summary: dict) -> int:
    """Print one stage's summary as JSON (the ``--stage`` output) and return the exit code."""
    print(json.dumps({"stage": stage, **summary}, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    t0 = T_START if argv is None else time.perf_counter()  # tests call main() long after the import
    parser = week_arg_parser("week05_lm_pipeline", __doc__.splitlines()[0])
    parser.add_argument("--stage", choices=STAGES, default="all", help="run only this stage (default: all, and the log)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    profile, overrides, stage = resolve_profile(args.profile), args.overrides, args.stage
    cfg = config.load(profile, overrides)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    corpus = load_corpus(cfg.data)
    timings["corpus"] = time.perf_counter() - t
    tok_out = tokenizer_stage(cfg.data, corpus, stages.WEEK, cfg.check.roundtrip_docs)
    timings["tokenizer"] = tok_out.seconds
    if stage == "tokenizer":
        return _show(stage, {k: v for k, v in vars(tok_out).items() if k != "tokenizer"})
    packed = pack_stage(cfg.data, corpus, tok_out.tokenizer, stages.WEEK, cfg.model.block_size)
    timings["pack"] = packed.seconds
    sha = tok_out.tokenizer.sha256
    stages.set_vocab(cfg, tok_out)  # the vocabulary every model of the week is built with
    if stage in ("bench", "ablation", "ladder", "tokenizers", "all"):
        from week05_lm_pipeline import experiments  # pandas: imported where used, not before the first step
    if stage == "pack":
        return _show(stage, asdict(packed))
    if stage == "bench":
        return _show(stage, {"grid": experiments.bench_grid(cfg, profile, packed, sha)[0].to_dict("records")})
    if stage == "ablation":
        return _show(stage, asdict(experiments.stabilisation_ablation(cfg, profile, packed, sha)))
    if stage == "ladder":
        return _show(stage, asdict(experiments.ladder(cfg, profile, packed, sha)))
    if stage == "tokenizers":
        cmp = experiments.compare_tokenizers(cfg, profile, corpus)
        return _show(stage, {"bench": cmp.bench.to_dict("records"), "bits_per_byte": cmp.bits_per_byte})
    t = time.perf_counter()
    trained = stages.train_stage(cfg, profile, tok_out, packed, t0)
    t_trained = time.perf_counter()
    timings["train"] = t_trained - t
    if stage == "train":
        return _show(stage, {"run_dir": trained.run.dir, "skipped": trained.skipped, **trained.fit.checkpoints,
                             "final": trained.fit.evals[-1], "tokens_per_sec": trained.tokens_per_sec,
                             "first_step_s": trained.fit.first_step_s})

    t = time.perf_counter()
    best = trained.fit.checkpoints["best"]
    evaluate = partial(evaluate_checkpoint, str(best), max_tokens=cfg.eval.max_tokens, device=cfg.loop.device)
    if stage == "eval":
        return _show(stage, {"checkpoint": best, **evaluate(batch_size=cfg.eval.batch_size)})
    ev = [evaluate(batch_size=b) for b in (cfg.eval.batch_size, cfg.eval.batch_size, 1)]  # reproducible? batch-free?
    train_stream, val_stream = open_streams(packed, sha)
    n_eval = cfg.eval.max_tokens or len(val_stream)
    unigram = unigram_loss(train_stream, val_stream[:n_eval], cfg.model.vocab_size)
    final_model = trained.model
    final_eval = stream_loss(final_model, val_stream, cfg.model.block_size, cfg.eval.batch_size,
                            max_tokens=cfg.eval.max_tokens)
    timings["eval"] = time.perf_counter() - t
    sample = sample_text(final_model, tok_out.tokenizer, cfg.sample)
    exported = stages.export_stage(profile, best, tok_out.tokenizer, val_stream, cfg.model.block_size,
                                   {"run_id": trained.run.run_id, "checkpoint": str(best), "week": "week05",
                                    "val_loss": final_eval["loss"], "tokenizer": str(tok_out.path)})
    pipeline_s = trained.fit.evals[-1]["wall_s"] + time.perf_counter() - t_trained  # corpus -> ... -> sample
    t = time.perf_counter()
    bench = experiments.bench_grid(cfg, profile, packed, sha)
    timings["throughput grid"] = time.perf_counter() - t
    t = time.perf_counter()
    ablation = experiments.stabilisation_ablation(cfg, profile, packed, sha)
    timings["stabilisation ablation"] = time.perf_counter() - t
    t = time.perf_counter()
    ladder = experiments.ladder(cfg, profile, packed, sha)
    timings["modernisation ladder"] = time.perf_counter() - t
    t = time.perf_counter()
    tokenizers = experiments.compare_tokenizers(cfg, profile, corpus)
    timings["tokenizer comparison"] = time.perf_counter() - t
    t = time.perf_counter()
    pack_readback, pack_padding = stages.read_back_packing(packed, tok_out.tokenizer, corpus)
    timings["packing read-back"] = time.perf_counter() - t

    from shared.report import WeeklyLog, log_dir
    from week05_lm_pipeline import report  # matplotlib and pandas: only for the log

    log = WeeklyLog("week05", "Week 05 — the pre-training pipeline: tokenize → pack → train → perplexity → checkpoint",
                    log_dir("week05", profile))
    timings["total"] = time.perf_counter() - t0
    log.header(environment(), profile, command_line("week05_lm_pipeline", profile, overrides),
               {"wall clock (s)": f"{timings['total']:.1f}", "device": str(next(final_model.parameters()).device)})
    report.build_log(log, cfg, {
        "corpus": corpus, "tokenizer": tok_out, "packed": packed, "trained": trained, "evals": ev,
        "final_eval": final_eval, "unigram": unigram, "sample": sample, "timings": timings, "bench": bench,
        "ablation": ablation, "ladder": ladder, "tokenizers": tokenizers, "pack_readback": pack_readback, "pack_padding": pack_padding,
        "exported": exported, "peak": mfu_peak(next(final_model.parameters()).device, cfg.loop.precision),
        # the pipeline (corpus -> tokenizer -> pack -> train -> eval -> sample), not the experiments after it; a
        # resumed run's training time is summed over its processes (in the evals)
        "pipeline_s": pipeline_s,
    })
    return log.finish(timings["total"])


if __name__ == "__main__":
    sys.exit(run_week(main))
