"""The plan's checks for week 9, each a pure function of the run's results: numbers in, a ``Check`` out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from shared.report import Check


def rubric_followed(shares: Sequence[Mapping[str, Any]]) -> Check:
    """Every rubric rule passes on at least its ``min_share`` of the pairs of its source."""
    name, crit = "pairs align with the rubric (share per rule)", "every rule's share ≥ its stated minimum"
    if not shares:
        return Check.skip(name, "no pairs were loaded", crit)
    text = "; ".join(f"{s['source'].split('_')[0]} {s['rule']} {s['share']:.3f} (≥ {s['min_share']:.2f})"
                     for s in shares)
    return Check.judge(name, all(s["share"] >= s["min_share"] for s in shares), text, crit)


def training_stable(train_loss: Sequence[float], evals: Sequence[Mapping[str, float]], kl_bound: float,
                    initial: float) -> Check:
    """No NaN/inf, the val loss ends below where it started (the policy = reference value), the final KL to the
    reference below ``kl_bound``."""
    name = "training is stable (no NaN, loss decreases, KL bounded)"
    crit = f"every train loss finite; final val loss < initial ({initial:.4f}); final KL < {kl_bound} nats/token"
    if not train_loss or len(evals) < 2:
        return Check.skip(name, "the main run has no train rows or fewer than two evals", crit)
    finite = all(math.isfinite(x) for x in train_loss)
    first, last = evals[0], evals[-1]
    ok = finite and last["val_loss"] < first["val_loss"] and last["kl"] < kl_bound
    k = max(1, len(train_loss) // 4)
    return Check.judge(name, ok, f"{len(train_loss)} steps, all finite: {finite}; train loss mean of first {k} "
                       f"{sum(train_loss[:k]) / k:.4f} → last {k} {sum(train_loss[-k:]) / k:.4f}; val loss "
                       f"{first['val_loss']:.4f} → {last['val_loss']:.4f}; KL {last['kl']:.4f} nats/token", crit)


def accuracy_improves(hits: Sequence[float], p_value: float, alpha: float,
                      per_source: Mapping[str, tuple[float, int, float]], judge: bool) -> Check:
    """Preference accuracy on held-out pairs: the DPO model's implicit reward margin > 0 (it prefers chosen over
    rejected by more log-prob than the SFT model does) on more pairs than the SFT model's chance level 0.5, by a
    one-sided exact sign test at level ``alpha``."""
    name = "preference accuracy of DPO > SFT on held-out pairs"
    crit = f"DPO reward accuracy > SFT's 0.5 (all margins 0), sign test p < {alpha}"
    if not hits:
        return Check.skip(name, "no held-out pairs were scored", crit)
    acc = sum(hits) / len(hits)
    src = "; ".join(f"{s}: {a:.3f} (n={n}, p = {p:.3g})" for s, (a, n, p) in per_source.items())
    measured = f"all {len(hits)} pairs: DPO {acc:.3f} vs SFT 0.5 (p = {p_value:.3g}); {src}"
    if not judge:
        return Check.skip(name, "check.judge_eval=false (a random tiny model's accuracies are noise)", crit, measured)
    return Check.judge(name, acc > 0.5 and p_value < alpha, measured, crit)


def trl_loss_equal(same_ids: bool, same_mask: bool, diff: float, atol: float, hand: float, trl: float) -> Check:
    """TRL's ``DPOTrainer.compute_loss`` and the hand task's loss on the same batch and adapters."""
    name, crit = "DPO loss = TRL's on one batch", f"same ids and completion masks; |Δ loss| ≤ {atol:g}"
    return Check.judge(name, same_ids and same_mask and diff <= atol,
                       f"hand {hand:.7f} vs TRL {trl:.7f} (|Δ| {diff:.1e}); same ids {same_ids}, same masks "
                       f"{same_mask}", crit)


def trl_curves_agree(hand: Sequence[float], trl: Sequence[float], atol: float) -> Check:
    """The hand run's train loss and TRL's at every step TRL trained (same batches, init, schedule, optimizer)."""
    name, crit = "hand DPO and TRL train the same curve", f"|Δ train loss| ≤ {atol:g} at every compared step"
    n = min(len(hand), len(trl))
    if n == 0:
        return Check.skip(name, "TRL's run or the hand run logged no step", crit)
    d = max(abs(a - b) for a, b in zip(hand[:n], trl[:n], strict=True))
    return Check.judge(name, d <= atol and all(math.isfinite(x) for x in (*hand[:n], *trl[:n])),
                       f"{n} steps: hand {hand[0]:.4f} → {hand[n - 1]:.4f}, TRL {trl[0]:.4f} → {trl[n - 1]:.4f}; max "
                       f"|Δ| {d:.2e}", crit)


def speed_close(hand: float | None, trl: float | None, slack: float, judge: bool) -> Check:
    """The hand DPO step within ``slack`` of TRL's on the same batch."""
    name, crit = "hand DPO step within 15% of TRL's", f"hand s/step ≤ (1 + {slack:g}) x TRL's"
    if not hand or not trl:
        return Check.skip(name, "the step benchmark did not run (trl.enabled)", crit)
    measured = f"hand {hand:.2f} s/step vs TRL {trl:.2f} s/step ({100 * (hand / trl - 1):+.1f}%)"
    if not judge:
        return Check.skip(name, "check.judge_speed=false (millisecond steps on a shared CI machine are noise)", crit,
                          measured)
    return Check.judge(name, hand <= (1 + slack) * trl, measured, crit)


def reference_frozen(unchanged: bool | None, grads: int | None, copy_bytes: float) -> Check:
    """The reference (the start model's weights inside the policy, adapters off) is bit-identical after training
    and got no gradient; no second copy was held."""
    name = "reference frozen (bit-identical, no gradient), no copy held"
    crit = "every non-adapter weight equal to the start model's after training; none requires grad"
    if unchanged is None:
        return Check.skip(name, "the main run was not kept", crit)
    return Check.judge(name, bool(unchanged) and grads == 0,
                       f"weights bit-identical: {unchanged}; non-adapter tensors requiring grad: {grads}; memory saved "
                       f"vs a frozen copy: {copy_bytes / 2**20:.1f} MiB", crit)


def sweep_done(betas: Sequence[float], evals: Sequence[Mapping[str, float]]) -> Check:
    """Every beta of the sweep trained to finite numbers."""
    name, crit = "β sweep (0.05, 0.1, 0.5)", "a finished run per β with finite val loss, margin and KL"
    if not betas:
        return Check.skip(name, "no sweep ran", crit)
    ok = all(math.isfinite(e[k]) for e in evals for k in ("val_loss", "margin", "kl"))
    return Check.judge(name, ok and len(evals) == len(betas), "; ".join(
        f"β={b:g}: margin {e['margin']:+.3f}, reward acc {e['reward_accuracy']:.2f}, KL {e['kl']:.4f}"
        for b, e in zip(betas, evals, strict=True)), crit)


def variant_trains(kind: str, evals: Sequence[Mapping[str, float]]) -> Check:
    """The beyond-DPO variant's held-out loss falls (its loss on a fixed batch is a unit test)."""
    name, crit = f"beyond-DPO variant ({kind.upper()}) trains", "finite; final val loss < initial"
    if len(evals) < 2:
        return Check.skip(name, "the variant did not run", crit)
    a, b = evals[0]["val_loss"], evals[-1]["val_loss"]
    return Check.judge(name, math.isfinite(b) and b < a, f"val loss {a:.4f} → {b:.4f}, reward acc "
                       f"{evals[-1]['reward_accuracy']:.2f}, KL {evals[-1]['kl']:.4f}", crit)


def failure_shown(bad: Sequence[str], fixes: Mapping[str, Sequence[str]], bad_text: str) -> Check:
    """The deliberately bad setting shows at least one failure mode by its metrics, and at least one mitigation
    run shows none of the modes the bad run showed."""
    name = "failure mode diagnosed with metrics and a mitigation shown"
    crit = "the bad run flags ≥ 1 mode; a mitigation run flags none of them"
    if not fixes:
        return Check.skip(name, "the failure runs did not run", crit)
    fixed = [n for n, f in fixes.items() if not set(f) & set(bad)]
    ok = bool(bad) and bool(fixed)
    return Check.judge(name, ok, f"bad run flags: {', '.join(bad) or 'none'} ({bad_text}); " + "; ".join(
        f"{n} flags: {', '.join(f) or 'none'}" for n, f in fixes.items()), crit)


def quality_kept(paired_result: Mapping[str, Mapping[str, Any]] | None, others: str, alpha: float,
                 judge: bool) -> Check:
    """The week-7 harness, SFT vs SFT + DPO on the same items: no significant drop (paired one-sided tests,
    Holm-adjusted over format compliance and ROUGE-L, p(worse) < ``alpha`` is a collapse); every change is stated."""
    from shared.evals.paired import describe_paired

    name = "quality does not collapse (week-7 harness)"
    crit = f"neither format compliance nor ROUGE-L significantly lower (Holm-adjusted p(worse) ≥ {alpha})"
    if not paired_result:
        return Check.skip(name, "SFT or DPO was not scored", crit)
    measured = describe_paired(paired_result) + (f"; {others}" if others else "")
    if not judge:
        return Check.skip(name, "check.judge_eval=false", crit, measured)
    return Check.judge(name, all(r["p_worse"] >= alpha for r in paired_result.values()), measured, crit)


def decision_backed(decision: str, inputs: Mapping[str, float]) -> Check:
    """The SFT-only vs SFT+DPO decision is computed from the table's measured numbers (every input present)."""
    name, crit = "SFT-only vs SFT+DPO decision backed by the table", "every input of the rule measured (finite)"
    ok = bool(inputs) and all(math.isfinite(v) for v in inputs.values()) and decision in ("SFT + DPO", "SFT only")
    return Check.judge(name, ok, f"{decision}: " + ", ".join(f"{k} {v:.3f}" for k, v in inputs.items()), crit)


def failure_reported(rows: Sequence[Mapping[str, Any]]) -> Check:
    """The report's failure analysis holds each failure run's detector values."""
    name, crit = "the report includes the failure analysis", "a detector row per failure run, every mode measured"
    if not rows:
        return Check.skip(name, "no failure runs", crit)
    ok = all(r.get("modes") and all(m in r["modes"] for m in ("likelihood displacement", "KL explosion"))
             for r in rows)
    return Check.judge(name, ok, f"{len(rows)} runs diagnosed: " + ", ".join(r["run"] for r in rows), crit)


def harness_rows(labels: Sequence[str], need: Sequence[str]) -> Check:
    name, crit = "harness table gains the DPO rows", "rows for the SFT start and SFT + DPO"
    missing = [n for n in need if n not in labels]
    return Check.judge(name, not missing, "rows: " + ", ".join(labels) + (f"; missing {missing}" if missing else ""),
                       crit)


def export_loads(diff: float | None, path: str) -> Check:
    name, crit = "DPO export reloads with equal logits", "max |Δ logit| ≤ 1e-5 after from_pretrained"
    if diff is None:
        return Check.skip(name, "the main run was not exported", crit)
    return Check.judge(name, diff <= 1e-5, f"{path}: max |Δ logit| {diff:.1e}", crit)


def rerun_reproduces(original: Mapping[str, float] | None, rerun: Mapping[str, float] | None, name_: str,
                     atol: float = 1e-6) -> Check:
    """Retraining one run from its config (a fresh folder) reproduces its final val loss and margin."""
    name, crit = "a rerun from the docs reproduces one result", f"|Δ final val loss| and |Δ margin| ≤ {atol:g}"
    if not original or not rerun:
        return Check.skip(name, "no rerun", crit)
    d = max(abs(original["val_loss"] - rerun["val_loss"]), abs(original["margin"] - rerun["margin"]))
    return Check.judge(name, d <= atol, f"{name_}: val loss {original['val_loss']:.6f} vs {rerun['val_loss']:.6f}, "
                       f"margin {original['margin']:.6f} vs {rerun['margin']:.6f} (max |Δ| {d:.1e})", crit)


def within_time(total_s: float, budget_s: float) -> Check:
    return Check.judge("the week within its time budget", total_s <= budget_s, f"{total_s:.0f} s",
                       f"≤ {budget_s:.0f} s")
