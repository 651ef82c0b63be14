"""Numbers the log derives from the runs: preference accuracy per source (SFT vs DPO, a paired sign test), the
failure-mode diagnosis of each failure run, and the SFT-only vs SFT+DPO decision."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.stats import paired
from week09_dpo.config import Week09Config
from week09_dpo.diagnose import Thresholds, diagnose, flagged
from week09_dpo.experiments import WeekResults


def accuracy_rows(res: WeekResults, cfg: Week09Config) -> tuple[list[dict[str, Any]], list[float], float,
                                                                 dict[str, tuple[float, int, float]]]:
    """Preference accuracy on the held-out pairs, per source and over all.

    The DPO run's reference is the SFT model, so per pair the implicit reward margin ``β (Δ_w − Δ_l)`` is β times
    how much more the DPO model prefers chosen over rejected (in summed log-prob) than the SFT model does. The DPO
    model's *preference (reward) accuracy* is the share of pairs with margin > 0; the SFT model's margins are all 0
    (it is its own reference: no preference, chance 0.5). The paired test asks whether DPO's log-prob gap beats
    SFT's on more pairs than not: an exact sign test of the margins' signs (ties dropped), one-sided.

    Returns:
        (table rows, per-pair hits 1.0 where margin > 0, p of the sign test over all pairs,
        source -> (DPO reward accuracy, n, p)).
    """
    s = res.heldout
    if s is None or not s.ids:
        return [], [], float("nan"), {}
    margins = s.margins(cfg.dpo.beta)
    hits = [float(m > 0) for m in margins]
    rows, per = [], {}
    groups = {src: [i for i, x in enumerate(s.sources) if x == src] for src in dict.fromkeys(s.sources)}
    groups["all"] = list(range(len(s.ids)))
    p_all = float("nan")
    for src, idx in groups.items():
        t = paired([0.0] * len(idx), [1.0 if margins[i] > 0 else (-1.0 if margins[i] < 0 else 0.0) for i in idx])
        acc = sum(hits[i] for i in idx) / len(idx)
        rows.append({"pairs": src, "n": len(idx),
                     "SFT log-prob acc": round(sum(s.ref_chosen[i] > s.ref_rejected[i] for i in idx) / len(idx), 3),
                     "DPO log-prob acc": round(sum(s.policy_chosen[i] > s.policy_rejected[i] for i in idx) / len(idx),
                                               3),
                     "DPO reward acc (SFT: 0.5)": round(acc, 3), "DPO > SFT / < SFT": f"{t.wins} / {t.losses}",
                     "p (sign test)": round(t.p_greater, 4),
                     "mean margin": round(sum(margins[i] for i in idx) / len(idx), 4),
                     "KL (nats/token)": round(sum(s.kl_sum[i] for i in idx) /
                                              max(sum(s.chosen_tokens[i] + s.rejected_tokens[i] for i in idx), 1), 4)})
        if src == "all":
            p_all = t.p_greater
        else:
            per[src] = (acc, len(idx), t.p_greater)
    return rows, hits, p_all, per


def diagnose_runs(res: WeekResults, cfg: Week09Config) -> list[dict[str, Any]]:
    """The detectors on the main run and every failure run: run, modes, flagged, summary."""
    c = cfg.check
    th = Thresholds(c.displacement_nats, c.verbosity_ratio, c.repetition_rise, c.kl_explode)
    out = []
    for name in ["dpo", *res.roles.get("failure", [])]:
        r = res.runs.get(name)
        if r is None or len(r.evals) < 2:
            continue
        d = diagnose(r.evals, th)
        out.append({"run": name, "modes": d, "flagged": flagged(d),
                    "summary": "; ".join(str(d[m]["text"]) for m in flagged(d)) or "no mode flagged"})
    return out


def harness_change(res: WeekResults, sft_label: str) -> tuple[dict[str, dict] | None, str]:
    """The paired harness comparison SFT → SFT + DPO (:func:`shared.evals.paired.paired_harness`) and a sentence
    with the two smaller metrics' changes (exact match, instruction following: too few items to test)."""
    from shared.evals.paired import paired_harness

    a, b = res.items.get(sft_label), res.items.get("SFT + DPO")
    if not a or not b:
        return None, ""
    sa, sb = res.scored[sft_label], res.scored["SFT + DPO"]
    parts = []
    for key, items, label in (("exact_match", "exact_items", "exact match"),
                              ("instruction_following", "following_items", "instruction following")):
        x, y = sa.get(key), sb.get(key)
        if x is not None and y is not None:
            parts.append(f"{label} {x:.3f} → {y:.3f} ({y - x:+.3f}, {sa.get(items)} items)")
    return paired_harness(a, b), ", ".join(parts)


def decide(hits: list[float], p_value: float, change: Mapping[str, Mapping[str, Any]] | None,
           cfg: Week09Config, main_flags: list[str] | None = None) -> tuple[str, str, dict[str, float]]:
    """SFT + DPO when its held-out preference accuracy beats the SFT model's chance level (sign test p < alpha) and
    the harness shows no significant drop (Holm-adjusted p(worse) ≥ alpha on format compliance and ROUGE-L);
    otherwise SFT only. The failure modes the main run's detectors flag (``main_flags``) are stated beside the
    decision: they are signals on a few probe prompts and the held-out pairs, the harness is the 40-item test."""
    nan = float("nan")
    acc = sum(hits) / len(hits) if hits else nan
    inputs = {"DPO preference accuracy (SFT: 0.5)": acc, "p (sign test)": p_value}
    for m, r in (change or {}).items():
        t = r["test"]
        inputs[f"Δ {m}"] = t.mean_b - t.mean_a
        inputs[f"p({m} worse)"] = r["p_worse"]
    if not change:
        inputs["harness"] = nan
    better = acc > 0.5 and p_value < cfg.check.alpha
    dropped = [m for m, r in (change or {}).items() if r["p_worse"] < cfg.check.alpha]
    kept = bool(change) and not dropped
    caveat = (f"; watch: the main run's detectors flag {', '.join(main_flags)} (see the failure-mode table)"
              if main_flags else "")
    if better and kept:
        return "SFT + DPO", (f"held-out preference accuracy {acc:.3f} vs SFT's 0.5 (sign test p = {p_value:.3g}) and "
                             f"no significant drop on the harness{caveat}"), inputs
    reasons = []
    if not better:
        reasons.append(f"preference accuracy {acc:.3f} vs SFT's 0.5 (p = {p_value:.3g}) is no significant gain")
    if dropped:
        reasons.append("the harness dropped significantly on " + ", ".join(dropped))
    elif not change:
        reasons.append("the harness comparison is missing")
    return "SFT only", "; ".join(reasons) + caveat, inputs
