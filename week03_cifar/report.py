"""Week 3's log: baseline, the four ablation tables (each row with its config file), error analysis, speed track."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from shared.analysis import confusion_pairs, plot_confusion, plot_error_grid  # noqa: E402
from shared.report import WeeklyLog  # noqa: E402
from shared.train.classify import ClassifierRun  # noqa: E402
from week03_cifar.config import Week03Config  # noqa: E402
from week03_cifar.experiments import ErrorAnalysis, EvalModeCheck, Variant, denormalise  # noqa: E402


def _train_rows(run: ClassifierRun) -> pd.DataFrame:
    m = run.metrics()
    return m[m.phase == "train"].reset_index(drop=True)


def _val_rows(run: ClassifierRun) -> pd.DataFrame:
    m = run.metrics()
    return m[m.phase == "val"].reset_index(drop=True)


def epochs_to(run: ClassifierRun, acc: float) -> int | None:
    """First epoch whose val accuracy reached ``acc`` (None if never)."""
    v = _val_rows(run)
    hit = v[v.acc >= acc]
    return int(hit.epoch.iloc[0]) if len(hit) else None


def ablation_table(variants: list[Variant], target: float) -> pd.DataFrame:
    rows = []
    for v in variants:
        val, tr = v.run.result.last_val, v.train_eval
        t = _train_rows(v.run)
        rows.append({
            "variant": v.name, "val acc": round(val["acc"], 4), "val loss": round(val["loss"], 4),
            "train acc (no aug)": round(tr["acc"], 4), "train-val gap (pp)": round(100 * (tr["acc"] - val["acc"]), 2),
            f"epochs to {target:.0%}": epochs_to(v.run, target) or "not reached",
            "samples/s": round(t.samples_per_sec.median()), "train time (s)": round(v.run.result.train_time_s, 1),
            "config file": f"`{v.source}`",
        })
    return pd.DataFrame(rows)


def winner(table: pd.DataFrame) -> tuple[str, float]:
    """The variant with the best val accuracy and its margin over the runner-up (percentage points)."""
    ranked = table.sort_values("val acc", ascending=False)
    margin = ranked["val acc"].iloc[0] - (ranked["val acc"].iloc[1] if len(ranked) > 1 else 0.0)
    return ranked.variant.iloc[0], 100 * margin


def speed_vs_end(table: pd.DataFrame, target: float) -> str:
    """Which variant gets going faster (epochs to ``target``) and which ends higher, from the table."""
    col = f"epochs to {target:.0%}"
    reached = table[table[col] != "not reached"]
    if reached.empty:
        return f"Neither reached {target:.0%} val accuracy within the budget."
    fastest = reached.sort_values(col, kind="stable").iloc[0]
    best = table.sort_values("val acc", ascending=False).iloc[0]
    return (f"`{fastest.variant}` reached {target:.0%} first (epoch {fastest[col]}); `{best.variant}` ends highest "
            f"at {best['val acc']:.4f}, so here the difference is in "
            + ("both speed and end point." if fastest.variant == best.variant else "the end point, not the start."))


def regularisation_reading(table: pd.DataFrame) -> str:
    """What the regularisation table says, from its numbers: the regime and what the regularisers hold back."""
    by = table.set_index("variant")
    if not {"all_on", "none"} <= set(by.index):
        return ""
    on, off = by.loc["all_on"], by.loc["none"]
    regime = ("The model underfits at this budget (train accuracy "
              f"{on['train acc (no aug)']:.1%} with everything on), so regularisers cost accuracy here"
              if on["train acc (no aug)"] < 0.9 else "The model fits its training images, so regularisers matter")
    return (f"{regime}: removing all of them moves val accuracy {on['val acc']:.4f} → {off['val acc']:.4f} while the "
            f"train-val gap grows {on['train-val gap (pp)']:.2f} → {off['train-val gap (pp)']:.2f} pp, which is what "
            "they hold back; with more epochs the gap, and their value, grow.")


def plot_first_steps(variants: list[Variant], steps: int):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for v in variants:
        t = _train_rows(v.run).head(steps)
        ax.plot(t.step, t.loss.rolling(5, min_periods=1).mean(), label=v.name)
    ax.axhline(math.log(10), color="grey", ls=":", lw=1, label="ln 10 (chance)")
    ax.set(xlabel="step", ylabel="train loss (5-step mean)", title=f"First {steps} steps by initialisation")
    ax.legend()
    fig.tight_layout()
    return fig


def start_note(v: Variant, steps: int) -> str:
    """Divergence or a slow start in the first ``steps`` steps, from the loss curve."""
    t = _train_rows(v.run).head(steps)
    peak, half = t.loss.max(), t.loss.iloc[len(t) // 2 :].mean()
    if not math.isfinite(peak) or peak > 2 * math.log(10):
        return f"unstable start (loss peaks at {peak:.2f}, above 2 ln 10)"
    if half > 0.95 * math.log(10):
        return f"slow start (loss still {half:.2f} ≈ chance in the second half)"
    return f"healthy start (peak {peak:.2f}, second-half mean {half:.2f})"


def plot_val_curves(variants: list[Variant], title: str):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for v in variants:
        val = _val_rows(v.run)
        ax.plot(val.epoch, val.acc, marker="o", label=v.name)
    ax.set(xlabel="epoch", ylabel="val accuracy", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def fit_signal(pair: pd.Series, cm_train, classes: list[str]) -> str:
    """Over- or under-fitting, for one confusion pair, from the same pair's rate on training images."""
    i, j = classes.index(pair.true), classes.index(pair.predicted)
    train_rate = int(cm_train[i, j]) / max(int(cm_train[i].sum()), 1)
    test_rate = pair["true-class error rate"]
    if train_rate >= 0.5 * test_rate:
        return f"underfitting: confused on training images too ({train_rate:.1%} vs {test_rate:.1%} on test)"
    return f"overfitting: separated on training images ({train_rate:.1%}) but not on test ({test_rate:.1%})"


def build_log(log: WeeklyLog, cfg: Week03Config, r: dict[str, Any]) -> None:
    ex = cfg.experiment
    base: ClassifierRun = r["baseline"]
    t = _train_rows(base)
    log.section("1. Data and baseline", r["data_text"])
    w = max(1, min(20, len(t) // 4))  # 20-step windows (shorter for a very short smoke run)
    first, last = t.loss.head(w).mean(), t.loss.tail(w).mean()
    val = base.result.last_val
    log.table(pd.DataFrame([{"model": cfg.model.name, "params": sum(p.numel() for p in base.model.parameters()),
                             "epochs": base.result.epoch, f"first-{w}-step loss": round(first, 4),
                             f"last-{w}-step loss": round(last, 4), "val acc": round(val["acc"], 4),
                             "train time (s)": round(base.result.train_time_s, 1)}]), "baseline")
    log.check("baseline: loss decreases and val acc > random", last < first and val["acc"] > 0.1,
              f"loss {first:.3f} -> {last:.3f}; val acc {val['acc']:.4f}",
              f"last-{w}-step mean < first-{w}-step mean; val acc > 0.10")

    winners = {}
    texts = {
        "optimizer": "Same schedule, epochs and data; only the optimizer (and its usual lr and decay) changes.",
        "init": f"The first {ex.curve_steps} steps show what initialisation changes: the start.",
        "norm": "Normalisation layer after every conv; `none` gives the convs their bias back.",
        "regularisation": "Each regulariser removed in turn; the train-val gap (accuracy on un-augmented "
                          "training images minus val accuracy) shows what each one holds back.",
    }
    for i, group in enumerate(("optimizer", "init", "norm", "regularisation"), start=2):
        variants: list[Variant] = r["ablations"][group]
        table = ablation_table(variants, ex.target_acc)
        name, margin = winner(table)
        winners[group] = (name, margin)
        log.section(f"{i}. {group.capitalize()} ablation", texts[group])
        log.table(table, f"ablation_{group}")
        if group == "init":
            log.plot(plot_first_steps(variants, ex.curve_steps), "init_first_steps", "Loss over the first steps by init")
            log.text("; ".join(f"`{v.name}`: {start_note(v, ex.curve_steps)}" for v in variants) + ".")
        else:
            log.plot(plot_val_curves(variants, f"{group}: val accuracy per epoch"), f"ablation_{group}",
                     f"Val accuracy per epoch, {group} ablation")
        if group == "norm":
            ev: EvalModeCheck = r["eval_mode"]
            log.text(f"Eval mode uses the running statistics: on 256 val images the `batch` variant's train-mode "
                     f"and eval-mode logits differ by up to {ev.max_train_eval_diff:.4f}; two eval passes are "
                     f"{'identical' if ev.eval_repeat_equal else 'NOT identical'}; the running mean is "
                     f"{'unchanged' if ev.running_stats_unchanged else 'CHANGED'} by eval passes.")
        extra = {"optimizer": speed_vs_end(table, ex.target_acc), "regularisation": regularisation_reading(table)}
        log.text(f"**Winner: `{name}`** by {margin:.2f} pp of val accuracy over the runner-up."
                 + (" A margin under 1 pp is within the seed-to-seed spread of one run per variant (week 1 measured "
                    "~0.1-0.5 pp on MNIST); treat it as a tie." if margin < 1 else "")
                 + (" " + extra[group] if group in extra else ""))
    ev = r["eval_mode"]
    log.check("ablation winners named with their margins", all(m > 0 for _, m in winners.values()),
              "; ".join(f"{g}: {n} (+{m:.2f} pp)" for g, (n, m) in winners.items()),
              "each ablation has a single best variant by val accuracy")
    log.check("eval uses running statistics", ev.max_train_eval_diff > 1e-4 and ev.eval_repeat_equal
              and ev.running_stats_unchanged,
              f"max |train - eval| logits {ev.max_train_eval_diff:.4f}; eval repeat identical {ev.eval_repeat_equal}; "
              f"running stats unchanged {ev.running_stats_unchanged}", "differs from train mode, deterministic")

    ea: ErrorAnalysis = r["errors"]
    classes = list(r["classes"])
    log.section("6. Error analysis", f"The baseline model on the {len(ea.target):,} test images: "
                f"{len(ea.wrong_idx):,} errors ({len(ea.wrong_idx) / len(ea.target):.1%}).")
    log.plot(plot_confusion(ea.cm_test, classes, "Test confusion matrix (baseline)"), "confusion", "Confusion matrix")
    pairs = confusion_pairs(ea.cm_test, classes, top=10)
    pairs["fit signal"] = [fit_signal(p, ea.cm_train, classes) for _, p in pairs.iterrows()]
    pairs["share of errors"] = pairs["share of errors"].round(3)
    pairs["true-class error rate"] = pairs["true-class error rate"].round(3)
    log.table(pairs, "confusion_pairs", "Errors grouped by (true, predicted) pair, with the same pair's rate on "
              "training images: a pair confused on training images too is underfitting, one separated there is "
              "overfitting.")
    shown = ea.wrong_idx[: ex.error_grid]
    imgs = denormalise(r["test_x"][shown], r["splits_norm"])
    log.plot(plot_error_grid(imgs, [classes[int(ea.target[i])] for i in shown], [classes[int(ea.pred[i])] for i in shown]),
             "errors", f"{len(shown)} misclassified test images (true → predicted)")
    covered = sum(int(((ea.target[shown] == classes.index(p.true)) & (ea.pred[shown] == classes.index(p.predicted))).sum())
                  for _, p in confusion_pairs(ea.cm_test, classes, top=100).iterrows())
    log.check(">= 30 error cases categorised", len(shown) >= 30 and covered == len(shown) and len(pairs) > 0,
              f"{len(shown)} shown, {covered} of them in a confusion-pair group; {len(pairs)} top pairs with a fit signal",
              ">= 30 errors, each in a (true, predicted) group tied to an over/under-fitting signal")

    sp = r["speed"]
    on_gpu = r["device"].startswith("cuda")
    log.section("7. Speed track", f"`{cfg.speed.model.name}` (width {cfg.speed.model.width}), batch "
                f"{cfg.speed.batch_size}, {cfg.speed.train.epochs} epochs, one-cycle lr (linear warm-up over "
                f"{cfg.speed.warmup_frac:.0%} of the steps to {cfg.speed.train.lr}, then linear decay), label "
                f"smoothing {cfg.speed.train.label_smoothing}, {cfg.speed.train.precision}. Evaluated on the test "
                "split after every epoch (the fixed recipe is never tuned on it). Time = training loop only "
                "(forward, backward, optimizer, on-device augmentation); data loading and evaluation excluded.")
    shown = sp.assign(train_time_s=sp.train_time_s.round(1),
                      time_to_target_s=pd.to_numeric(sp.time_to_target_s, errors="coerce").round(1))
    log.table(shown.astype(object).where(shown.notna(), "not reached"), "speed")
    mean_acc = sp.best_test_acc.mean()
    if on_gpu:
        reached = sp.time_to_target_s.notna().all()
        log.check(f"speed track reaches >= {cfg.speed.target_acc:.0%} test accuracy", mean_acc >= cfg.speed.target_acc,
                  f"mean best test acc {mean_acc:.4f} over {len(sp)} seeds; time to target "
                  + (f"{sp.time_to_target_s.mean():.1f} s mean" if reached else "not reached by every seed"),
                  f">= {cfg.speed.target_acc} (GPU profile)")
    else:
        log.check("speed track: reports what the CPU budget reached", len(sp) > 0 and mean_acc > 0.1,
                  f"no GPU: {cfg.speed.model.name} width {cfg.speed.model.width} on {cfg.speed.train_subset or 'all'} "
                  f"images for {cfg.speed.train.epochs} epochs reached {mean_acc:.4f} test accuracy in "
                  f"{sp.train_time_s.mean():.0f} s of training", "the CPU profile reports its figure (94% needs the GPU)")

    log.section("Timings", "Wall-clock seconds of each stage.")
    log.table(pd.DataFrame({"stage": list(r["timings"]), "seconds": [round(v, 1) for v in r["timings"].values()]}),
              "timings")
    log.section("Config", "The resolved baseline config.")
    log.config(cfg)
