"""Week 1's log: tables, plots and checks computed from the runs' own metrics."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from shared.models import build_model  # noqa: E402
from shared.report import WeeklyLog  # noqa: E402
from shared.stats import Comparison, compare  # noqa: E402
from shared.train.classify import ClassifierRun  # noqa: E402
from week01_scaffold import checks  # noqa: E402
from week01_scaffold.config import Week01Config  # noqa: E402
from week01_scaffold.experiments import ReloadResult  # noqa: E402


def _train_rows(run: ClassifierRun) -> pd.DataFrame:
    df = run.metrics()
    return df[df.phase == "train"]


def _val_rows(run: ClassifierRun) -> pd.DataFrame:
    df = run.metrics()
    return df[df.phase == "val"]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def loss_trend(run: ClassifierRun, window: int = 50) -> tuple[float, float]:
    """Mean train loss over the first and the last ``window`` steps."""
    loss = _train_rows(run)["loss"].to_numpy()
    w = max(1, min(window, len(loss) // 4))
    return float(loss[:w].mean()), float(loss[-w:].mean())


def still_descending(run: ClassifierRun, frac: float = 0.2, min_drop: float = 0.01) -> tuple[bool, float]:
    """Is the train loss still falling at the end? Compares the mean loss of the last ``frac`` of the steps with the
    ``frac`` before it; True when it fell by more than ``min_drop`` (relative). Returns (descending, relative drop)."""
    loss = _train_rows(run)["loss"].to_numpy()
    w = max(1, int(len(loss) * frac))
    prev, last = float(loss[-2 * w : -w].mean()), float(loss[-w:].mean())
    drop = (prev - last) / prev if prev else 0.0
    return drop > min_drop, drop


def classify_lrs(cmp: Comparison) -> dict[float, str]:
    """Per lr: ``best`` (only when the comparison is decided), ``tie with best`` (its mean val accuracy is within the
    seed spread of the best's), else ``undershoot`` (smaller than the best) or ``overshoot`` (larger)."""
    out = {}
    for lr, mean in cmp.means.items():
        if lr == cmp.best:
            out[lr] = "best" if cmp.decided else "tied best"
        elif cmp.means[cmp.best] - mean <= max(cmp.ranges[cmp.best], cmp.ranges[lr]):
            out[lr] = "tie with best"
        else:
            out[lr] = "undershoot" if lr < cmp.best else "overshoot"
    return out


def plot_seeds(runs: list[ClassifierRun]):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for r in runs:
        tr = _train_rows(r)
        line = ax1.plot(tr.step, tr.loss.ewm(alpha=0.05).mean(), label=f"seed {r.record['seed']}")[0]
        ax1.plot(tr.step, tr.loss, color=line.get_color(), alpha=0.15, lw=0.5)
        va = _val_rows(r)
        ax2.plot(va.epoch, 100 * va.acc, "o-", label=f"seed {r.record['seed']}")
    ax1.set(xlabel="step", ylabel="train loss (nats)", title="Train loss (EMA; raw faint)", yscale="log")
    ax2.set(xlabel="epoch", ylabel="val accuracy (%)", title="Validation accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def plot_lr(runs: dict[float, ClassifierRun]):
    fig, ax = plt.subplots(figsize=(8, 4))
    for lr, r in sorted(runs.items(), reverse=True):
        tr = _train_rows(r)
        ax.plot(tr.step, tr.loss.ewm(alpha=0.05).mean(), label=f"lr={lr:g}")
    ax.set(xlabel="step", ylabel="train loss (nats, EMA)", yscale="log", title="LR ablation: train loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def build_log(
    log: WeeklyLog,
    cfg: Week01Config,
    data_summary: pd.DataFrame,
    seeds: list[ClassifierRun],
    reload: ReloadResult,
    lr_runs: dict[float, list[ClassifierRun]],
    timings: dict[str, float],
) -> None:
    """Fill ``log`` with the week's sections and checks."""
    exp = cfg.experiment
    base = seeds[0]

    log.section("1. Data", "MNIST through the dataset registry (sha256-verified), 55k/5k train/val split of the 60k "
                "training images (fixed by `data.split_seed`), 10k test kept apart. Normalisation uses the "
                "training split's pixel mean and std.")
    log.table(data_summary, "data_summary")

    first, last = loss_trend(base)
    log.add(checks.loss_decreases(first, last, base.record["seed"]))

    seed_rows = []
    for r in seeds:
        m = r.record["metrics"]
        seed_rows.append({
            "seed": r.record["seed"], "epochs": m["epochs"], "steps": m["steps"],
            "best val acc": round(m["best_val"]["acc"], 4), "best epoch": m["best_val"]["epoch"],
            "final val loss": round(m["last_val"]["loss"], 4), "final val acc": round(m["last_val"]["acc"], 4),
            "train time (s)": r.record["train_time_s"], "run": r.record["run_id"],
        })
    seed_df = pd.DataFrame(seed_rows)
    accs = seed_df["final val acc"].tolist()
    mean, std = statistics.mean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)
    log.section("2-3. Softmax regression: train/eval loop, best checkpoint",
                f"`SoftmaxRegression` (one `nn.Linear(784, 10)`), `CrossEntropyLoss`, {cfg.train.optimizer.upper()} "
                f"lr={cfg.train.lr:g}, batch {cfg.data.batch_size}, {cfg.train.epochs} epochs. the best checkpoint (`checkpoints/best`) is chosen by "
                "val accuracy.")
    log.plot(plot_seeds(seeds), "baseline_curves", "Baseline runs, one per seed: train loss per step and val accuracy per epoch")
    log.table(seed_df, "seeds")
    log.add(checks.above_chance(accs), checks.reaches_accuracy(accs, exp.min_val_acc))

    rl = pd.DataFrame([
        {"what": "val (recorded at training time)", "loss": reload.recorded_val["loss"], "acc": reload.recorded_val["acc"]},
        {"what": "val (best checkpoint reloaded)", "loss": reload.reloaded_val["loss"], "acc": reload.reloaded_val["acc"]},
        {"what": "test (best checkpoint reloaded)", "loss": reload.test["loss"], "acc": reload.test["acc"]},
    ])
    log.section("3. Reloading the best checkpoint", f"`checkpoints/best` (step {reload.best_step}) is loaded into a freshly "
                "built model (weights from safetensors) and evaluated again.")
    log.table(rl, "reload")
    log.add(checks.reload_exact(reload.recorded_val, reload.reloaded_val),
            checks.test_accuracy(reload.test, exp.min_val_acc - 0.01))

    log.section("4. Reproducibility over seeds",
                f"Final val accuracy over seeds {exp.seeds}: **{_pct(mean)} ± {100 * std:.2f} pp** (mean ± sample std).")
    log.add(checks.seeds_consistent(accs, [loss_trend(r) for r in seeds], exp.max_seed_std))

    scores = {lr: [r.record["metrics"]["last_val"]["acc"] for r in runs] for lr, runs in lr_runs.items()}
    cmp = compare(scores)
    verdict = classify_lrs(cmp)
    rows, descending = [], {}
    for lr, runs in sorted(lr_runs.items(), reverse=True):
        f, la = loss_trend(runs[0], window=20)
        descending[lr], drop = still_descending(runs[0])
        rows.append({"lr": lr, "seeds": len(runs), "train loss first 20 (seed 0)": round(f, 4),
                     "train loss last 20 (seed 0)": round(la, 4), "loss drop over the last 20% of steps": round(drop, 4),
                     "mean final val loss": round(statistics.fmean(r.record["metrics"]["last_val"]["loss"] for r in runs), 4),
                     "mean final val acc": round(cmp.means[lr], 4), "seed range (pp)": round(100 * cmp.ranges[lr], 2),
                     "gap to best (pp)": round(100 * (cmp.means[cmp.best] - cmp.means[lr]), 2),
                     "verdict": verdict[lr], "runs": ", ".join(r.record["run_id"] for r in runs)})
    lr_df = pd.DataFrame(rows)

    def _named(kind: str) -> str:
        lrs = [lr for lr, v in verdict.items() if v == kind]
        if not lrs:
            return "none in the grid"
        return ", ".join(f"{lr:g} ({'still descending' if descending[lr] else 'flat'} at the end)" for lr in lrs)

    seeds_used = sorted({r.record["seed"] for runs in lr_runs.values() for r in runs})
    headline = (f"**Best lr = {cmp.best:g}**" if cmp.decided else f"**No single best lr** (best mean: {cmp.best:g})")
    log.section("5. Learning-rate ablation",
                f"Seeds {seeds_used}, {exp.ablation_epochs} epoch(s) per point, everything else as the baseline. "
                f"{headline}: {cmp.describe(fmt=lambda x: f'{100 * x:.2f}', unit=' pp', name=lambda lr: f'lr {lr:g}')}. "
                f"Undershooting (smaller than the best, lower accuracy): {_named('undershoot')}. Overshooting (larger "
                f"than the best, lower accuracy): {_named('overshoot')}. Within the seed spread of the best: "
                f"{', '.join(f'{lr:g}' for lr, v in verdict.items() if v == 'tie with best') or 'none'}. "
                "'Still descending' means the seed-0 train loss fell by more than 1% between the last two fifths "
                "of the steps.")
    log.plot(plot_lr({lr: runs[0] for lr, runs in lr_runs.items()}), "lr_ablation",
             "LR ablation: train loss per step (EMA, seed 0), all learning rates in one figure")
    log.table(lr_df, "lr_ablation")
    log.add(checks.lr_ablation_brackets(cmp, verdict))

    steps = sum(r.record["metrics"]["steps"] for r in seeds)
    train_s = sum(r.record["train_time_s"] for r in seeds)
    n_params = sum(p.numel() for p in build_model(cfg.model).parameters())
    step_ms = 1e3 * train_s / max(steps, 1)
    gflops = 6 * n_params * cfg.data.batch_size / (step_ms * 1e-3) / 1e9  # forward + backward ~ 6 FLOPs/param/sample
    log.section("Timings (wall clock, seconds)",
                f"The baseline runs took {train_s:.1f} s for {steps:,} optimizer steps: {step_ms:.2f} ms per step "
                f"(with the per-step logging) for a model of {n_params:,} parameters, i.e. "
                f"6 x {n_params:,} x {cfg.data.batch_size} FLOPs per step at {gflops:.2f} GFLOP/s achieved.")
    log.table(pd.DataFrame({"stage": list(timings), "seconds": [round(v, 1) for v in timings.values()]}), "timings")
    log.section("Resolved config (baseline)")
    log.config(cfg)
    log.section("Where the artefacts are",
                f"Run directories (config.yaml, env.json, metrics.csv, tb/, checkpoints/, result.json): "
                f"`{Path(base.run.dir).parent}`. Every run is a line in `runs/registry.jsonl`.")
