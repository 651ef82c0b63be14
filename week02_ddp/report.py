"""Week 2's log: launch facts, sharding, single vs DDP, AMP, accumulation, profile, ablation, checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from shared.profiling import PHASES, ProfileResult  # noqa: E402
from shared.report import WeeklyLog  # noqa: E402
from shared.train.classify import ClassifierRun  # noqa: E402
from week02_ddp.config import Week02Config  # noqa: E402
from week02_ddp.experiments import BenchResult, Pair  # noqa: E402


def _train_curve(run: ClassifierRun) -> pd.DataFrame:
    m = run.metrics()
    return m[m.phase == "train"][["step", "loss"]].reset_index(drop=True)


def curve_gap(a: ClassifierRun, b: ClassifierRun) -> float:
    """Mean |loss_a - loss_b| over the steps both runs logged."""
    merged = _train_curve(a).merge(_train_curve(b), on="step", suffixes=("_a", "_b"))
    return float((merged.loss_a - merged.loss_b).abs().mean())


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


def bench_frame(results: dict[str, BenchResult]) -> pd.DataFrame:
    """One row per benchmark config: the columns of ``bench.csv``."""
    rows = []
    for r in results.values():
        t = r.timing
        rows.append({
            "config": r.point.label, "micro_batch": r.point.micro_batch, "grad_accum_steps": r.point.grad_accum_steps,
            "precision": r.point.precision, "world_size": r.world_size, "global_batch": r.global_batch,
            "samples_per_sec": round(r.samples_per_sec, 1), "step_ms": round(t["step"] * 1e3, 2),
            "step_cv": round(r.step_cv, 3),
            **{f"{k}_ms": round(t[k] * 1e3, 2) for k in PHASES},
            "peak_memory_gib": round(r.peak_memory_gib, 4), "first_loss": round(r.losses[0], 4),
            "final_loss": round(float(np.mean(r.losses[-5:])), 4), "skipped_steps": r.skipped_steps,
            "stable": r.stable,
        })
    return pd.DataFrame(rows)


def matched_final_loss(fp32_losses: list[float], skipped: int, n: int = 5) -> float:
    """fp32's mean loss over the ``n`` steps that end ``skipped`` steps before its last one."""
    end = len(fp32_losses) - skipped
    return float(np.mean(fp32_losses[max(end - n, 0) : end]))


def recommend(bench: pd.DataFrame, tol: float, tie: float = 0.05) -> tuple[pd.Series | None, str]:
    """Pick one configuration from ``bench`` and explain the pick.

    Candidates: stable configs at the most common global batch whose final loss is within ``tol``
    (relative) of the best there. Configs within ``tie`` (relative) of the fastest candidate's
    samples/s are a tie (machine noise), and among ties the simplest wins: fewest accumulation
    steps, then the fastest.
    """
    cands = bench[bench.stable]
    if cands.empty:
        return None, "No configuration was stable; nothing can be recommended."
    gb = cands.global_batch.mode().iloc[0]
    same = cands[cands.global_batch == gb]
    best_loss = same.final_loss.min()
    ok = same[same.final_loss <= best_loss * (1 + tol)]
    fastest = ok.samples_per_sec.max()
    tied = ok[ok.samples_per_sec >= fastest * (1 - tie)]
    pick = tied.sort_values(["grad_accum_steps", "samples_per_sec"], ascending=[True, False]).iloc[0]
    base = bench.iloc[0]
    text = (
        f"**Recommendation: `{pick.config}`** (micro batch {pick.micro_batch}, {pick.grad_accum_steps} accumulation "
        f"step(s), {pick.precision}, global batch {pick.global_batch}): {pick.samples_per_sec:,.0f} samples/s "
        f"({pick.samples_per_sec / base.samples_per_sec:.2f}x the baseline `{base.config}`), final loss "
        f"{pick.final_loss:.4f} against the best {best_loss:.4f} at this global batch (tolerance {tol:.0%}), peak "
        f"memory {pick.peak_memory_gib:.3f} GiB. "
    )
    others = tied.drop(pick.name)
    if not others.empty:
        text += (f"{', '.join(f'`{c}`' for c in others.config)} came within {tie:.0%} of the fastest, which is inside "
                 f"the step-time noise (step_cv up to {ok.step_cv.max():.0%}), so the simplest of them is picked. ")
    slow = same.drop(tied.index, errors="ignore")
    if not slow.empty:
        worst = slow.sort_values("samples_per_sec").iloc[0]
        text += (f"The slowest at this global batch is `{worst.config}` ({worst.samples_per_sec:,.0f} samples/s, "
                 f"{worst.samples_per_sec / pick.samples_per_sec:.2f}x). ")
    text += ("Configurations with another global batch take different optimisation steps, so they are reported but "
             "not ranked: a larger global batch buys throughput but changes the learning-rate policy.")
    return pick, text


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
    launch = pd.DataFrame(r["launch"])
    log.table(launch, "launch")
    expected_gb = micro * cfg.train.grad_accum_steps * world
    log.check("logs show rank/world_size and global batch",
              len(launch) == world and sorted(launch["rank"]) == list(range(world))
              and (launch.samples_per_step == expected_gb).all(),
              f"{len(launch)} ranks reported; global batch {micro} x {cfg.train.grad_accum_steps} x {world} = "
              f"{expected_gb}; samples one optimizer step drew over all ranks: {launch.samples_per_step.iloc[0]}",
              "every rank reports; the formula equals the samples one step consumes")

    sh = r["shards"]
    rows = [{"epoch": e, "rank": k, "shard size": v["sizes"][k], "first indices": v["head"][k]}
            for e, v in sh["epochs"].items() for k in range(world)]
    log.section("2. Sharding", f"`DistributedSampler` over the {sh['n']:,} training images, seeded per epoch "
                "(`set_epoch`).")
    log.table(pd.DataFrame(rows), "shards")
    ok = all(v["overlap"] == 0 and v["covers"] and v["deterministic"] for v in sh["epochs"].values())
    log.check("each rank sees a unique shard", ok and (sh["differs_across_epochs"] or world == 1),
              "; ".join(f"epoch {e}: overlap {v['overlap']}, covers all {sh['n']}: {v['covers']}, same on re-draw: "
                        f"{v['deterministic']}" for e, v in sh["epochs"].items())
              + f"; epoch 0 != epoch 1 order: {sh['differs_across_epochs']}",
              "indices disjoint, union = dataset, deterministic per epoch, reshuffled across epochs")

    pairs = r["pairs"]
    log.section("3. DDP correctness", f"Each model trained twice with the same seed, lr policy and global batch "
                f"({micro * world}): {world} DDP ranks x micro batch {micro}, and one process x {micro * world}.")
    log.table(correctness_table(pairs, world, micro), "correctness")
    log.plot(plot_curves([(f"{k}: single vs DDP", p.single, p.ddp, "1 process", f"DDP x{world}")
                          for k, p in pairs.items()]), "single_vs_ddp", "Train loss, single process vs DDP (overlaid)")
    gaps = {k: (abs(_val(p.single)["acc"] - _val(p.ddp)["acc"]), curve_gap(p.single, p.ddp)) for k, p in pairs.items()}
    log.check("single vs DDP: curves similar, accuracy gap small",
              all(a <= ex.max_acc_gap and c <= ex.max_loss_gap for a, c in gaps.values()),
              "; ".join(f"{k}: |acc gap| {a:.4f}, mean |loss gap| {c:.2e}" for k, (a, c) in gaps.items()),
              f"|acc gap| <= {ex.max_acc_gap} and mean |loss gap| per step <= {ex.max_loss_gap}")

    amp = bench_frame(r["amp"])
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
    log.table(amp[["config", "precision", "samples_per_sec", "speed vs fp32", "step_ms", "peak_memory_gib",
                   "first_loss", "final_loss", "skipped_steps", "fp32 loss at equal updates", "stable"]], "amp",
              "final_loss = mean of the last 5 steps. fp16's GradScaler starts at 2^16 and halves on each overflow, "
              "skipping that step: the skipped steps are counted, and the fp32 reference is taken that many steps "
              "earlier.")
    low = amp[amp.precision != "fp32"]
    stable = bool(low.stable.all()) and all(
        abs(row.final_loss - ref[row.precision]) <= ex.max_amp_loss_gap * ref[row.precision] for _, row in low.iterrows()
    )
    bf16 = amp[amp.precision == "bf16"]
    faster = bool((bf16.samples_per_sec > fp32.samples_per_sec).all()) if on_gpu and len(bf16) else True
    log.check("AMP stable (and faster than fp32 on GPU)", stable and faster,
              "; ".join(f"{p.precision}: final loss {p.final_loss:.4f} vs fp32 {ref[p.precision]:.4f} "
                        f"({p.skipped_steps} skipped), {p.samples_per_sec:,.0f} samples/s ({p['speed vs fp32']}x)"
                        for _, p in low.iterrows()),
              f"finite, decreasing, <= 10% skipped steps, within {ex.max_amp_loss_gap:.0%} of fp32's loss after as "
              "many updates"
              + ("; bf16 faster than fp32" if on_gpu else "; speed not required on CPU (no bf16 tensor cores)"))

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
    a_gap, c_gap = abs(_val(base)["acc"] - _val(acc_run)["acc"]), curve_gap(base, acc_run)
    log.check("metrics match across accumulation settings", a_gap <= ex.max_acc_gap and c_gap <= ex.max_loss_gap
              and acc_run.result.step == base.result.step,
              f"|acc gap| {a_gap:.4f}, mean |loss gap| {c_gap:.2e}, steps {base.result.step} vs {acc_run.result.step}",
              f"|acc gap| <= {ex.max_acc_gap}, mean |loss gap| <= {ex.max_loss_gap}, same number of steps")

    split = profile_split(r["amp"]["fp32"].timing if "fp32" in r["amp"] else next(iter(r["amp"].values())).timing)
    ms = dict(zip(split.phase, split["ms per step"], strict=True))
    step_ms = ms["step (measured)"]
    # Bottleneck by kind of work: input pipeline, model compute (forward + backward, which includes DDP's
    # all-reduce), or optimizer update.
    kinds = {"data": ms["data"], "compute": ms["forward"] + ms["backward"], "optimizer": ms["optimizer"]}
    ranked = sorted(kinds.items(), key=lambda kv: kv[1], reverse=True)
    (top, top_ms), (second, second_ms) = ranked[0], ranked[1]
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
                       "self time). The levers are precision, batch size and kernels, not the input pipeline.")
    elif top == "data":
        bottleneck += "The input pipeline starves the model: keep the data on the device, or add loader workers."
    else:
        bottleneck += "The optimizer update dominates: use a fused/foreach optimizer, or a larger batch per step."
    if world > 1:
        bottleneck += (f" One all-reduce of the CNN's {r['n_params']:,} gradients costs {r['allreduce_ms']:.2f} ms "
                       f"over {r['backend']} ({r['allreduce_ms'] / ms['backward']:.0%} of the backward phase).")
    log.text(bottleneck)
    other = split[split.phase == "other"]["share of step"].iloc[0]
    log.check("a clear bottleneck identified", abs(other) <= 0.10 and top_ms >= 0.5 * step_ms,
              f"{top} {top_ms / step_ms:.0%} of the step (next: {second} {second_ms / step_ms:.0%}); the four timed "
              f"phases cover {1 - other:.0%} of the step",
              "the phases account for the step within 10%, and one kind of work (data, compute, optimizer) "
              "takes at least half of it")

    bench = bench_frame(r["ablation"])
    log.section("7. System ablation", f"{len(bench)} configurations of the CNN under DDP x{world}, "
                f"{ex.bench_steps} timed steps each, measured in {ex.bench_rounds} round(s) of alternating order "
                "(samples/s = global batch / median step time; step_cv = std/mean of the step time, the measurement "
                "noise). Written to `bench.csv`.")
    log.table(bench, "bench")
    log.plot(plot_split(bench), "bench_split", "Step time by phase for each configuration")
    pick, text = recommend(bench, ex.max_amp_loss_gap)
    log.text(text)
    log.check("one best config picked", pick is not None,
              f"{pick.config}: {pick.samples_per_sec:,.0f} samples/s" if pick is not None else "none stable",
              "a stable config with the best throughput at equal loss")

    log.section("Timings", "Wall-clock seconds of each stage on rank 0.")
    log.table(pd.DataFrame({"stage": list(r["timings"]), "seconds": [round(v, 1) for v in r["timings"].values()]}),
              "timings")
    log.section("Config", "The resolved config of this run.")
    log.config(cfg)
