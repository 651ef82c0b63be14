"""The plan's checks for week 8, each a pure function of the run's results: numbers in, a ``Check`` out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from shared.report import Check


def _gib(b: float) -> str:
    return f"{b / 2**30:.3f} GiB"


def _mib(b: float) -> str:
    return f"{b / 2**20:.1f} MiB"


def lora_saves_memory(full: Mapping[str, Any] | None, lora: Mapping[str, Any] | None, first_val: float,
                      final_val: float) -> Check:
    """LoRA trains (val loss falls) with fewer trainable parameters and less optimizer state than full FT (the bench
    rows' exact byte counts)."""
    name, crit = "LoRA trains with reduced memory", ("LoRA val loss falls; LoRA's trainable params and optimizer "
                                                     "bytes < full FT's")
    if full is None or lora is None:
        return Check.skip(name, "full FT or LoRA did not run (run.methods)", crit)
    ok = (lora["trainable params"] < full["trainable params"] and lora["optimizer"] < full["optimizer"]
          and math.isfinite(final_val) and final_val < first_val)
    return Check.judge(name, ok, f"trainable {lora['trainable params']:,} vs {full['trainable params']:,} "
                       f"({100 * lora['trainable params'] / full['trainable params']:.2f}%); optimizer state "
                       f"{_mib(lora['optimizer'])} vs {_mib(full['optimizer'])}; gradients {_mib(lora['gradients'])} "
                       f"vs {_mib(full['gradients'])}; LoRA val loss {first_val:.4f} → {final_val:.4f}", crit)


def tradeoff_stated(full: Mapping[str, Any] | None, lora: Mapping[str, Any] | None, mem_full: float | None,
                    mem_lora: float | None) -> Check:
    """Full FT vs LoRA: quality (harness) and memory (counted bytes) both measured, the trade-off stated."""
    name = "full FT vs LoRA quality/memory trade-off stated from the harness"
    crit = "both scored by the harness (finite scores), both memory breakdowns counted, LoRA's step smaller"
    if not (full and lora and mem_full and mem_lora):
        return Check.skip(name, "full FT or LoRA was not scored or benchmarked", crit)
    d_c = lora["format_compliance"] - full["format_compliance"]
    d_r = lora["rougeL"] - full["rougeL"]
    scores = (full["format_compliance"], full["rougeL"], lora["format_compliance"], lora["rougeL"])
    ok = all(math.isfinite(float(x)) for x in scores) and mem_lora < mem_full
    return Check.judge(name, ok, f"LoRA vs full FT: format compliance {full['format_compliance']:.3f} → "
                       f"{lora['format_compliance']:.3f} ({d_c:+.3f}), ROUGE-L {full['rougeL']:.3f} → "
                       f"{lora['rougeL']:.3f} ({d_r:+.3f}) at {100 * mem_lora / mem_full:.0f}% of the step's "
                       f"counted memory ({_gib(mem_lora)} vs {_gib(mem_full)})", crit)


def grad_stable(rows: Sequence[Mapping[str, float]], spike: float = 10.0) -> tuple[bool, str]:
    """(stable, text): every loss and grad norm finite and no grad norm above ``spike`` x the run's median."""
    losses = [r["loss"] for r in rows]
    norms = [r["grad_norm"] for r in rows if "grad_norm" in r and r["grad_norm"] == r["grad_norm"]]
    finite = all(math.isfinite(x) for x in losses + norms)
    med = sorted(norms)[len(norms) // 2] if norms else math.nan
    top = max(norms) if norms else math.nan
    ok = finite and bool(norms) and top <= spike * med
    return ok, f"grad norm median {med:.3g}, max {top:.3g} (≤ {spike:g}x median: {'yes' if ok else 'no'})"


def qlora_recorded(hand: Any | None, hand_mem: Mapping[str, Any] | None, lora_mem: Mapping[str, Any] | None,
                   bnb_reason: str | None, bnb: Any | None = None) -> Check:
    """QLoRA's stability (finite, falling loss, no grad-norm spikes) and memory (weights below LoRA's) recorded;
    the bitsandbytes path where it runs, else its reason."""
    name = "QLoRA stability and memory recorded"
    crit = "hand QLoRA: val loss falls, grad norms finite and ≤ 10x their median, weights < LoRA's"
    if hand is None or hand_mem is None or lora_mem is None:
        return Check.skip(name, "the hand QLoRA did not run (run.methods)", crit)
    stable, text = grad_stable(hand.train_rows)
    ok = stable and hand.final_val_loss < hand.first_val_loss and hand_mem["weights"] < lora_mem["weights"]
    lib = (f"bitsandbytes: val loss {bnb.first_val_loss:.4f} → {bnb.final_val_loss:.4f}" if bnb is not None else
           f"bitsandbytes training not run here: {bnb_reason}")
    return Check.judge(name, ok, f"hand QLoRA val loss {hand.first_val_loss:.4f} → {hand.final_val_loss:.4f}, {text}; "
                       f"weights {_mib(hand_mem['weights'])} vs LoRA's {_mib(lora_mem['weights'])}; {lib}", crit)


def pick_default(lora: Mapping[str, Any], qlora: Mapping[str, Any], mem_lora: float, mem_qlora: float,
                 rouge_tol: float = 0.01, compliance_tol: float = 0.05) -> tuple[str, str]:
    """(default, why): QLoRA when it scores within the tolerances of LoRA *and* saves memory, else LoRA."""
    close = (qlora["rougeL"] >= lora["rougeL"] - rouge_tol
             and qlora["format_compliance"] >= lora["format_compliance"] - compliance_tol)
    saves = mem_qlora < mem_lora
    if close and saves:
        return "QLoRA", (f"QLoRA scores within {rouge_tol} ROUGE-L and {compliance_tol:.0%} compliance of LoRA and "
                         f"its step counts {100 * (1 - mem_qlora / mem_lora):.0f}% less memory")
    why = "loses quality beyond the tolerances" if not close else "does not save memory"
    return "LoRA", f"QLoRA {why} ({rouge_tol} ROUGE-L, {compliance_tol:.0%} compliance)"


def default_picked(lora: Mapping[str, Any] | None, qlora: Mapping[str, Any] | None, mem_lora: float | None,
                   mem_qlora: float | None, judge: bool = True) -> Check:
    """LoRA vs QLoRA compared on the harness and on memory, and a default picked by :func:`pick_default`."""
    name, crit = "LoRA vs QLoRA compared and a default picked", ("both scored (finite scores) and "
                                                                   "benchmarked; the rule of pick_default")
    if not (lora and qlora and mem_lora and mem_qlora):
        return Check.skip(name, "LoRA or QLoRA was not scored or benchmarked", crit)
    pick, why = pick_default(lora, qlora, mem_lora, mem_qlora)
    measured = (f"ROUGE-L {lora['rougeL']:.3f} vs {qlora['rougeL']:.3f}, compliance {lora['format_compliance']:.3f} "
                f"vs {qlora['format_compliance']:.3f}, memory {_gib(mem_lora)} vs {_gib(mem_qlora)}: default {pick} "
                f"({why})")
    if not judge:
        return Check.skip(name, "a random tiny model (smoke): compared, not judged", crit, measured)
    finite = all(math.isfinite(float(x)) for x in (lora["rougeL"], qlora["rougeL"], lora["format_compliance"],
                                                    qlora["format_compliance"]))
    return Check.judge(name, finite, measured, crit)


def table_cites(cells: Sequence[Mapping[str, Any]], known_runs: set[str]) -> Check:
    """Every cell of the decision table cites at least one run, and every cited run exists in this week's results."""
    bad = [c["cell"] for c in cells if not c["runs"] or any(r not in known_runs for r in c["runs"])]
    return Check.judge("decision table cites measurements", bool(cells) and not bad,
                       f"{len(cells)} cells, {len(cells) - len(bad)} citing runs of this week"
                       + (f"; without a valid citation: {', '.join(bad)}" if bad else ""),
                       "every cell cites ≥ 1 run id present in the results")


def qa_reproduced(items: Sequence[Mapping[str, Any]]) -> Check:
    """Every Q&A item has a reproduction that ran and showed its symptom (or says why it cannot here)."""
    missing = [i["key"] for i in items if i.get("shown") is None and not i.get("skip")]
    not_shown = [i["key"] for i in items if i.get("shown") is False]
    skipped = [i["key"] for i in items if i.get("skip")]
    ok = bool(items) and not missing and not not_shown
    text = f"{len(items)} items: {len(items) - len(missing) - len(not_shown) - len(skipped)} reproduced"
    if skipped:
        text += f", {len(skipped)} not reproducible here ({', '.join(skipped)})"
    if not_shown:
        text += f"; symptom not shown: {', '.join(not_shown)}"
    if missing:
        text += f"; no reproduction: {', '.join(missing)}"
    return Check.judge("every Q&A item has a reproduction", ok, text,
                       "each item: a run or a test that shows the symptom (or a stated reason it cannot here)")


def parity(hand: Sequence[float], lib: Sequence[float], atol: float) -> Check:
    """The hand LoRA and peft's, same init and batches: train loss equal at every step within ``atol``."""
    if not hand or len(hand) != len(lib):
        return Check.skip("hand LoRA trains like peft's", "one of the runs is missing", f"|Δ loss| ≤ {atol:g}")
    d = max(abs(a - b) for a, b in zip(hand, lib, strict=True))
    return Check.judge("hand LoRA trains like peft's", d <= atol,
                       f"max |Δ train loss| over {len(hand)} steps = {d:.2e}",
                       f"≤ {atol:g} (fp32, same A init, B = 0, same batches: only summation order differs)")


def speed_close(hand_s: float | None, lib_s: float | None, slack: float, judge: bool = True) -> Check:
    """The hand LoRA step is at most ``slack`` slower than peft's on the same batch."""
    name, crit = "hand LoRA step within 15% of peft's", f"hand s/step ≤ (1 + {slack:g}) x peft's, same batch"
    if not hand_s or not lib_s:
        return Check.skip(name, "a bench row is missing", crit)
    measured = f"{hand_s:.2f} vs {lib_s:.2f} s/step ({100 * (hand_s / lib_s - 1):+.1f}%)"
    if not judge:
        return Check.skip(name, "millisecond steps on a shared CI machine (smoke): shown, not judged", crit, measured)
    return Check.judge(name, hand_s <= (1 + slack) * lib_s, measured, crit)


def bnb_gradients(check: Mapping[str, Any], cos_min: float, on_cuda: bool) -> Check:
    """bitsandbytes' adapter gradients vs the hand QLoRA's on the same codes (a fresh model): cosine ≥ cos_min."""
    name = "bitsandbytes QLoRA gradients equal the hand-written QLoRA's"
    crit = f"cosine ≥ {cos_min} on a freshly loaded bitsandbytes model"
    if not check.get("available"):
        return Check.skip(name, check.get("reason", "bitsandbytes did not run"), crit)
    if check.get("bnb_dequant_error", 0.0) > 1e-6:
        return Check.skip(name, f"bitsandbytes' CPU dequantise differs from its own codes by "
                          f"{check['bnb_dequant_error']:.3g} on this model's shapes (blocks across row ends), so it "
                          "is no reference here", crit, f"cosine {check['cos_before']:.4f}")
    if check.get("after_eval_error"):
        trap = f"; after one no-grad eval forward the repack raised ({check['after_eval_error']})"
    else:
        trap = (f"; after one no-grad eval forward: cosine {check['cos_after']:.3f}, layer-0 gradient norm "
                f"{check['layer0_norm_before']:.3g} → {check['layer0_norm_after']:.3g}"
                + ("" if on_cuda else " (the CPU trap)" if check.get("repacked_after_eval", True) else
                   " (no repack on this CPU: no trap)"))
    return Check.judge(name, check["cos_before"] >= cos_min,
                       f"cosine {check['cos_before']:.4f}, loss {check['loss_bnb']:.4f} vs {check['loss_hand']:.4f}"
                       + trap, crit)


def rank_needed(ranks: Sequence[int], losses: Sequence[float], tol: float = 0.01) -> tuple[int, str]:
    """(smallest rank whose final val loss is within ``tol`` (relative) of the sweep's best, text)."""
    best = min(losses)
    need = next(r for r, x in zip(ranks, losses, strict=True) if x <= best * (1 + tol))
    return need, ", ".join(f"r={r}: {x:.4f}" for r, x in zip(ranks, losses, strict=True))


def sweep_done(ranks: Sequence[int], losses: Sequence[float], first: float) -> Check:
    """The rank sweep ran at every rank, trained at every rank, and names the rank the task needs."""
    name = "rank sweep shows how much rank the task needs"
    if not ranks:
        return Check.skip(name, "no sweep ranks configured", "≥ 2 ranks")
    need, text = rank_needed(ranks, losses)
    ok = len(ranks) >= 2 and all(math.isfinite(x) and x < first for x in losses)
    return Check.judge(name, ok, f"final val loss (from {first:.4f}) {text}; smallest rank within 1% of the best: "
                       f"r={need}", "≥ 2 ranks, every run's val loss falls")


def rerun_reproduces(original: float | None, rerun: float | None, name: str, rtol: float = 1e-6) -> Check:
    """One run re-trained from its config (a fresh folder) ends at the same val loss."""
    if original is None or rerun is None:
        return Check.skip("a rerun from the docs reproduces one result", "no rerun", f"|Δ|/loss ≤ {rtol:g}")
    d = abs(original - rerun) / abs(original)
    return Check.judge("a rerun from the docs reproduces one result", d <= rtol,
                       f"{name}: final val loss {original:.10f} vs rerun {rerun:.10f}",
                       f"relative difference ≤ {rtol:g} (same config, same seed, deterministic CPU kernels)")


def export_loads(in_memory: float | None, reloaded: float | None, path: str, atol: float = 1e-5) -> Check:
    """The merged export reloads (``from_pretrained``) to the same val loss as the merged model in memory."""
    if in_memory is None or reloaded is None:
        return Check.skip("merged LoRA export reloads", "nothing was exported", f"|Δ val loss| ≤ {atol:g}")
    return Check.judge("merged LoRA export reloads", abs(in_memory - reloaded) <= atol,
                       f"{path}: val loss {in_memory:.6f} in memory vs {reloaded:.6f} reloaded",
                       f"|Δ| ≤ {atol:g} (the same fp32 weights; safetensors is lossless)")


def harness_rows(labels: Sequence[str], needed: Sequence[str]) -> Check:
    """The harness table gained a row for every LoRA/QLoRA variant that ran."""
    missing = [n for n in needed if n not in labels]
    return Check.judge("harness table gains the LoRA/QLoRA rows", bool(needed) and not missing,
                       f"rows: {', '.join(labels)}" + (f"; missing {', '.join(missing)}" if missing else ""),
                       "a row per variant that ran")


def within_time(total_s: float, budget_s: float) -> Check:
    return Check.judge("the week runs within its time budget", total_s <= budget_s,
                       f"{total_s:,.0f} s", f"≤ {budget_s:,.0f} s")
