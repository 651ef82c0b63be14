"""Week 2's log: launch facts, sharding, single vs DDP, AMP, accumulation, profile, ablation; the checks are in
``checks.py`` (this module pulls the numbers out of the runs and writes the prose from the same numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from shared.profiling import PHASES, ProfileResult  # noqa: E402
from shared.report import WeeklyLog  # noqa: E402
from shared.train.classify import ClassifierRun  # noqa: E402
from week02_ddp import checks  # noqa: E402
from week02_ddp.checks import Agreement, AmpRun, Recommendation, recommend  # noqa: E402
from week02_ddp.config import Week02Config  # noqa: E402
from week02_ddp.experiments import BenchResult, Pair  # noqa: E402


def _train_curve(run: ClassifierRun) -> pd.DataFrame:
    m = run.metrics()
    return m[m.phase == "train"][["step", "loss"]].reset_index(drop=True)


def curve_gap(a: ClassifierRun, b: ClassifierRun) -> tuple[float, int]:
    """Mean |loss_a - loss_b| over the steps both runs logged, and how many steps that is."""
    merged = _train_curve(a).merge(_train_curve(b), on="step", suffixes=("_a", "_b"))
    return float((merged.loss_a - merged.loss_b).abs().mean()), len(merged)


def agreement(label: str, a: ClassifierRun, b: ClassifierRun) -> Agreement:
    """The numbers :func:`checks.ddp_matches_single` and :func:`checks.accumulation_matches` judge."""
    gap, n = curve_gap(a, b)
    return Agreement(label, _val(a)["acc"], _val(b)["acc"], gap, a.result.step, b.result.step, n)


def _smooth(s: pd.Series, n: int = 10) -> pd.Series:
    return s.rolling(n, min_periods=1).mean()


def plot_curves(pairs: list[tuple[str, ClassifierRun, ClassifierRun, str, str]]):
    """One panel per (title, run_a, run_b, label_a, label_b): smoothed train loss of both runs."""
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 3.6), squeeze=False)
    for ax, (title, a, b, la, lb) in zip(axes[0], pairs, strict=True):
        ca, cb = _train_curve(a), _train_curve(b)
        ax.plot(ca.step, _smooth(ca.loss), label=la, lw=2.2, alpha=0.7)
        ax.plot(cb.step, _smooth(cb.loss), label=lb, lw=1.2, ls="--", color="black")
        ax.set(title=title, xlabel="optimizer step", ylabel="train loss (10-step mean)", yscale="log")
        ax.legend()
    fig.tight_layout()
    return fig


def _val(run: ClassifierRun) -> dict[str, float]:
    return run.result.last_val


def correctness_table(pairs: dict[str, Pair], world: int, micro: int) -> pd.DataFrame:
    rows = []
    for label, p in pairs.items():
        for kind, run, _secs, procs, mb in (("single process", p.single, p.single_time_s, 1, micro * world),
                                           (f"DDP x{world}", p.ddp, p.ddp_time_s, world, micro)):
            steps = run.result.step
            rows.append({
                "model": label, "run": kind, "processes": procs, "micro batch": mb, "global batch": mb * procs,
                "steps": steps, "val loss": round(_val(run)["loss"], 4), "val acc": round(_val(run)["acc"], 4),
                "train time (s)": round(run.result.train_time_s, 1),
                "samples/s": round(steps * micro * world / run.result.train_time_s),
                "run id": run.run.run_id,
            })
    return pd.DataFrame(rows)


def bench_frame(results: dict[str, BenchResult], max_skipped_frac: float) -> pd.DataFrame:
    """One row per benchmark config: the columns of ``bench.csv``."""
    rows = []
    for r in results.values():
        t = r.timing
        rows.append({
            "config": r.point.label, "micro_batch": r.point.micro_batch, "grad_accum_steps": r.point.grad_accum_steps,
            "precision": r.point.precision, "world_size": r.world_size, "global_batch": r.global_batch,
            "samples_per_sec": round(r.samples_per_sec, 1), "rounds": len(r.round_samples_per_sec),
            "round_spread": round(r.round_spread, 3), "step_ms": round(t["step"] * 1e3, 2),
            "step_cv": round(r.step_cv, 3),
            **{f"{k}_ms": round(t[k] * 1e3, 2) for k in PHASES},
            "peak_memory_gib": round(r.peak_memory_gib, 4), "first_loss": round(r.losses[0], 4),
            "final_loss": round(float(np.mean(r.losses[-5:])), 4), "skipped_steps": r.skipped_steps,
            "stable": checks.loss_stable(r.losses[0], r.losses[-1], r.finite, r.skipped_steps, len(r.losses),
                                         max_skipped_frac),
        })
    return pd.DataFrame(rows)


def matched_final_loss(fp32_losses: list[float], skipped: int, n: int = 5) -> float:
    """fp32's mean loss over the ``n`` steps that end ``skipped`` steps before its last one."""
    end = len(fp32_losses) - skipped
    return float(np.mean(fp32_losses[max(end - n, 0) : end]))


def rounds_frame(results: dict[str, BenchResult]) -> pd.DataFrame:
    """samples/s of every benchmark round, one row per config (round 1 ran first; the order alternates)."""
    n = max(len(r.round_samples_per_sec) for r in results.values())
    return pd.DataFrame([{"config": r.point.label,
                          **{f"round {i + 1}": round(v, 1) for i, v in enumerate(r.round_samples_per_sec)},
                          "mean": round(r.samples_per_sec, 1), "range (max - min)": round(
                              max(r.round_samples_per_sec) - min(r.round_samples_per_sec), 1)}
                         for r in results.values()],
                        columns=["config", *(f"round {i + 1}" for i in range(n)), "mean", "range (max - min)"])


def _describe(row: pd.Series) -> str:
    return (f"micro batch {row.micro_batch}, {row.grad_accum_steps} accumulation step(s), {row.precision}, "
            f"global batch {row.global_batch}")


def recommendation_text(rec: Recommendation, bench: pd.DataFrame, tol: float) -> str:
    """The log's paragraph for ``rec``: every number in it comes from ``rec`` and ``bench``."""
    if rec.pick is None:
        if rec.why == "none stable":
            return "**No recommendation:** no configuration was stable."
        return (f"**No recommendation:** `{rec.leader}` leads `{rec.other}` by {rec.lead:.1%}, but with "
                f"{rec.rounds} timing round(s) the round-to-round noise is unknown (set experiment.bench_rounds "
                ">= 2).")
    rows = bench.set_index("config")
    pick, base = rows.loc[rec.pick], bench.iloc[0]
    same = bench[(bench.global_batch == rec.global_batch) & bench.stable]
    best_loss = same.final_loss.min()
    text = f"**Recommendation: `{rec.pick}`** ({_describe(pick)}). "
    if rec.why == "winner":
        text += (f"It is the fastest candidate and its lead clears the timing noise: {pick.samples_per_sec:,.0f} "
                 f"samples/s, {rec.lead:.1%} ahead of the runner-up `{rec.other}` "
                 f"({rows.loc[rec.other].samples_per_sec:,.0f}), more than the larger round range of the two "
                 f"({rec.noise:.1%} of the runner-up's mean, {rec.rounds} rounds each). ")
    elif rec.why == "tie":
        others = [c for c in rec.tied if c != rec.pick]
        text += (f"Tie between {', '.join(f'`{c}`' for c in rec.tied)} (lead {rec.lead:.1%} of `{rec.leader}` over "
                 f"`{rec.other}`, inside the noise {rec.noise:.1%}: the larger round range of the two over "
                 f"{rec.rounds} rounds), so the simplest of them is recommended (fewest accumulation steps, then "
                 f"fp32 < bf16 < fp16): {pick.samples_per_sec:,.0f} samples/s against "
                 + ", ".join(f"`{c}` {rows.loc[c].samples_per_sec:,.0f}" for c in others) + ". ")
    else:
        text += f"It is the only candidate: {pick.samples_per_sec:,.0f} samples/s. "
    text += (f"That is {pick.samples_per_sec / base.samples_per_sec:.2f}x the baseline `{base.config}`; final loss "
             f"{pick.final_loss:.4f} against the best {best_loss:.4f} at this global batch (tolerance {tol:.0%}); "
             f"peak memory {pick.peak_memory_gib:.3f} GiB. ")
    out = same[~same.config.isin(rec.candidates)]
    if not out.empty:
        text += ("Left out for their final loss (more than the tolerance above the best): "
                 + ", ".join(f"`{r.config}` ({r.final_loss:.4f})" for r in out.itertuples()) + ". ")
    unstable = bench[~bench.stable]
    if not unstable.empty:
        text += "Unstable, not ranked: " + ", ".join(f"`{c}`" for c in unstable.config) + ". "
    slowest = same.sort_values("samples_per_sec").iloc[0]
    if slowest.config != rec.pick:
        text += (f"The slowest at this global batch is `{slowest.config}` ({slowest.samples_per_sec:,.0f} samples/s, "
                 f"{slowest.samples_per_sec / pick.samples_per_sec:.2f}x the pick). ")
    other_gb = bench[(bench.global_batch != rec.global_batch) & bench.stable]
    if not other_gb.empty:
        fastest = other_gb.sort_values("samples_per_sec", ascending=False).groupby("global_batch").head(1)
        text += ("Another global batch changes the optimisation, not just the speed, so these are reported but not "
                 "ranked: " + "; ".join(
                     f"at global batch {r.global_batch} the fastest is `{r.config}`, {r.samples_per_sec:,.0f} "
                     f"samples/s ({r.samples_per_sec / pick.samples_per_sec:.2f}x the pick), final loss "
                     f"{r.final_loss:.4f}" for r in fastest.sort_values("global_batch").itertuples()) + ".")
    return text.strip()


def bf16_skip_reason(device: str) -> str:
    """Why "bf16 faster than fp32" cannot be measured on ``device`` ("" when it can: a GPU with bf16 tensor cores,
    compute capability >= 8.0)."""
    if not device.startswith("cuda"):
        return "needs a GPU: the claim is about bf16 tensor cores; the CPU ratio is reported, not judged"
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    if major < 8:
        return f"needs bf16 tensor cores (compute capability >= 8.0); this GPU is sm_{major}{minor}"
    return ""


def profile_split(timing: dict[str, float]) -> pd.DataFrame:
    total = timing["step"]
    rows = [{"phase": k, "ms per step": round(timing[k] * 1e3, 3), "share of step": round(timing[k] / total, 3)}
            for k in (*PHASES, "other")]
    rows.append({"phase": "step (measured)", "ms per step": round(total * 1e3, 3), "share of step": 1.0})
    return pd.DataFrame(rows)


def plot_split(bench: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    left = np.zeros(len(bench))
    for k in PHASES:
        ax.barh(bench.config, bench[f"{k}_ms"], left=left, label=k)
        left += bench[f"{k}_ms"].to_numpy()
    ax.set(xlabel="ms per optimizer step (rank 0)", title="Where the step time goes")
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return fig


def build_log(log: WeeklyLog, cfg: Week02Config, r: dict[str, Any]) -> None:
    """Fill ``log`` from the results dict that ``__main__`` collects (keys used below)."""
    ex, world, micro = cfg.experiment, r["world_size"], cfg.data.batch_size
    on_gpu = r["device"].startswith("cuda")

    log.section("1. Launch", "Every rank printed its line at start-up (the console log); gathered here by rank 0. "
                "Global batch = micro batch x gradient-accumulation steps x world size.")
    log.table(pd.DataFrame(r["launch"]), "launch")
    log.add(checks.launch_reported(r["launch"], micro, cfg.train.grad_accum_steps, world))

    sh = r["shards"]
    rows = [{"epoch": e, "rank": k, "shard size": v["sizes"][k], "first indices": v["head"][k]}
            for e, v in sh["epochs"].items() for k in range(world)]
    log.section("2. Sharding", f"`DistributedSampler` over the {sh['n']:,} training images, seeded per epoch "
                "(`set_epoch`).")
    log.table(pd.DataFrame(rows), "shards")
    log.add(checks.shards_unique(sh, world))

    pairs = r["pairs"]
    log.section("3. DDP correctness", f"Each model trained twice with the same seed, lr policy and global batch "
                f"({micro * world}): {world} DDP rank(s) x micro batch {micro}, and one process x {micro * world}.")
    log.table(correctness_table(pairs, world, micro), "correctness")
    log.plot(plot_curves([(f"{k}: single vs DDP", p.single, p.ddp, "1 process", f"DDP x{world}")
                          for k, p in pairs.items()]), "single_vs_ddp", "Train loss, single process vs DDP (overlaid)")
    log.add(checks.ddp_matches_single([agreement(k, p.single, p.ddp) for k, p in pairs.items()], world,
                                      ex.max_acc_gap, ex.max_loss_gap))

    amp = bench_frame(r["amp"], ex.max_skipped_frac)
    fp32 = amp[amp.precision == "fp32"].iloc[0]
    amp["speed vs fp32"] = (amp.samples_per_sec / fp32.samples_per_sec).round(2)
    # A skipped fp16 step applies no update, so compare with fp32 after the same number of applied updates.
    ref = {p: matched_final_loss(r["amp"]["fp32"].losses, r["amp"][p].skipped_steps) for p in amp.precision}
    amp["fp32 loss at equal updates"] = [round(ref[p], 4) for p in amp.precision]
    log.section("4. Mixed precision", f"The CNN, micro batch {micro}, {ex.bench_steps} timed steps after "
                f"{ex.bench_warmup} warm-up (x {ex.bench_rounds} rounds), {cfg.train.optimizer} at lr {cfg.train.lr}. "
                "Peak memory: "
                + ("CUDA max allocated." if on_gpu else "process peak RSS (VmHWM) of rank 0, which includes the "
                   "interpreter and the dataset, so compare differences.")
                + " bf16 needs no loss scaling; fp16 runs with `GradScaler`.")
    log.table(amp[["config", "precision", "samples_per_sec", "round_spread", "speed vs fp32", "step_ms",
                   "peak_memory_gib", "first_loss", "final_loss", "skipped_steps", "fp32 loss at equal updates",
                   "stable"]], "amp",
              "final_loss = mean of the last 5 steps; round_spread = (max - min) / mean of the rounds' samples/s. "
              "fp16's GradScaler starts at 2^16 and halves on each overflow, skipping that step: the skipped steps "
              "are counted, and the fp32 reference is taken that many steps earlier.")
    runs = [AmpRun(p, b.losses[0], b.losses[-1], float(np.mean(b.losses[-5:])), ref[p], b.skipped_steps,
                   len(b.losses), b.finite) for p, b in r["amp"].items()]
    bf16 = r["amp"].get("bf16")
    log.add(checks.amp_stable(runs, ex.max_amp_loss_gap, ex.max_skipped_frac),
            checks.bf16_faster(r["amp"]["fp32"].round_samples_per_sec, bf16.round_samples_per_sec if bf16 else None,
                               bf16_skip_reason(r["device"])))

    acc_run, base = r["accum"], pairs["cnn"].ddp
    k = ex.accum_steps
    log.section("5. Gradient accumulation", f"The CNN under DDP: micro batch {micro // k} x {k} accumulation steps "
                f"(`no_sync()` on the first {k - 1}) vs micro batch {micro} x 1; the same global batch "
                f"{micro * world}.")
    rows = [{"run": f"micro {m} x accum {a}", "steps": run.result.step, "val loss": round(_val(run)["loss"], 4),
             "val acc": round(_val(run)["acc"], 4), "train time (s)": round(run.result.train_time_s, 1)}
            for run, m, a in ((base, micro, 1), (acc_run, micro // k, k))]
    log.table(pd.DataFrame(rows), "accumulation")
    log.plot(plot_curves([("CNN: accumulation vs none", base, acc_run, f"{micro} x 1", f"{micro // k} x {k}")]),
             "accumulation", "Train loss with and without gradient accumulation (same global batch)")
    log.add(checks.accumulation_matches(agreement("cnn", base, acc_run), ex.max_acc_gap, ex.max_loss_gap))

    split = profile_split(r["amp"]["fp32"].timing if "fp32" in r["amp"] else next(iter(r["amp"].values())).timing)
    ms = dict(zip(split.phase, split["ms per step"], strict=True))
    phase_ms = {**{p: ms[p] for p in PHASES}, "step": ms["step (measured)"]}
    step_ms = phase_ms["step"]
    (top, top_ms), (second, second_ms) = checks.work_kinds(phase_ms)[:2]
    prof: ProfileResult = r["profile"]
    log.section("6. Profiling", "Step time of the fp32 baseline split by synchronised timers (rank 0), then a "
                f"`torch.profiler` trace of {ex.profile_active} steps: [{Path(r['trace_file']).name}]"
                f"({log.week}/{Path(r['trace_file']).name}) (open in https://ui.perfetto.dev or TensorBoard). "
                "Under DDP the gradient all-reduce runs inside backward, overlapped with it bucket by bucket.")
    log.table(split, "step_split")
    log.table(prof.top_ops.round(3), "top_ops", "Top-10 ops by self time, from the trace.")
    bottleneck = (f"**Bottleneck: {top}** — {top_ms:.2f} ms of a {step_ms:.2f} ms step ({top_ms / step_ms:.0%}); "
                  f"next is {second} ({second_ms / step_ms:.0%}). ")
    if top == "compute":
        bottleneck += (f"Forward {ms['forward']:.2f} ms, backward {ms['backward']:.2f} ms; the busiest op is "
                       f"`{prof.top_ops.iloc[0].op}` ({prof.top_ops.iloc[0]['share of self time']:.0%} of the traced "
                       "self time).")
    elif top == "data":
        bottleneck += "The input pipeline starves the model: keep the data on the device, or add loader workers."
    else:
        bottleneck += "The optimizer update dominates: use a fused/foreach optimizer, or a larger batch per step."
    bottleneck += (f" Making the other kinds of work free would save at most {1 - top_ms / step_ms:.0%} of the "
                   "step.")
    if world > 1:
        bottleneck += (f" One all-reduce of the CNN's {r['n_params']:,} gradients costs {r['allreduce_ms']:.2f} ms "
                       f"over {r['backend']} ({r['allreduce_ms'] / ms['backward']:.0%} of the backward phase).")
    log.text(bottleneck)
    log.add(checks.bottleneck_found(phase_ms, ex.max_unaccounted, ex.min_bottleneck_share))

    bench = bench_frame(r["ablation"], ex.max_skipped_frac)
    log.section("7. System ablation", f"{len(bench)} configurations of the CNN under DDP x{world}, "
                f"{ex.bench_steps} timed steps each, measured in {ex.bench_rounds} round(s) of alternating order "
                "(samples/s = mean over rounds of global batch / the round's median step time; round_spread = "
                "(max - min) / mean of the rounds, the round-to-round noise: a pick must lead by more than the larger "
                "range of the two configs it separates; step_cv = std/mean of the step time inside the rounds). "
                "Written to `bench.csv`.")
    log.table(bench, "bench")
    log.table(rounds_frame(r["ablation"]), "bench_rounds", "samples/s of each round.")
    log.plot(plot_split(bench), "bench_split", "Step time by phase for each configuration")
    rec = recommend(bench, {label: b.round_samples_per_sec for label, b in r["ablation"].items()},
                    ex.max_amp_loss_gap)
    log.text(recommendation_text(rec, bench, ex.max_amp_loss_gap))
    log.add(checks.recommendation_justified(rec))

    log.section("Timings", "Wall-clock seconds of each stage on rank 0.")
    log.table(pd.DataFrame({"stage": list(r["timings"]), "seconds": [round(v, 1) for v in r["timings"].values()]}),
              "timings")
    log.section("Config", "The resolved config of this run.")
    log.config(cfg)
