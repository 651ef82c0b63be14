"""Week 4's checks: pure functions from the run's numbers to a :class:`shared.report.Check` (each is fed a failing
input in ``tests/test_checks.py``)."""

from __future__ import annotations

import math

from shared.report import Check
from week04_transformer.components import TestCount


def component_tests(tests: TestCount) -> Check:
    """Every test of the hand-written pieces (each against its library reference) passed, and some ran."""
    return Check.judge("component tests pass", tests.failures == tests.errors == 0 and tests.passed > 0,
                       f"{tests.passed}/{tests.tests} passed, {tests.skipped} skipped ({tests.seconds:.1f} s)",
                       "every test of attention, layers, positions, MHA, GPT and the char data passes")


def untrained_loss(step0_val_loss: float, vocab_size: int, tol: float = 0.3) -> Check:
    """A freshly initialised LM predicts roughly uniformly: its loss is close to ln(vocab) nats per token."""
    ln_v = math.log(vocab_size)
    return Check.judge("untrained loss is about ln(vocab)", abs(step0_val_loss - ln_v) < tol,
                       f"step 0 val loss {step0_val_loss:.3f}, ln({vocab_size}) = {ln_v:.3f}", f"|difference| < {tol}")


def loss_trends_down(first: dict[str, float], last: dict[str, float]) -> Check:
    """Final train and val loss (eval estimates) below their step-0 values."""
    down = last["val_loss"] < first["val_loss"] and last["train_loss"] < first["train_loss"]
    return Check.judge("loss trends down", down,
                       f"val {first['val_loss']:.3f} → {last['val_loss']:.3f}, train {first['train_loss']:.3f} → "
                       f"{last['train_loss']:.3f}", "final train and val loss below the step-0 values")


def samples_improve(sample_val_losses: list[float], n: int = 3) -> Check:
    """``n`` samples (start, middle, end) were drawn, and the model's val loss fell strictly between them."""
    sv = sample_val_losses
    ok = len(sv) == n and all(a > b for a, b in zip(sv, sv[1:], strict=False))
    return Check.judge("samples improve", ok, "val loss at the sample points: " + " → ".join(f"{v:.3f}" for v in sv),
                       f"{n} samples (start, middle, end), val loss strictly falling")


def backends_agree(abs_diff: float, atol: float) -> Check:
    """The hand-written attention and ``F.scaled_dot_product_attention`` give the same loss on one batch (fp32)."""
    return Check.judge("manual and SDPA attention give the same loss", abs_diff <= atol, f"|Δloss| = {abs_diff:.2e}",
                       f"≤ {atol:g} on the same batch, fp32")


def val_loss_target(final_val_loss: float, target: float) -> Check:
    return Check.judge("val loss target", final_val_loss <= target, f"final val loss {final_val_loss:.4f}",
                       f"≤ {target} nats/char")


def time_budget(total_s: float, budget_s: float, resumed: bool = False) -> Check:
    """Seconds from process start to the log (a resumed run's training time summed over its processes)."""
    summed = " (training time summed over the processes of a resumed run)" if resumed else ""
    return Check.judge("time budget", total_s <= budget_s, f"{total_s:.0f} s from process start to the log{summed}",
                       f"≤ {budget_s:.0f} s")
