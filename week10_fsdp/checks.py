"""The plan's checks for week 10, each a pure function of the run's results: numbers in, a ``Check`` out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from shared.report import Check


def memory_savings(rows: Sequence[Mapping[str, Any]], rtol: float) -> Check:
    """At every world size N > 1, FSDP2's per-rank gradient + optimizer bytes (the largest rank's) are below DDP's by
    the formula's factor N (within ``rtol``). ``rows``: the probes' per-rank rows (strategy, world_size, grads,
    optimizer)."""
    name = "memory savings observed: FSDP2 gradient + optimizer bytes per rank < DDP's by the factor N"
    crit = f"DDP / FSDP2 = N within {rtol:.0%} at every N > 1"
    worlds = sorted({r["world_size"] for r in rows if r["world_size"] > 1})
    if not worlds:
        return Check.skip(name, "no probe with more than one rank ran", crit)
    parts, ok = [], True
    for n in worlds:
        ddp = [r["grads"] + r["optimizer"] for r in rows if r["world_size"] == n and r["strategy"] == "ddp"]
        fsdp = [r["grads"] + r["optimizer"] for r in rows if r["world_size"] == n and r["strategy"] == "fsdp2"]
        if not ddp or not fsdp:
            return Check.skip(name, f"the probe at {n} ranks lacks DDP or FSDP2", crit)
        factor = max(ddp) / max(fsdp) if max(fsdp) else math.inf
        ok &= abs(factor / n - 1) <= rtol
        parts.append(f"N={n}: DDP {max(ddp):,} B vs FSDP2 {max(fsdp):,} B (÷{factor:.3f})")
    return Check.judge(name, ok, "; ".join(parts), crit)


def formulas_agree(compared: Sequence[Mapping[str, Any]], rtol: float) -> Check:
    """Every measured number (parameters, gradients, optimizer state, activations with and without checkpointing,
    gathered parameters) agrees with its formula within ``rtol``. ``compared``: rows of
    :func:`week10_fsdp.memory_doc.compare_measurements`."""
    name = "measured memory agrees with the formulas (docs/memory.md)"
    crit = f"|measured / formula − 1| ≤ {rtol:.0%} for every quantity"
    if not compared:
        return Check.skip(name, "no measurement", crit)
    def agrees(c: Mapping[str, Any]) -> bool:  # judged at this check's rtol, not the doc's own tolerance
        return abs(c["ratio"] - 1) <= rtol if c["ratio"] is not None else c["measured"] == 0

    def ratio(c: Mapping[str, Any]) -> str:
        return "n/a (formula 0)" if c["ratio"] is None else f"{c['ratio']:.4f}"

    bad = [c for c in compared if not agrees(c)]
    worst = max(compared, key=lambda c: abs((c["ratio"] if c["ratio"] is not None else 1.0) - 1))
    text = (f"{len(compared) - len(bad)} of {len(compared)} agree; largest gap {worst['quantity']} of "
            f"{worst['strategy']} at N={worst['world_size']}: ratio {ratio(worst)}")
    if bad:
        text += "; off: " + ", ".join(f"{c['strategy']}/N={c['world_size']}/{c['quantity']} {ratio(c)}"
                                      for c in bad[:4])
    return Check.judge(name, not bad, text, crit)


def loss_parity(rows: Sequence[Mapping[str, Any]], atol: float, tasks: Sequence[str], steps: int) -> Check:
    """Every DDP vs FSDP2 pair (each task, with and without accumulation) trains the same loss curve: max |Δ| per
    step ≤ ``atol`` over ``steps`` steps."""
    name = "FSDP2 matches DDP's loss curve (LM and SFT, with and without accumulation)"
    crit = f"max |Δ train loss| ≤ {atol:g} at every one of {steps} steps, for every pair"
    pairs = [r for r in rows if r["pair"].startswith("DDP vs FSDP2")]
    want = {(t, a) for t in tasks for a in (False, True)}
    have = {(r["task"], "accumulation" in r["pair"]) for r in pairs}
    if not pairs:
        return Check.skip(name, "no DDP/FSDP2 pair ran (one process)", crit)
    missing = want - have
    ok = not missing and all(r["steps"] == steps and r["max_abs_diff"] <= atol for r in pairs)
    text = "; ".join(f"{r['task']} {r['pair'].removeprefix('DDP vs FSDP2').strip() or 'plain'}: "
                     f"{r['max_abs_diff']:.2e} over {r['steps']} steps" for r in pairs)
    return Check.judge(name, ok, text + (f"; missing {sorted(missing)}" if missing else ""), crit)


def reproducible(first: Sequence[float] | None, rerun: Sequence[float] | None) -> Check:
    """A rerun of one FSDP2 config (a fresh run folder) gives bit-identical losses."""
    name = "distributed runs are reproducible (an FSDP2 rerun gives identical losses)"
    crit = "every step's train loss equal (==)"
    if not first or not rerun:
        return Check.skip(name, "the FSDP2 LM run or its rerun did not run", crit)
    same = len(first) == len(rerun) and all(a == b for a, b in zip(first, rerun, strict=False))
    gap = max((abs(a - b) for a, b in zip(first, rerun, strict=False)), default=float("inf"))
    return Check.judge(name, same, f"{len(rerun)} steps, max |Δ| {gap:.1e}", crit)


def reshard_loads(rows: Sequence[Mapping[str, Any]], atol: float, worlds_wanted: Sequence[int]) -> Check:
    """The sharded checkpoint loads at other world sizes (1 process, and each of ``worlds_wanted`` ranks) and scores
    the saved run's val loss."""
    name = "DCP checkpoint reloads at another world size (resharding) with the same val loss"
    wanted = sorted({1, *worlds_wanted})
    crit = f"loaded at {', '.join(map(str, wanted))} rank(s); |val loss − the run's| ≤ {atol:g}"
    if not rows:
        return Check.skip(name, "no sharded checkpoint (the FSDP2 run did not run)", crit)
    worlds = {r["world_size"] for r in rows}
    gaps = [abs(r["val_loss"] - r["saved_val_loss"]) for r in rows]
    ok = set(wanted) <= worlds and max(gaps) <= atol
    text = "; ".join(f"saved by {r.get('saved_world_size')} → loaded by {r['world_size']}: {r['val_loss']:.6f} vs "
                     f"{r['saved_val_loss']:.6f}" for r in rows)
    return Check.judge(name, ok, text, crit)


def export_roundtrip(export: Mapping[str, Any], atol: float) -> Check:
    """The FSDP2-trained models leave in Hugging Face format and load back unchanged: the LM's logits and the SFT
    model's val loss equal the sharded model's."""
    name = "sharded → full state dict → Hugging Face export loads back unchanged"
    crit = f"LM logits max |Δ| ≤ {atol:g}; SFT val loss |Δ| ≤ {atol:g}"
    if "lm" not in export:
        return Check.skip(name, "the FSDP2 runs did not run", crit)
    lm = export["lm"]
    ok = lm["max_abs_logit_diff"] <= atol
    text = f"LM → {lm['path']} ({lm['hf_class']}): logits max |Δ| {lm['max_abs_logit_diff']:.1e}"
    if "sft" in export:
        s = export["sft"]
        gap = abs(s["val_loss"] - s["saved_val_loss"])
        ok &= gap <= atol
        text += f"; SFT → {s['path']}: val loss {s['val_loss']:.6f} vs {s['saved_val_loss']:.6f} (|Δ| {gap:.1e})"
    return Check.judge(name, ok, text, crit)


def tradeoffs_measured(bench: Sequence[Mapping[str, Any]], act: Mapping[str, int | None]) -> Check:
    """The DDP vs FSDP trade-off has its numbers: tokens/s of DDP, FSDP2 and FSDP2 + activation checkpointing, and
    activation checkpointing saving activation memory (checkpointed < plain)."""
    name = "DDP vs FSDP2 trade-offs measured (throughput, activation checkpointing)"
    crit = "tokens/s > 0 for ddp, fsdp2, fsdp2_ac; checkpointed activations < plain"
    speed = {b["strategy"]: b["tokens_per_sec"] for b in bench}
    if not speed or act.get("activations") is None:
        return Check.skip(name, "the benchmark or the activation probe did not run", crit)
    need = ("ddp", "fsdp2", "fsdp2_ac")
    ck = act.get("activations_ckpt")
    ok = all(speed.get(k, 0) > 0 for k in need) and (ck if ck is not None else math.inf) < act["activations"]
    text = ", ".join(f"{k} {speed.get(k, 0):,.0f} tok/s" for k in need)
    text += f"; activations {act['activations']:,} B → " + (f"{ck:,} B" if ck is not None else "not measured")
    text += " with checkpointing"
    return Check.judge(name, ok, text, crit)


def pitfalls_pass(rows: Sequence[Mapping[str, Any]]) -> Check:
    """Every pitfall test (checkpoint reload across world sizes, accumulation without sync, bf16 reduction, rank-0
    metadata, per-rank data, optimizer state, a dying rank) passed in this run."""
    name = "every pitfall test passes"
    crit = "pytest: 0 failed, 0 skipped"
    if not rows:
        return Check.skip(name, "the pitfall tests were not run in this profile (`make test` runs them)", crit)
    failed = [r["test"] for r in rows if r["outcome"] != "passed"]
    return Check.judge(name, not failed, f"{len(rows) - len(failed)} of {len(rows)} passed"
                       + (f"; not passed: {', '.join(failed[:5])}" if failed else ""), crit)


def accelerate_matches(accel: Mapping[str, Any] | None, torchrun_rows: Sequence[Mapping[str, Any]],
                       skipped: str = "") -> Check:
    """``accelerate launch`` with the FSDP2 config runs the same script, picks FSDP2 and measures the same per-rank
    bytes as ``torchrun``."""
    name = "accelerate launch (FSDP2 config) runs the same script with the same result"
    crit = "launcher = accelerate, strategy fsdp2, per-rank params/grads/optimizer equal to torchrun's"
    if accel is None:
        return Check.skip(name, skipped or "accelerate was not run", crit)
    keys = ("params", "grads", "optimizer")
    mine = {(r["rank"]): tuple(r[k] for k in keys) for r in accel["rows"]}
    ref = {(r["rank"]): tuple(r[k] for k in keys) for r in torchrun_rows
           if r["strategy"] == "fsdp2" and r["world_size"] == accel["world_size"]}
    ok = (accel["launcher"] == "accelerate" and bool(ref) and mine == ref
          and all(r["strategy"] == "fsdp2" for r in accel["rows"]))
    return Check.judge(name, ok, f"launcher {accel['launcher']}, {accel['world_size']} processes; rank 0 "
                       f"{mine.get(0)} vs torchrun {ref.get(0)} bytes", crit)


def doc_written(path: str, compared: Sequence[Mapping[str, Any]], sections: Sequence[str], text: str) -> Check:
    """The memory doc exists with its sections and its validation table from this run's measurements."""
    name = "the memory doc has formulas, worked examples and this run's measurements"
    crit = "every section present; validation rows = the measured quantities"
    if not text:
        return Check.skip(name, "not written", crit)
    missing = [s for s in sections if s not in text]
    ok = not missing and len(compared) > 0 and "measured numbers agree" in text
    return Check.judge(name, ok, f"{path}: {len(sections) - len(missing)} of {len(sections)} sections, "
                       f"{len(compared)} measured quantities" + (f"; missing {missing}" if missing else ""), crit)


def within_time(total_s: float, budget_s: float) -> Check:
    """The whole week within its profile's budget."""
    return Check.judge("the week finishes within its time budget", total_s <= budget_s, f"{total_s:,.0f} s",
                       f"≤ {budget_s:,.0f} s")
