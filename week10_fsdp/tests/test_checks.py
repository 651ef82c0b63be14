"""Week 10's checks: each one passes on good numbers, fails on numbers built just past its threshold, and skips
(with its reason) when its inputs are empty. Pure functions: no process group, no files."""

from __future__ import annotations

import inspect
import sys

from week10_fsdp import checks

RTOL, ATOL = 0.05, 1e-5


def verdict(check, status, *texts):
    """``check`` has ``status`` (PASS/FAIL/SKIP) and its measured text names each of ``texts``; returns it."""
    assert check.status == status, check.line()
    assert check.result == (f"SKIP ({check.reason})" if status == "SKIP" else status)
    for text in texts:
        assert text in check.measured, check.line()
    return check


def skipped(check, *reason_words):
    """``check`` is a SKIP whose reason names each of ``reason_words``; returns it."""
    verdict(check, "SKIP")
    for word in reason_words:
        assert word in check.reason, check.line()
    return check


def probe_row(strategy, world, grads, optimizer, rank=0, params=None, n_params=1000):
    return {"strategy": strategy, "world_size": world, "rank": rank, "grads": grads, "optimizer": optimizer,
            "params": grads if params is None else params, "n_params": n_params}


def savings_rows(n, ratio):
    """DDP and FSDP2 at ``n`` ranks with DDP / FSDP2 (grads + optimizer) = ``ratio``."""
    fsdp = 12_000
    ddp = round(fsdp * ratio)
    return [probe_row("ddp", n, ddp // 3, ddp - ddp // 3), probe_row("fsdp2", n, fsdp // 3, fsdp - fsdp // 3)]


# -- memory_savings -----------------------------------------------------------------------------------------------
def test_memory_savings_passes_at_factor_n_and_fails_past_rtol():
    one = [probe_row("ddp", 1, 4000, 8000), probe_row("fsdp2", 1, 4000, 8000)]  # N = 1 is not judged
    good = verdict(checks.memory_savings(one + savings_rows(2, 2.0) + savings_rows(4, 4 * (1 - RTOL / 2)), RTOL),
                   "PASS", "N=2: DDP 24,000 B vs FSDP2 12,000 B (÷2.000)", "N=4: DDP 46,800 B vs FSDP2 12,000 B (÷3.900)")
    assert "N=1" not in good.measured
    verdict(checks.memory_savings(savings_rows(2, 2.0) + savings_rows(4, 4 * (1 + 2 * RTOL)), RTOL), "FAIL",
            "N=4: DDP 52,800 B vs FSDP2 12,000 B (÷4.400)")
    verdict(checks.memory_savings(savings_rows(2, 2 * (1 - 2 * RTOL)), RTOL), "FAIL", "(÷1.800)")  # saves too little
    # the largest rank is judged: one FSDP2 rank holding twice its share fails the check
    uneven = [*savings_rows(2, 2.0), probe_row("fsdp2", 2, 8000, 16_000, rank=1)]
    verdict(checks.memory_savings(uneven, RTOL), "FAIL", "FSDP2 24,000 B (÷1.000)")


def test_memory_savings_skips_without_a_multi_rank_probe_or_a_strategy():
    skipped(checks.memory_savings([], RTOL), "more than one rank")
    skipped(checks.memory_savings([probe_row("ddp", 1, 4000, 8000)], RTOL), "more than one rank")
    skipped(checks.memory_savings([probe_row("ddp", 2, 4000, 8000)], RTOL), "at 2 ranks lacks DDP or FSDP2")


# -- formulas_agree -----------------------------------------------------------------------------------------------
def compared(quantity, ratio, strategy="fsdp2", world=2):
    """A row of ``memory_doc.compare_measurements`` (``ratio`` None: a formula of 0, measured 0)."""
    formula = 1000 if ratio is not None else 0
    measured = round(formula * ratio) if ratio is not None else 0
    return {"row": 0, "strategy": strategy, "world_size": world, "quantity": quantity, "measured": measured,
            "formula": formula, "ratio": ratio,
            "agrees": abs(ratio - 1) <= RTOL if ratio is not None else measured == 0}


def test_formulas_agree_passes_when_every_row_agrees_and_fails_on_one_that_does_not():
    rows = [compared("params", 1.0), compared("activations", 1.03, "ddp", 1), compared("gathered", None, "ddp")]
    verdict(checks.formulas_agree(rows, RTOL), "PASS", "3 of 3 agree",
            "largest gap activations of ddp at N=1: ratio 1.0300")
    bad = [*rows, compared("grads", 1 + 2 * RTOL, "fsdp2", 4)]
    verdict(checks.formulas_agree(bad, RTOL), "FAIL", "3 of 4 agree", "ratio 1.1000", "off: fsdp2/N=4/grads 1.100")
    skipped(checks.formulas_agree([], RTOL), "no measurement")


def test_formulas_agree_fails_and_does_not_crash_on_a_zero_formula_with_bytes_measured():
    row = {**compared("gathered", None, "ddp"), "measured": 5, "agrees": False}
    verdict(checks.formulas_agree([row, compared("params", 1.01)], RTOL), "FAIL")


# -- loss_parity --------------------------------------------------------------------------------------------------
def parity_rows(gap=0.0, steps=6, tasks=("lm", "sft")):
    return [{"task": t, "pair": f"DDP vs FSDP2{' (accumulation)' if acc else ''}", "steps": steps, "max_abs_diff": gap,
             "ddp_first": 7.0, "ddp_last": 6.0, "fsdp2_last": 6.0} for t in tasks for acc in (False, True)]


def test_loss_parity_passes_within_atol_and_fails_on_one_step_off_or_a_missing_pair():
    tasks = ["lm", "sft"]
    rerun = {"task": "lm", "pair": "FSDP2 vs its rerun", "steps": 6, "max_abs_diff": 1.0}  # not a DDP/FSDP2 pair
    good = verdict(checks.loss_parity([*parity_rows(ATOL / 2), rerun], ATOL, tasks, 6), "PASS",
                   "lm plain: 5.00e-06 over 6 steps", "sft (accumulation): 5.00e-06 over 6 steps")
    assert "rerun" not in good.measured
    off = parity_rows(ATOL / 2)
    off[3] = {**off[3], "max_abs_diff": 2 * ATOL}  # sft with accumulation: one step off by 2 atol
    verdict(checks.loss_parity(off, ATOL, tasks, 6), "FAIL", "sft (accumulation): 2.00e-05 over 6 steps")
    no_accum = [r for r in parity_rows() if not (r["task"] == "lm" and "accumulation" in r["pair"])]
    verdict(checks.loss_parity(no_accum, ATOL, tasks, 6), "FAIL", "missing [('lm', True)]")
    verdict(checks.loss_parity(parity_rows(tasks=("lm",)), ATOL, tasks, 6), "FAIL",
            "missing [('sft', False), ('sft', True)]")
    verdict(checks.loss_parity(parity_rows(steps=5), ATOL, tasks, 6), "FAIL", "over 5 steps")  # stopped early


def test_loss_parity_skips_without_a_pair():
    skipped(checks.loss_parity([], ATOL, ["lm"], 6), "one process")
    rerun_only = [{"task": "lm", "pair": "FSDP2 vs its rerun", "steps": 6, "max_abs_diff": 0.0}]
    skipped(checks.loss_parity(rerun_only, ATOL, ["lm"], 6), "one process")


# -- reproducible -------------------------------------------------------------------------------------------------
def test_reproducible_needs_every_loss_bit_identical():
    losses = [6.9, 6.5, 6.25, 6.0]
    verdict(checks.reproducible(losses, list(losses)), "PASS", "4 steps, max |Δ| 0.0e+00")
    one_off = [*losses[:2], losses[2] + 1e-7, losses[3]]
    verdict(checks.reproducible(losses, one_off), "FAIL", "4 steps, max |Δ| 1.0e-07")
    verdict(checks.reproducible(losses, losses[:3]), "FAIL", "3 steps")  # a shorter rerun is not the same curve
    skipped(checks.reproducible(None, losses), "did not run")
    skipped(checks.reproducible(losses, []), "did not run")


# -- reshard_loads ------------------------------------------------------------------------------------------------
def reshard_row(world, val, saved=2.5):
    return {"world_size": world, "saved_world_size": 2, "val_loss": val, "saved_val_loss": saved}


def test_reshard_loads_needs_every_world_size_and_the_same_val_loss():
    good = verdict(checks.reshard_loads([reshard_row(1, 2.5), reshard_row(4, 2.5 + ATOL / 2)], ATOL, [4]), "PASS",
                   "saved by 2 → loaded by 1: 2.500000 vs 2.500000", "saved by 2 → loaded by 4: 2.500005 vs 2.500000")
    assert "loaded at 1, 4 rank(s)" in good.criterion
    missing4 = verdict(checks.reshard_loads([reshard_row(1, 2.5)], ATOL, [4]), "FAIL", "loaded by 1")
    assert "loaded by 4" not in missing4.measured
    verdict(checks.reshard_loads([reshard_row(1, 2.5), reshard_row(4, 2.5 + 2 * ATOL)], ATOL, [4]), "FAIL",
            "loaded by 4: 2.500020 vs 2.500000")
    verdict(checks.reshard_loads([reshard_row(1, 2.5)], ATOL, []), "PASS")  # smoke: one process only
    skipped(checks.reshard_loads([], ATOL, [4]), "no sharded checkpoint")


# -- export_roundtrip ---------------------------------------------------------------------------------------------
def test_export_roundtrip_fails_over_atol_on_the_lm_or_the_sft_model():
    lm = {"path": "models/week10/lm-fsdp2", "hf_class": "LlamaForCausalLM", "max_abs_logit_diff": 0.0}
    sft = {"path": "models/week10/sft-fsdp2", "val_loss": 1.75, "saved_val_loss": 1.75}
    verdict(checks.export_roundtrip({"lm": lm, "sft": sft}, ATOL), "PASS",
            "LM → models/week10/lm-fsdp2 (LlamaForCausalLM): logits max |Δ| 0.0e+00",
            "SFT → models/week10/sft-fsdp2: val loss 1.750000 vs 1.750000 (|Δ| 0.0e+00)")
    verdict(checks.export_roundtrip({"lm": lm}, ATOL), "PASS")  # no SFT task in this profile
    verdict(checks.export_roundtrip({"lm": {**lm, "max_abs_logit_diff": 2 * ATOL}, "sft": sft}, ATOL), "FAIL",
            "logits max |Δ| 2.0e-05")
    verdict(checks.export_roundtrip({"lm": lm, "sft": {**sft, "val_loss": 1.75 + 2 * ATOL}}, ATOL), "FAIL",
            "val loss 1.750020 vs 1.750000 (|Δ| 2.0e-05)")
    skipped(checks.export_roundtrip({}, ATOL), "did not run")


# -- tradeoffs_measured -------------------------------------------------------------------------------------------
BENCH = [{"strategy": s, "tokens_per_sec": v} for s, v in (("ddp", 3000.0), ("fsdp2", 2500.0), ("fsdp2_ac", 2000.0))]


def test_tradeoffs_need_three_speeds_and_checkpointing_to_save_activations():
    verdict(checks.tradeoffs_measured(BENCH, {"activations": 988_948, "activations_ckpt": 574_996}), "PASS",
            "ddp 3,000 tok/s, fsdp2 2,500 tok/s, fsdp2_ac 2,000 tok/s",
            "activations 988,948 B → 574,996 B with checkpointing")
    verdict(checks.tradeoffs_measured(BENCH, {"activations": 1000, "activations_ckpt": 1000}), "FAIL",
            "activations 1,000 B → 1,000 B")
    verdict(checks.tradeoffs_measured(BENCH, {"activations": 1000, "activations_ckpt": 1200}), "FAIL", "→ 1,200 B")
    verdict(checks.tradeoffs_measured(BENCH[:2], {"activations": 1000, "activations_ckpt": 500}), "FAIL",
            "fsdp2_ac 0 tok/s")
    skipped(checks.tradeoffs_measured([], {"activations": 1000, "activations_ckpt": 500}), "did not run")
    skipped(checks.tradeoffs_measured(BENCH, {}), "did not run")


def test_tradeoffs_fail_and_do_not_crash_without_checkpointed_activations():
    verdict(checks.tradeoffs_measured(BENCH, {"activations": 1000, "activations_ckpt": None}), "FAIL")


# -- pitfalls_pass ------------------------------------------------------------------------------------------------
def test_pitfalls_fail_on_one_failed_or_skipped_test():
    rows = [{"test": f"test_{i}", "file": "test_fsdp", "outcome": "passed", "seconds": 1.0} for i in range(7)]
    verdict(checks.pitfalls_pass(rows), "PASS", "7 of 7 passed")
    verdict(checks.pitfalls_pass([*rows[:6], {**rows[6], "outcome": "failed"}]), "FAIL",
            "6 of 7 passed; not passed: test_6")
    verdict(checks.pitfalls_pass([*rows[:6], {**rows[6], "outcome": "skipped"}]), "FAIL", "not passed: test_6")
    skipped(checks.pitfalls_pass([]), "not run")


# -- accelerate_matches -------------------------------------------------------------------------------------------
def fsdp_rows(world, params=184_064):
    return [{"strategy": "fsdp2", "world_size": world, "rank": r, "params": params, "grads": params,
             "optimizer": 2 * params + 112} for r in range(world)]


def test_accelerate_matches_torchrun_byte_for_byte():
    torchrun = [*fsdp_rows(1, 368_128), *fsdp_rows(2), probe_row("ddp", 2, 368_128, 736_368, params=368_128)]
    accel = {"launcher": "accelerate", "world_size": 2, "rows": fsdp_rows(2)}
    verdict(checks.accelerate_matches(accel, torchrun), "PASS",
            "launcher accelerate, 2 processes; rank 0 (184064, 184064, 368240) vs torchrun (184064, 184064, 368240)")
    verdict(checks.accelerate_matches({**accel, "rows": fsdp_rows(2, 184_068)}, torchrun), "FAIL",
            "rank 0 (184068, 184068, 368248) vs torchrun (184064, 184064, 368240)")
    rank1_off = {**accel, "rows": [fsdp_rows(2)[0], {**fsdp_rows(2)[1], "optimizer": 368_244}]}
    verdict(checks.accelerate_matches(rank1_off, torchrun), "FAIL")
    verdict(checks.accelerate_matches({**accel, "launcher": "torchrun"}, torchrun), "FAIL", "launcher torchrun")
    verdict(checks.accelerate_matches(accel, fsdp_rows(1, 368_128)), "FAIL", "vs torchrun None")  # no 2-rank probe
    skipped(checks.accelerate_matches(None, torchrun, "memory.accelerate=false in this profile"),
            "memory.accelerate=false in this profile")
    skipped(checks.accelerate_matches(None, torchrun), "accelerate was not run")


# -- doc_written --------------------------------------------------------------------------------------------------
SECTIONS = ("## What takes memory", "## Worked examples", "## Validated against this week's measurements")
DOC = "\n".join([*SECTIONS, "**12 of 12 measured numbers agree with their formula within 5%.**"])


def test_doc_written_needs_every_section_and_measurements():
    twelve = [compared("params", 1.0)] * 12
    verdict(checks.doc_written("docs/memory.md", twelve, SECTIONS, DOC), "PASS",
            "docs/memory.md: 3 of 3 sections, 12 measured quantities")
    verdict(checks.doc_written("docs/memory.md", twelve, SECTIONS, DOC.replace("## Worked examples\n", "")), "FAIL",
            "2 of 3 sections", "missing ['## Worked examples']")
    verdict(checks.doc_written("docs/memory.md", [], SECTIONS, DOC), "FAIL", "0 measured quantities")
    verdict(checks.doc_written("docs/memory.md", twelve, SECTIONS, DOC.replace("measured numbers agree", "numbers")),
            "FAIL")  # no validation summary
    skipped(checks.doc_written("docs/memory.md", [], SECTIONS, ""), "not written")


# -- within_time --------------------------------------------------------------------------------------------------
def test_within_time_fails_over_budget():
    good = verdict(checks.within_time(60.4, 90), "PASS", "60 s")
    assert good.criterion == "≤ 90 s"
    verdict(checks.within_time(90, 90), "PASS")
    verdict(checks.within_time(1_600, 1_500), "FAIL", "1,600 s")


def test_every_public_check_function_is_tested_here():
    public = {n for n, f in inspect.getmembers(checks, inspect.isfunction)
              if f.__module__ == checks.__name__ and not n.startswith("_")}
    source = inspect.getsource(sys.modules[__name__])
    assert {n for n in public if f"checks.{n}(" not in source} == set()


def test_formulas_agree_judges_at_its_own_rtol():
    verdict(checks.formulas_agree([compared("params", 1.03)], 0.01), "FAIL")  # 3% off, 1% allowed
