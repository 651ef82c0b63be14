"""Week 1's log: tables, plots and checks computed from the runs' own metrics."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from shared.report import WeeklyLog  # noqa: E402
from shared.train.classify import ClassifierRun  # noqa: E402
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


def lr_rank_key(val: dict[str, float]) -> tuple[float, float]:
    """Higher val accuracy wins; an accuracy tie (it happens: 5,000 images, 0.02 pp steps) goes to the lower val loss."""
    return (val["acc"], -val["loss"])


def rank_lrs(final_val: dict[float, dict[str, float]]) -> list[float]:
    """Learning rates from best to worst by :func:`lr_rank_key`."""
    return sorted(final_val, key=lambda lr: lr_rank_key(final_val[lr]), reverse=True)


def classify_lrs(final_val: dict[float, dict[str, float]]) -> dict[float, str]:
    """Best lr by :func:`lr_rank_key`; every other lr is under- (smaller) or over-shooting (larger than the best)."""
    best = rank_lrs(final_val)[0]
    return {lr: "best" if lr == best else ("undershoot" if lr < best else "overshoot") for lr in final_val}


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
    lr_runs: dict[float, ClassifierRun],
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
    log.check(f"loss decreases over steps (seed {base.record['seed']})", last < first,
              f"mean loss first 50 steps {first:.4f} -> last 50 {last:.4f}", "last < first")

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
    log.check("val acc > 10% (random guessing)", min(accs) > 0.10, f"min over seeds {_pct(min(accs))}", "> 10%")
    log.check(f"val acc >= {_pct(exp.min_val_acc)} (softmax regression)", mean >= exp.min_val_acc,
              f"mean final val acc {_pct(mean)}", f">= {_pct(exp.min_val_acc)}")

    rl = pd.DataFrame([
        {"what": "val (recorded at training time)", "loss": reload.recorded_val["loss"], "acc": reload.recorded_val["acc"]},
        {"what": "val (best checkpoint reloaded)", "loss": reload.reloaded_val["loss"], "acc": reload.reloaded_val["acc"]},
        {"what": "test (best checkpoint reloaded)", "loss": reload.test["loss"], "acc": reload.test["acc"]},
    ])
    log.section("3. Reloading the best checkpoint", f"`checkpoints/best` (step {reload.best_step}) is loaded into a freshly "
                "built model (weights from safetensors) and evaluated again.")
    log.table(rl, "reload")
    log.check("reloaded best checkpoint reproduces val metrics exactly", reload.exact,
              f"loss {reload.reloaded_val['loss']!r} vs {reload.recorded_val['loss']!r}, "
              f"acc {reload.reloaded_val['acc']!r} vs {reload.recorded_val['acc']!r}", "bitwise equal")
    log.check("test accuracy of the best checkpoint reported", reload.test["acc"] >= exp.min_val_acc - 0.01,
              f"test acc {_pct(reload.test['acc'])} (n={reload.test['n']})", f">= {_pct(exp.min_val_acc - 0.01)}")

    log.section("4. Reproducibility over seeds",
                f"Final val accuracy over seeds {exp.seeds}: **{_pct(mean)} ± {100 * std:.2f} pp** (mean ± sample std).")
    trends = [loss_trend(r) for r in seeds]
    consistent = std <= exp.max_seed_std and all(b < a for a, b in trends)
    log.check("three seeds show consistent trends", consistent,
              f"std {100 * std:.3f} pp; loss decreased in {sum(b < a for a, b in trends)}/{len(trends)} seeds",
              f"std <= {100 * exp.max_seed_std:.2f} pp and loss decreases for every seed")

    final_val = {lr: r.record["metrics"]["last_val"] for lr, r in lr_runs.items()}
    final = {lr: v["acc"] for lr, v in final_val.items()}
    verdict = classify_lrs(final_val)
    ranked = rank_lrs(final_val)
    best_lr = ranked[0]
    rows = []
    for lr, r in sorted(lr_runs.items(), reverse=True):
        f, la = loss_trend(r, window=20)
        rows.append({"lr": lr, "train loss first 20": round(f, 4), "train loss last 20": round(la, 4),
                     "final val loss": round(r.record["metrics"]["last_val"]["loss"], 4),
                     "final val acc": round(final[lr], 4), "gap to best (pp)": round(100 * (final[best_lr] - final[lr]), 2),
                     "verdict": verdict[lr], "run": r.record["run_id"]})
    lr_df = pd.DataFrame(rows)
    under = [f"{lr:g}" for lr, v in verdict.items() if v == "undershoot"]
    over = [f"{lr:g}" for lr, v in verdict.items() if v == "overshoot"]
    runner_up_lr = ranked[1] if len(ranked) > 1 else None  # a one-point grid has no runner-up, and fails the check
    runner_up = final[runner_up_lr] if runner_up_lr is not None else float("nan")
    log.section("5. Learning-rate ablation",
                f"Seed {exp.seeds[0]}, {exp.ablation_epochs} epoch(s) per point, everything else as the baseline. "
                f"**Best lr = {best_lr:g}** (val acc {_pct(final[best_lr])}, {100 * (final[best_lr] - runner_up):.2f} pp "
                f"ahead of the runner-up). Undershooting (too small, still descending when the budget ends): "
                f"{', '.join(under) or 'none in the grid'}. Overshooting (too large, noisy or higher loss): "
                f"{', '.join(over) or 'none in the grid'}.")
    log.plot(plot_lr(lr_runs), "lr_ablation", "LR ablation: train loss per step (EMA), all learning rates in one figure")
    log.table(lr_df, "lr_ablation")
    best_desc = f"best lr {best_lr:g}: val acc {_pct(final[best_lr])}, loss {final_val[best_lr]['loss']:.4f}"
    log.check("LR ablation identifies the best lr",
              runner_up_lr is not None and lr_rank_key(final_val[best_lr]) > lr_rank_key(final_val[runner_up_lr]),
              best_desc + (f"; runner-up lr {runner_up_lr:g}: {_pct(runner_up)}, loss {final_val[runner_up_lr]['loss']:.4f}"
                           if runner_up_lr is not None else "; no runner-up (one learning rate in the grid)"),
              "a unique best: highest val acc, a tie broken by lower val loss")

    log.section("Timings (wall clock, seconds)",
                "Softmax regression has 7,850 parameters: a step costs microseconds of arithmetic, so the time is "
                "Python, kernel launches and the per-step `loss.item()` used for logging. A GPU cannot speed this "
                "model up; the later weeks' models are where it pays.")
    log.table(pd.DataFrame({"stage": list(timings), "seconds": [round(v, 1) for v in timings.values()]}), "timings")
    log.section("Resolved config (baseline)")
    log.config(cfg)
    log.section("Where the artefacts are",
                f"Run directories (config.yaml, env.json, metrics.csv, tb/, checkpoints/, result.json): "
                f"`{Path(base.run.dir).parent}`. Every run is a line in `runs/registry.jsonl`.")
