"""The plan's checks for week 7, each a pure function of the run's results: numbers in, a ``Check`` out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from shared.evals.paired import PAIRED_METRICS, describe_paired, paired_harness
from shared.report import Check


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def eval_set_clean(task_types: Mapping[str, int], min_types: int, overlapping: int, items: int) -> Check:
    """The eval set covers at least ``min_types`` task types and no item has an exact or near duplicate in train."""
    types = ", ".join(f"{t} {n}" for t, n in sorted(task_types.items()))
    return Check.judge("eval set covers the task types and shares nothing with train",
                       len(task_types) >= min_types and overlapping == 0 and items > 0,
                       f"{items} items, {len(task_types)} task types ({types}); {overlapping} with an exact or near "
                       "duplicate in the training records",
                       f"≥ {min_types} task types and 0 items duplicated in train (MinHash, week 6's dedup)")


def loss_decreases(first_val: float, final_val: float, name: str) -> Check:
    """The SFT run's val loss (response tokens) ends below where it started."""
    return Check.judge("SFT loss decreases", math.isfinite(final_val) and final_val < first_val,
                       f"{name}: val loss {first_val:.4f} → {final_val:.4f} nats/token",
                       "final val loss < val loss before training")


def beats_base(base: Mapping[str, float], sft: Mapping[str, float], judge: bool = True) -> Check:
    """The SFT model is better than the base on the harness: higher format compliance and higher ROUGE-L."""
    measured = (f"format compliance {_pct(base['format_compliance'])} → {_pct(sft['format_compliance'])}, "
                f"ROUGE-L {base['rougeL']:.3f} → {sft['rougeL']:.3f}")
    criterion = "SFT > base on format compliance and on ROUGE-L"
    if not judge:
        return Check.skip("SFT beats the base model on the harness", "a random tiny model (smoke): compared, not "
                          "judged", criterion, measured)
    ok = sft["format_compliance"] > base["format_compliance"] and sft["rougeL"] > base["rougeL"]
    return Check.judge("SFT beats the base model on the harness", ok, measured, criterion)


def overfit_found(onset_step: int | None, best_val: float, rise: float, train_fell: bool, epochs: float,
                  mem_train: float, mem_eval: float) -> Check:
    """The over-fitting onset was found (val loss turned up while train loss kept falling) and memorisation was
    measured on train and eval prompts."""
    mem = f"memorised: {_pct(mem_train)} of train prompts vs {_pct(mem_eval)} of eval prompts"
    ok = onset_step is not None and train_fell and math.isfinite(mem_train) and math.isfinite(mem_eval)
    where = (f"val loss lowest at step {onset_step} ({best_val:.4f}), then up {100 * rise:.1f}% by the end while "
             f"train loss fell" if onset_step is not None else
             f"val loss did not turn up within {epochs:.1f} epochs (lowest {best_val:.4f})")
    return Check.judge("over-fitting onset found and memorisation measured", ok, f"{where}; {mem}",
                       "a val-loss minimum followed by a rise (> 1%, or at 3 evals in a row) with train loss still "
                       "falling, over ≥ 3 epochs; memorisation rates measured")


def versions_compared(v1: Mapping[str, float], v2: Mapping[str, float], steps1: int, steps2: int,
                      removed: int) -> Check:
    """v1 and v2 trained at the same budget and both scored by the harness."""
    same = steps1 == steps2
    return Check.judge("v2 vs v1 compared at the same budget", same and removed > 0,
                       f"{removed} records removed by the cleaning; {steps1} vs {steps2} steps; ROUGE-L "
                       f"{v1['rougeL']:.3f} (v1) vs {v2['rougeL']:.3f} (v2), format compliance "
                       f"{_pct(v1['format_compliance'])} vs {_pct(v2['format_compliance'])}",
                       "same number of steps, cleaning removed > 0 records, both scored")


def seed_mean(runs: Sequence[Sequence[Mapping]]) -> list[dict]:
    """Each eval item's format compliance and ROUGE-L averaged over one model version's seeds (``runs``: one list
    of per-item rows per seed, the same items in the same order).

    Raises:
        ValueError: no runs, or runs scored on different items.
    """
    if not runs:
        raise ValueError("seed_mean needs at least one run's items")
    ids = [i["id"] for i in runs[0]]
    if any([i["id"] for i in r] != ids for r in runs):
        raise ValueError("every seed's run must be scored on the same items in the same order")
    return [{"id": ids[j], **{m: sum(float(r[j][m]) for r in runs) / len(runs) for m in PAIRED_METRICS}}
            for j in range(len(ids))]


def improvements_show(v1_runs: Sequence[Sequence[Mapping]], v2_runs: Sequence[Sequence[Mapping]], alpha: float,
                      judge: bool = True) -> Check:
    """v2 is better than v1 on the harness: with each eval item's scores averaged over the version's seeds
    (:func:`seed_mean`), a paired one-sided test finds v2 higher on format compliance or on ROUGE-L (Holm-adjusted
    over the two, p < ``alpha``), and lower on neither.

    A run scores 40 items, and which examples a run happened to see moves its scores by several items: the verdict
    rests on the paired tests over seed-averaged items, not on two means."""
    result = paired_harness(seed_mean(v1_runs), seed_mean(v2_runs))
    n_items, seeds = len(v1_runs[0]), f"{len(v1_runs)} vs {len(v2_runs)} seeds"
    measured = f"{seeds}, seed means: " + describe_paired(result)
    criterion = (f"v2 better on format compliance or ROUGE-L by a paired one-sided test over the {n_items} items "
                 f"(each averaged over its seeds; exact sign test on 0/1 scores, else Wilcoxon signed-rank; "
                 f"Holm-adjusted p < {alpha:g}), worse on neither")
    if not judge:
        return Check.skip("improvements show in eval", "a random tiny model (smoke): compared, not judged",
                          criterion, measured)
    ok = (any(r["p_better"] < alpha for r in result.values())
          and not any(r["p_worse"] < alpha for r in result.values()))
    return Check.judge("improvements show in eval", ok, measured, criterion)


def paired_verdict(result: Mapping[str, dict], alpha: float, a: str, b: str) -> str:
    """The sentence the log states about b vs a, from :func:`paired_harness`."""
    better = [PAIRED_METRICS[m] for m, r in result.items() if r["p_better"] < alpha]
    worse = [PAIRED_METRICS[m] for m, r in result.items() if r["p_worse"] < alpha]
    if better and not worse:
        return f"{b} is better than {a} on {' and '.join(better)} (paired tests, Holm-adjusted p < {alpha:g})."
    if worse and not better:
        return f"{b} is worse than {a} on {' and '.join(worse)} (paired tests, Holm-adjusted p < {alpha:g})."
    if better and worse:
        return (f"{b} is better than {a} on {' and '.join(better)} but worse on {' and '.join(worse)} "
                f"(paired tests, Holm-adjusted p < {alpha:g}).")
    return (f"{b} and {a} do not differ detectably on these {next(iter(result.values()))['test'].n} items: no paired "
            f"test reaches Holm-adjusted p < {alpha:g}, so the gap between their means cannot be told from the "
            "item-to-item noise at this budget.")


def harness_checkpoints(models: Sequence[str]) -> Check:
    """The harness ran on at least 3 different checkpoints."""
    uniq = sorted(set(models))
    return Check.judge("harness runs on ≥ 3 checkpoints", len(uniq) >= 3, f"{len(uniq)}: {', '.join(uniq)}",
                       "≥ 3 different models scored by the same harness")


def trl_loss_equal(same_ids: bool, same_mask: bool, project: float, trl: float, exact: float, rtol: float) -> Check:
    """On one fixed batch TRL holds the same ids and masked positions, and both fp32 losses (project, TRL) land within
    ``rtol`` (relative) of the objective's exact value (fp64 model and cross-entropy); see :mod:`week07_sft.trl_ref`."""
    rel_p, rel_t = (project - exact) / exact, (trl - exact) / exact
    ok = same_ids and same_mask and abs(rel_p) <= rtol and abs(rel_t) <= rtol
    return Check.judge("SFT loss equals TRL's on a fixed batch", ok,
                       f"exact (fp64) {exact:.7f}; project {project:.7f} ({rel_p:+.1e}), TRL {trl:.7f} ({rel_t:+.1e}), "
                       f"|project - TRL| = {abs(project - trl):.1e}; same ids: {same_ids}, same masked positions: "
                       f"{same_mask}",
                       f"same batch; each fp32 loss within {rtol:g} (relative) of the exact value (fp32 log-softmax "
                       "rounds every token low; one token more in the mask moves it by over 1e-4)")


def trl_parity(project_val: float, trl_val: float, rel: float, steps: int) -> Check:
    """Trained alike for the same steps, TRL's model's val loss is within ``rel`` of the project's."""
    d = abs(project_val - trl_val) / project_val
    return Check.judge("trained like TRL, eval loss within 5%", d <= rel,
                       f"after {steps} steps: project {project_val:.4f} vs TRL {trl_val:.4f} nats/token "
                       f"({100 * d:.1f}% apart)", f"relative difference ≤ {100 * rel:.0f}%")


def speed_vs_trl(ours_s: float, trl_s: float, slack: float, judge: bool = True) -> Check:
    """The hand-written step is not slower than TRL's on the same batch by more than ``slack``."""
    measured = f"{ours_s:.3f} s vs {trl_s:.3f} s per step ({ours_s / trl_s:.2f}×)"
    criterion = f"project ≤ {1 + slack:.2f} × TRL seconds/step, same batch, fp32"
    if not judge:
        return Check.skip("SFT step not slower than TRL's by > 10%", "millisecond steps of a tiny model (smoke) are "
                          "timer noise: shown, not judged", criterion, measured)
    return Check.judge("SFT step not slower than TRL's by > 10%", ours_s <= trl_s * (1 + slack), measured, criterion)


def configs_cited(runs: Sequence[Mapping[str, str]]) -> Check:
    """Every run the log reports names its config hash and data hash, and its folder's config.yaml hashes to it.

    Each run: ``{"name", "config_hash", "data_sha256", "config_matches"}`` (``config_matches``: "yes"/"no")."""
    bad = [r["name"] for r in runs if not r["config_hash"] or not r["data_sha256"] or r["config_matches"] != "yes"]
    return Check.judge("report cites exact configs and data hashes", bool(runs) and not bad,
                       f"{len(runs)} runs, each with its config hash and data sha256" if not bad else
                       f"missing or not matching: {', '.join(bad)}",
                       "every reported run: config hash = hash of its config.yaml, and a data sha256")


def rerun_reproduces(original: float | None, rerun: float | None, name: str, reason: str = "") -> Check:
    """Re-running one run from its config gives the same final eval loss (bitwise on the same CPU)."""
    criterion = "identical final val loss (bitwise, same hardware)"
    if reason:
        return Check.skip("a rerun reproduces the final eval loss", reason, criterion)
    ok = original is not None and rerun is not None and original == rerun
    return Check.judge("a rerun reproduces the final eval loss", ok, f"{name}: {original!r} vs {rerun!r}", criterion)


def export_loads(recorded: float, reloaded: float, path: str) -> Check:
    """The exported model loads with ``from_pretrained`` and gives the val loss its run recorded."""
    ok = math.isfinite(reloaded) and abs(recorded - reloaded) <= 1e-5 * max(1.0, abs(recorded))
    return Check.judge("exported model reloads with the same val loss", ok,
                       f"{path}: {recorded:.6f} recorded vs {reloaded:.6f} reloaded",
                       "|Δ| ≤ 1e-5 relative (fp32; the same weights, a fresh process's kernels)")


def scratch_row(result: Mapping[str, float] | None, reason: str, window: Mapping[str, int] | None = None) -> Check:
    """The from-scratch GPT was fine-tuned and scored by the same harness. ``window`` (``block_size``, ``items``,
    ``cramped``: eval prompts that leave it fewer than ``room`` tokens to answer) says how much its window limits
    the row."""
    criterion = "the project's GPT SFT'd with the same objective and scored"
    if result is None:
        return Check.skip("from-scratch GPT row", reason, criterion)
    measured = f"ROUGE-L {result['rougeL']:.3f}, format compliance {_pct(result['format_compliance'])}"
    if window:
        measured += (f"; its window is {window['block_size']} tokens: {window['cramped']} of {window['items']} eval "
                     f"prompts leave it fewer than {window['room']} tokens to answer")
    return Check.judge("from-scratch GPT row", math.isfinite(result["rougeL"]), measured, criterion)


def within_time(seconds: float, budget: float) -> Check:
    """The whole week ran within its time budget."""
    return Check.judge("the week fits its time budget", seconds <= budget, f"{seconds:,.0f} s",
                       f"≤ {budget:,.0f} s")
