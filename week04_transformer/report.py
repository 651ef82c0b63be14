"""Week 4's log: data and model, loss curves, the eval table, the samples, backend equality, throughput, checks."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from shared.report import WeeklyLog  # noqa: E402
from shared.train.pretrain import LMRun  # noqa: E402
from week04_transformer import checks  # noqa: E402
from week04_transformer.components import TestCount  # noqa: E402
from week04_transformer.config import Week04Config  # noqa: E402


def eval_table(lm: LMRun) -> pd.DataFrame:
    """One row per eval: step, tokens seen, train/val loss (nats/char), seconds."""
    return pd.DataFrame([{
        "step": e["step"], "tokens": e["tokens"], "train loss": round(e["train_loss"], 4),
        "val loss": round(e["val_loss"], 4), "train time (s)": round(e["train_time_s"], 1),
        "since start (s)": round(e["wall_s"], 1), "sample": "yes" if "sample" in e else "",
    } for e in lm.fit.evals])


def time_to_target(lm: LMRun, target: float) -> dict[str, Any] | None:
    """The first eval with val loss <= ``target`` (None when never reached)."""
    return next((e for e in lm.fit.evals if e["val_loss"] <= target), None)


def plot_curves(lm: LMRun, target: float):
    m = lm.metrics
    tr, va = m[m.phase == "train"], m[m.phase == "val"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tr.step, tr.loss, lw=0.8, alpha=0.6, label="train (batch)")
    ax.plot(va.step, va.train_loss, "o-", label="train (eval estimate)")
    ax.plot(va.step, va.val_loss, "s-", label="val")
    ax.axhline(target, color="grey", ls="--", lw=0.8, label=f"target {target}")
    ax.axhline(math.log(lm.model.cfg.vocab_size), color="red", ls=":", lw=0.8, label="ln(vocab): uniform guess")
    ax.set(xlabel="step", ylabel="loss (nats/char)", title="Char-level GPT on Tiny Shakespeare")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def build_log(log: WeeklyLog, cfg: Week04Config, r: dict[str, Any]) -> None:
    """Write every section and check of the week into ``log``."""
    lm: LMRun = r["lm"]
    tests: TestCount = r["tests"]
    evals, c, o, sc, t = lm.fit.evals, lm.model.cfg, cfg.optim, cfg.schedule, cfg.loop
    first, last = evals[0], evals[-1]
    log.section("Data", r["data_text"])
    log.section("Model", (
        f"GPT with {c.n_layer} layers, {c.n_head} heads, width {c.n_embd} (head size {c.n_embd // c.n_head}), context "
        f"{c.block_size} characters, {c.norm} ({c.norm_placement}-LN), {c.mlp} MLP, {c.pos} positions, tied LM head, "
        f"attention backend `{c.attn_backend}` for training. {lm.model.num_params():,} non-embedding parameters "
        f"({lm.model.num_params(False):,} in all); {lm.flops_per_token / 1e6:.2f} MFLOPs per training token "
        f"(6N + 12·L·H·Q·T)."))
    log.config(cfg)
    resumed = (f" This process resumed the run from its checkpoint at step {lm.fit.resumed_from:,}."
               if lm.fit.resumed_from else "")
    log.section("Training", (
        f"AdamW (β = {o.beta1}, {o.beta2}; weight decay {o.weight_decay} on matrices only), lr {o.lr:g} after "
        f"{sc.warmup_steps} warm-up steps, {sc.name} to {sc.min_lr:g}, gradient clipping at {t.grad_clip}, "
        f"{t.precision}{', torch.compile' if t.compile else ''}. {t.max_steps:,} steps of {t.micro_batch} x "
        f"{c.block_size} characters ({lm.fit.tokens:,} training characters, "
        f"{lm.fit.tokens / r['n_train']:.1f} passes over the training text); val loss on the same "
        f"{cfg.task.eval_iters} val batches every {t.eval_every} steps. Run folder: `{lm.run.run_id}`.{resumed}"))
    log.plot(plot_curves(lm, cfg.check.target_val_loss), "loss_curves", "Loss per step (train batches) and at each eval")
    log.table(eval_table(lm), "evals", "Evals: loss in nats per character")
    rows = lm.metrics[lm.metrics.phase == "train"]
    speed = f"Training ran at a median {rows.tokens_per_sec.median():,.0f} tokens/s"
    if "mfu" in rows:
        speed += f", MFU {rows.mfu.median():.1%} against {lm.mfu_source}"
    log.text(speed + ".")
    hit = time_to_target(lm, cfg.check.target_val_loss)
    if hit:
        log.text(f"Val loss first reached ≤ {cfg.check.target_val_loss} at step {hit['step']:,}, "
                 f"{hit['wall_s']:.1f} s after process start ({hit['train_time_s']:.1f} s of training steps).")
    samples = [e for e in evals if "sample" in e]
    log.section("Samples", (
        f"{cfg.sample.max_new_tokens} characters after the prompt {cfg.sample.prompt!r}, temperature "
        f"{cfg.sample.temperature}, top-k {cfg.sample.top_k}, the same random seed at each point."))
    for e in samples:
        log.text(f"**Step {e['step']:,}** (val loss {e['val_loss']:.3f}):\n\n```text\n{e['sample'].strip()}\n```")
    b = r["backends"]
    log.section("Hand-written vs PyTorch attention", (
        f"The trained model on one val batch of {t.micro_batch} x {c.block_size}, fp32, eval mode: loss "
        f"{b['manual']:.6f} (manual) vs {b['torch']:.6f} (`F.scaled_dot_product_attention`), |Δloss| "
        f"{b['abs_diff']:.2e}, max |Δlogit| {b['max_logit_diff']:.2e}."))
    bench, source = r["bench"]
    log.section("Throughput", f"`python -m week04_transformer.bench`: {cfg.bench.steps} timed training steps per "
                              f"setting after {cfg.bench.warmup} warm-up steps. MFU against: {source}.")
    log.table(bench.round(4), "bench", "Training throughput per attention backend")
    log.section("Timings", "")
    log.table(pd.DataFrame([{"stage": k, "seconds": round(v, 1)} for k, v in r["timings"].items()]), "timings")

    log.add(
        checks.component_tests(tests),
        checks.untrained_loss(first["val_loss"], c.vocab_size),
        checks.loss_trends_down(first, last),
        checks.samples_improve([e["val_loss"] for e in samples]),
        checks.backends_agree(b["abs_diff"], cfg.check.backend_atol),
        checks.val_loss_target(last["val_loss"], cfg.check.target_val_loss),
        checks.time_budget(r["end_to_end_s"], cfg.check.time_budget_s, bool(lm.fit.resumed_from)),
    )
