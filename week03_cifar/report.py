"""Week 3's log: baseline, the four ablation tables (each row with its config file), error analysis, speed track.

Every sentence that states a result is built from the measured numbers; the checks are the pure functions of
``checks.py``, fed the values this module extracts from the runs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from shared.analysis import confusion_fit_signals, pair_signal, plot_confusion, plot_error_grid  # noqa: E402
from shared.report import WeeklyLog  # noqa: E402
from shared.stats import Comparison, compare  # noqa: E402
from shared.train.classify import ClassifierRun  # noqa: E402
from week03_cifar import checks  # noqa: E402
from week03_cifar.checks import BaselineBudget, BaselineCurve, SpeedRuns, VariantScores  # noqa: E402
from week03_cifar.config import Week03Config  # noqa: E402
from week03_cifar.experiments import ErrorAnalysis, EvalModeCheck, Variant, denormalise  # noqa: E402

FITS_TRAIN = 0.9  # train accuracy (no augmentation) from which the regularisation reading calls the model fitted


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


def by_variant(variants: list[Variant]) -> dict[str, list[Variant]]:
    """The runs of each variant (its seeds), variants in file order."""
    out: dict[str, list[Variant]] = defaultdict(list)
    for v in variants:
        out[v.name].append(v)
    return dict(out)


# ---- what the checks read ----------------------------------------------------------------------------------------

def baseline_curve(run: ClassifierRun, num_classes: int) -> BaselineCurve:
    """First-step loss, first/last-window means (20 steps, shorter for a very short run), final val acc."""
    t = _train_rows(run)
    w = max(1, min(20, len(t) // 4))
    return BaselineCurve(float(t.loss.iloc[0]), float(t.loss.head(w).mean()), float(t.loss.tail(w).mean()), w,
                         float(run.result.last_val["acc"]), num_classes)


def variant_scores(variants: list[Variant]) -> list[VariantScores]:
    """Final val accuracy per seed of every variant of one ablation."""
    return [VariantScores(name, tuple(v.seed for v in runs), tuple(float(v.run.result.last_val["acc"]) for v in runs))
            for name, runs in by_variant(variants).items()]


def speed_runs(sp: pd.DataFrame, model: str) -> SpeedRuns:
    """The speed-track table (``bench_speed.speed_track``) as the checks read it."""
    ttt = tuple(None if pd.isna(t) else float(t) for t in sp.time_to_target_s)
    return SpeedRuns(model, int(sp.epochs.min()) if len(sp) else 0, int(sp.train_images.min()) if len(sp) else 0,
                     tuple(sp.final_test_acc.astype(float)), tuple(sp.best_test_acc.astype(float)), ttt)


def baseline_budget(base: ClassifierRun, model: str, train_images: int, ea: ErrorAnalysis,
                    ablations: dict[str, list[Variant]]) -> BaselineBudget:
    """The baseline's epochs, training images and test accuracy (from the error analysis's predictions), and the
    seed range of the ablation variant that is the baseline's own config (the run with the baseline's run id)."""
    test_acc = float((ea.pred == ea.target).float().mean())
    spread = float("nan")
    for variants in ablations.values():
        same = [v for v in variants if v.run.run.run_id == base.run.run_id]
        if same:
            spread = next(s.spread_pp for s in variant_scores(variants) if s.name == same[0].name)
            break
    return BaselineBudget(model, int(base.result.epoch), train_images, test_acc, spread)


# ---- tables and prose ----------------------------------------------------------------------------------------------

def _per_seed(xs: list[Any]) -> str:
    return " / ".join("not reached" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x) for x in xs)


def ablation_table(variants: list[Variant], target: float) -> pd.DataFrame:
    """One row per variant: means over its seeds, the per-seed val accuracies and their range, its config file."""
    rows = []
    for name, runs in by_variant(variants).items():
        val = [v.run.result.last_val for v in runs]
        acc = [float(x["acc"]) for x in val]
        tr = [float(v.train_eval["acc"]) for v in runs]
        mean = sum(acc) / len(acc)
        rows.append({
            "variant": name, "seeds": " / ".join(str(v.seed) for v in runs), "val acc": round(mean, 4),
            "val acc per seed": _per_seed(acc), "seed range (pp)": round(100 * (max(acc) - min(acc)), 2),
            "val loss": round(sum(float(x["loss"]) for x in val) / len(val), 4),
            "train acc (no aug)": round(sum(tr) / len(tr), 4),
            "train-val gap (pp)": round(100 * (sum(tr) / len(tr) - mean), 2),
            f"epochs to {target:.0%}": _per_seed([epochs_to(v.run, target) for v in runs]),
            "samples/s": round(pd.concat([_train_rows(v.run).samples_per_sec for v in runs]).median()),
            "train time (s)": round(sum(v.run.result.train_time_s for v in runs) / len(runs), 1),
            "config file": f"`{runs[0].source}`",
        })
    return pd.DataFrame(rows)


def verdict_text(c: Comparison, seeds: int) -> str:
    """The ablation's conclusion, from :func:`checks.decide` (margins and spreads in pp)."""
    if c.runner_up is None:
        return f"Only `{c.best}` ran: nothing to compare."
    lead = f"`{c.best}` leads `{c.runner_up}` by {c.margin:.2f} pp of mean val accuracy"
    if c.min_seeds < 2:
        return f"**No winner.** {lead}, but with one seed the seed-to-seed spread is not measured."
    rule = f"the larger seed range of the two ({c.spread:.2f} pp over {seeds} seeds)"
    if c.winner is not None:
        return f"**Winner: `{c.best}`** by {c.margin:.2f} pp of mean val accuracy over `{c.runner_up}`, more than {rule}."
    return f"**Tie.** {lead}, not more than {rule}: no winner is named."


def speed_vs_end(variants: list[Variant], verdict: Comparison, target: float) -> str:
    """Which variant gets going faster (the epoch by which every seed reached ``target``) and which ends higher."""
    worst = {}
    for name, runs in by_variant(variants).items():
        e = [epochs_to(v.run, target) for v in runs]
        worst[name] = None if any(x is None for x in e) else max(e)
    reached = {n: e for n, e in worst.items() if e is not None}
    end = (f"`{verdict.winner}` ends higher beyond the seed spread" if verdict.winner is not None
           else "the end points tie within the seed spread")
    if not reached:
        return f"No variant reached {target:.0%} val accuracy in every seed within the budget; {end}."
    first = min(reached.values())
    leaders = [n for n, e in reached.items() if e == first]
    listing = ", ".join(f"`{n}` {'epoch ' + str(e) if e is not None else 'not in every seed'}" for n, e in worst.items())
    start = (f"`{leaders[0]}` gets going first" if len(leaders) == 1
             else "no difference in the start at one-epoch resolution")
    return f"Epoch by which every seed reached {target:.0%} val accuracy: {listing}; {start}; {end}."


def regularisation_reading(table: pd.DataFrame, variants: list[Variant]) -> str:
    """What the regularisation table says, from its numbers: the regime, the effect of removing every regulariser
    on val accuracy and on the train-val gap, each against its seed spread."""
    by, runs = table.set_index("variant"), by_variant(variants)
    if not {"all_on", "none"} <= set(by.index):
        return ""
    on, off = by.loc["all_on"], by.loc["none"]
    fitted = on["train acc (no aug)"] >= FITS_TRAIN
    regime = (f"With every regulariser on, accuracy on un-augmented training images is {on['train acc (no aug)']:.1%}"
              + (f", at least {FITS_TRAIN:.0%}: the model fits its training images" if fitted
                 else f", below {FITS_TRAIN:.0%}: the model underfits at this budget"))
    scores = {s.name: s for s in variant_scores(variants)}
    v = checks.decide([scores["all_on"], scores["none"]])
    effect = (f"removing all of them moves mean val accuracy {on['val acc']:.4f} → {off['val acc']:.4f} "
              f"({100 * (off['val acc'] - on['val acc']):+.2f} pp), "
              + ("beyond" if v.winner is not None else "within") + f" the seed spread ({v.spread:.2f} pp)")
    gaps = {n: [100 * (float(r.train_eval["acc"]) - float(r.run.result.last_val["acc"])) for r in runs[n]]
            for n in ("none", "all_on")}
    g = compare(gaps)  # the larger gap "wins" only beyond the larger of the two gaps' seed ranges
    moved = f"the train-val gap goes {on['train-val gap (pp)']:.2f} → {off['train-val gap (pp)']:.2f} pp"
    gap = (f"{moved}, more than its seed range ({g.spread:.2f} pp): that gap is what they hold back"
           if g.winner == "none" else
           f"{moved}: it shrinks beyond its seed range ({g.spread:.2f} pp)" if g.winner == "all_on" else
           f"{moved}, within its seed range ({g.spread:.2f} pp): no gap held back is measurable at this budget")
    return f"{regime}; {effect}; {gap}."


def plot_first_steps(variants: list[Variant], steps: int):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for k, (name, runs) in enumerate(by_variant(variants).items()):
        for j, v in enumerate(runs):
            t = _train_rows(v.run).head(steps)
            ax.plot(t.step, t.loss.rolling(5, min_periods=1).mean(), color=f"C{k}", ls=("-", "--", ":", "-.")[j % 4],
                    label=f"{name} (seed {v.seed})")
    ax.axhline(math.log(10), color="grey", ls=":", lw=1, label="ln 10 (chance)")
    ax.set(xlabel="step", ylabel="train loss (5-step mean)", title=f"First {steps} steps by initialisation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def start_note(v: Variant, steps: int) -> tuple[str, float, float]:
    """(verdict, peak, second-half mean) of the first ``steps`` steps: divergence, a slow start or a healthy one."""
    t = _train_rows(v.run).head(steps)
    peak, half = float(t.loss.max()), float(t.loss.iloc[len(t) // 2 :].mean())
    if not math.isfinite(peak) or peak > 2 * math.log(10):
        return "unstable start (loss peaks above 2 ln 10)", peak, half
    if half > 0.95 * math.log(10):
        return "slow start (second-half mean loss above 0.95 ln 10)", peak, half
    return "healthy start", peak, half


def start_notes(variants: list[Variant], steps: int) -> str:
    """One clause per variant over its seeds, e.g. ``default: healthy start in 2 of 2 seeds (peaks 2.35, 2.41; …)``."""
    parts = []
    for name, runs in by_variant(variants).items():
        notes = [start_note(v, steps) for v in runs]
        kinds = sorted({n[0] for n in notes})
        head = (f"{kinds[0]} in {len(runs)} of {len(runs)} seeds" if len(kinds) == 1
                else "; ".join(f"{k} in {sum(n[0] == k for n in notes)} of {len(runs)} seeds" for k in kinds))
        parts.append(f"`{name}`: {head} (peaks {', '.join(f'{n[1]:.2f}' for n in notes)}; second-half means "
                     f"{', '.join(f'{n[2]:.2f}' for n in notes)})")
    return "; ".join(parts) + "."


def plot_val_curves(variants: list[Variant], title: str):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for k, (name, runs) in enumerate(by_variant(variants).items()):
        for j, v in enumerate(runs):
            val = _val_rows(v.run)
            ax.plot(val.epoch, val.acc, marker="o", color=f"C{k}", ls=("-", "--", ":", "-.")[j % 4],
                    label=f"{name} (seed {v.seed})")
    ax.set(xlabel="epoch", ylabel="val accuracy", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def eval_mode_text(ev: EvalModeCheck, loss_tol: float = 1e-5) -> str:
    """The eval-mode measurement in words; which statistics the val numbers use is read from the losses."""
    uses = ("the running statistics" if abs(ev.evaluate_loss - ev.eval_mode_loss) <= loss_tol
            else "the batch statistics (the forgotten `model.eval()` bug)"
            if abs(ev.evaluate_loss - ev.train_mode_loss) <= loss_tol else "neither set of statistics")
    return (f"On {ev.n_images} val images a trained `batch` model's logits with batch statistics and with running "
            f"statistics differ by up to {ev.max_train_eval_diff:.4f}; two eval-mode passes are "
            f"{'identical' if ev.eval_repeat_equal else 'NOT identical'}. The loop's `evaluate` gives loss "
            f"{ev.evaluate_loss:.5f}, against {ev.eval_mode_loss:.5f} with running and {ev.train_mode_loss:.5f} with "
            f"batch statistics, so the val numbers use {uses}; it leaves the running statistics "
            f"{'unchanged' if ev.running_stats_unchanged else 'CHANGED'} and "
            f"{'restores' if ev.mode_restored else 'does NOT restore'} train mode.")


def fit_signal(pair: pd.Series, cm_train, classes: list[str], z_min: float = 2.0, min_train: int = 5) -> str:
    """The fit-signal text of one confusion pair (a row of ``confusion_pairs``) against the same pair on training
    images (:func:`shared.analysis.pair_signal`); without a ``count`` in the row the test rate is taken as exact."""
    i, j = classes.index(pair.true), classes.index(pair.predicted)
    rate = float(pair["true-class error rate"])
    n_test = pair["count"] / rate if "count" in pair and rate > 0 else math.inf
    return pair_signal(rate, n_test, int(cm_train[i, j]), int(cm_train[i].sum()), z_min, min_train).text()


# ---- the log -------------------------------------------------------------------------------------------------------

def build_log(log: WeeklyLog, cfg: Week03Config, r: dict[str, Any]) -> None:
    ex = cfg.experiment
    base: ClassifierRun = r["baseline"]
    classes = list(r["classes"])
    log.section("1. Data and baseline", r["data_text"])
    curve = baseline_curve(base, len(classes))
    w = curve.window
    log.table(pd.DataFrame([{"model": cfg.model.name, "params": sum(p.numel() for p in base.model.parameters()),
                             "epochs": base.result.epoch, "first-step loss": round(curve.first_loss, 4),
                             f"first-{w}-step loss": round(curve.first_mean, 4),
                             f"last-{w}-step loss": round(curve.last_mean, 4), "val acc": round(curve.val_acc, 4),
                             "train time (s)": round(base.result.train_time_s, 1)}]), "baseline")
    log.add(checks.check_baseline(curve, ex.first_loss_tol, ex.min_loss_drop, ex.min_val_acc))

    groups: dict[str, list[VariantScores]] = {}
    seeds = ", ".join(str(s) for s in ex.seeds)
    texts = {
        "optimizer": "Same schedule, epochs and data; only the optimizer (and its usual lr and decay) changes.",
        "init": f"The first {ex.curve_steps} training steps of every seed are overlaid to compare how each "
                "initialisation starts.",
        "norm": "Normalisation layer after every conv; `none` gives the convs their bias back.",
        "regularisation": "Each regulariser removed in turn; the train-val gap (accuracy on un-augmented "
                          "training images minus val accuracy) measures what each one holds back.",
    }
    for i, group in enumerate(("optimizer", "init", "norm", "regularisation"), start=2):
        variants: list[Variant] = r["ablations"][group]
        table = ablation_table(variants, ex.target_acc)
        groups[group] = scores = variant_scores(variants)
        verdict = checks.decide(scores)
        log.section(f"{i}. {group.capitalize()} ablation", f"{texts[group]} Every variant runs with seeds {seeds}; "
                    "`val acc` is their mean.")
        log.table(table, f"ablation_{group}")
        if group == "init":
            log.plot(plot_first_steps(variants, ex.curve_steps), "init_first_steps", "Loss over the first steps by init")
            log.text(start_notes(variants, ex.curve_steps))
        else:
            log.plot(plot_val_curves(variants, f"{group}: val accuracy per epoch"), f"ablation_{group}",
                     f"Val accuracy per epoch, {group} ablation")
        if group == "norm":
            log.text(eval_mode_text(r["eval_mode"]))
        extra = {"optimizer": speed_vs_end(variants, verdict, ex.target_acc),
                 "regularisation": regularisation_reading(table, variants)}
        log.text(verdict_text(verdict, len(ex.seeds)) + (" " + extra[group] if extra.get(group) else ""))
    log.add(checks.check_ablations(groups), checks.check_eval_mode(r["eval_mode"]))

    ea: ErrorAnalysis = r["errors"]
    pairs = confusion_fit_signals(ea.cm_test, ea.cm_train, classes, ex.signal_z, ex.signal_min_train)
    signalled = pairs[pairs.signal != ""]
    n_err = len(ea.wrong_idx)
    counts = {k: (int((pairs.signal == k).sum()), int(pairs["count"][pairs.signal == k].sum()))
              for k in ("overfitting", "underfitting", "")}
    log.section("6. Error analysis", f"The baseline model on the {len(ea.target):,} test images: {n_err:,} errors "
                f"({n_err / max(len(ea.target), 1):.1%}), in {len(pairs)} (true, predicted) pairs. Against the same "
                f"pairs on {int(ea.cm_train.sum()):,} un-augmented training images, {counts['overfitting'][0]} pairs "
                f"({counts['overfitting'][1]:,} errors) overfit, {counts['underfitting'][0]} pairs "
                f"({counts['underfitting'][1]:,} errors) underfit and {counts[''][0]} pairs ({counts[''][1]:,} errors) "
                "carry no signal.")
    log.plot(plot_confusion(ea.cm_test, classes, "Test confusion matrix (baseline)"), "confusion", "Confusion matrix")
    shown_pairs = signalled.drop(columns=["signal", "train rate", "z"]).round(
        {"share of errors": 3, "true-class error rate": 3})
    log.table(shown_pairs, "confusion_pairs", "Every (true, predicted) pair with a fit signal. Overfitting: the "
              f"pair's test rate exceeds its training-image rate by z >= {ex.signal_z:g} (pooled two-proportion "
              f"test). Underfitting: z below that and at least {ex.signal_min_train} training images confused the "
              "same way. Pairs with neither are left out (counted above).")
    in_signal = {(classes.index(t), classes.index(p)) for t, p in zip(signalled.true, signalled.predicted, strict=True)}
    tagged = [int(i) for i in ea.wrong_idx if (int(ea.target[i]), int(ea.pred[i])) in in_signal]
    others = [int(i) for i in ea.wrong_idx if (int(ea.target[i]), int(ea.pred[i])) not in in_signal]
    shown = (tagged + others)[: ex.error_grid]
    n_tagged = min(len(tagged), len(shown))
    imgs = denormalise(r["test_x"][shown], r["splits_norm"])
    log.plot(plot_error_grid(imgs, [classes[int(ea.target[i])] for i in shown], [classes[int(ea.pred[i])] for i in shown]),
             "errors", f"{len(shown)} misclassified test images (true → predicted): {n_tagged} from pairs with a fit "
             f"signal, {len(shown) - n_tagged} from pairs without")
    log.add(checks.check_errors_categorised(pairs, ex.min_categorised))

    on_gpu = r["device"].startswith("cuda")
    sp = r["speed"]
    runs = speed_runs(sp, cfg.speed.model.name)
    bb = baseline_budget(base, cfg.model.name, len(r["splits_norm"].train), ea, r["ablations"])
    log.section("7. Speed track", f"`{cfg.speed.model.name}` (width {cfg.speed.model.width}), batch "
                f"{cfg.speed.batch_size}, {cfg.speed.train.epochs} epochs, one-cycle lr (linear warm-up over "
                f"{cfg.speed.warmup_frac:.0%} of the steps to {cfg.speed.train.lr}, then linear decay), label "
                f"smoothing {cfg.speed.train.label_smoothing}, {cfg.speed.train.precision}. Evaluated on the test "
                "split after every epoch (the fixed recipe is never tuned on it). Time = training loop only "
                "(forward, backward, optimizer, on-device augmentation); data loading and evaluation excluded.")
    shown_sp = sp.assign(train_time_s=sp.train_time_s.round(1),
                         time_to_target_s=pd.to_numeric(sp.time_to_target_s, errors="coerce").round(1))
    log.table(shown_sp.astype(object).where(shown_sp.notna(), "not reached"), "speed")
    same = (runs.epochs, runs.train_images) == (bb.epochs, bb.train_images)
    log.text(f"Against the baseline: `{runs.model}` trained {runs.epochs} epochs on {runs.train_images:,} images and "
             f"ends at {runs.mean_final:.4f} mean test accuracy; `{bb.model}` trained {bb.epochs} epochs on "
             f"{bb.train_images:,} images and ends at {bb.test_acc:.4f} ({100 * (runs.mean_final - bb.test_acc):+.2f} "
             f"pp; the baseline config's seed range is {bb.seed_range_pp:.2f} pp). "
             + ("The budgets are equal, so this is a like-for-like comparison." if same
                else "The budgets differ, so the numbers are not a like-for-like comparison."))
    log.add(checks.check_speed_target(runs, cfg.speed.target_acc, on_gpu),
            checks.check_speed_vs_baseline(runs, bb, on_gpu))

    log.section("Timings", "Wall-clock seconds of each stage.")
    log.table(pd.DataFrame({"stage": list(r["timings"]), "seconds": [round(v, 1) for v in r["timings"].values()]}),
              "timings")
    log.section("Config", "The resolved baseline config.")
    log.config(cfg)
