"""Week 10's log sections: memory per rank beside the formulas, throughput, parity curves, distributed checkpoints,
the minimal example, accelerate, the pitfall tests, the decision note and what changes at 8 or 64 GPUs. Every
number comes from the run's results or from :mod:`week10_fsdp.formulas`."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from shared.report import WeeklyLog
from week10_fsdp import formulas as F
from week10_fsdp.config import Week10Config
from week10_fsdp.experiments import WeekResults, parity_rows

GIB = 2**30


def _frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A table whose missing cells read "—" (a quantity the row does not have), not NaN."""
    df = pd.DataFrame(rows)
    return df.astype(object).where(df.notna(), "—")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def probe_rows(res: WeekResults) -> list[dict[str, Any]]:
    """Every rank's row of every probe."""
    return [r for p in res.probes.values() for r in p["rows"]]


def doc_measurements(res: WeekResults, hardware: str, commit: str) -> dict[str, Any]:
    """The probes' rank-0 rows in :mod:`week10_fsdp.memory_doc`'s schema; the no-reshard row also gets ``gathered``
    = its activations minus FSDP2's at the same world size (what staying gathered adds)."""
    rows = []
    for _world, p in sorted(res.probes.items()):
        mine = {r["strategy"]: r for r in p["rows"] if r["rank"] == 0}
        for name, r in mine.items():
            row = {k: v for k, v in r.items() if k not in ("rank", "peak_allocated")}
            if name == "fsdp2_no_reshard" and "fsdp2" in mine:
                row["gathered"] = r["activations"] - mine["fsdp2"]["activations"]
            rows.append(row)
    return {"hardware": hardware, "commit": commit, "rows": rows}


def memory_section(log: WeeklyLog, res: WeekResults, compared: Sequence[Mapping[str, Any]]) -> None:
    rows = []
    for r in probe_rows(res):
        if r["rank"] != 0:
            continue
        f = F.state_bytes(r["n_params"], r["world_size"], r["strategy"])
        total = r["params"] + r["grads"] + r["optimizer"]
        rows.append({"strategy": r["strategy"], "ranks N": r["world_size"], "Ψ (params)": r["n_params"],
                     "params B": r["params"], "grads B": r["grads"], "optimizer B": r["optimizer"],
                     "total B": total, "formula B": f["total"], "measured / formula": round(total / f["total"], 4),
                     "bytes per param": round(total / r["n_params"], 3)})
    log.section("Memory per rank: measured beside the formulas",
                "Each probe is a child `torchrun` job of N ranks (1, 2, 4) running one real AdamW step of the week's "
                "GPT; bytes are counted from each rank's local shards (`DTensor.to_local()` numel × element size, "
                "`shared.train.memory.shard_bytes`), rank 0 shown. Formulas: DDP 16Ψ (fp32 weights, fp32 grads, two "
                "fp32 AdamW moments), FSDP2 = ZeRO-3 16Ψ/N; without resharding after forward FSDP2 is sharded the same "
                "at rest. The optimizer column also holds AdamW's per-parameter step counters (4 B each).")
    log.table(pd.DataFrame(rows), "memory_per_rank")
    act = []
    for r in probe_rows(res):
        if r["rank"] == 0:
            shape = dict(batch=r["batch"], seq=r["seq"], n_embd=r["n_embd"], n_head=r["n_head"],
                         n_layer=r["n_layer"], vocab=r["vocab_size"])
            act.append({"strategy": r["strategy"], "ranks N": r["world_size"], "activations B": r["activations"],
                        "formula B": F.gpt_activation_bytes(**shape),
                        "with checkpointing B": r["activations_ckpt"],
                        "formula (checkpointing) B": F.gpt_activation_bytes(**shape, checkpointing=True)})
    log.text("**Activations** (saved-tensor hooks over one forward: every storage autograd keeps for backward, "
             "parameters excluded) without and with per-block activation checkpointing, beside "
             "`formulas.gpt_activation_bytes`. Under FSDP2 without resharding, the all-gathered parameters stay "
             "saved for backward as well: the difference to FSDP2 is the `gathered` row of the comparison below.")
    log.table(_frame(act), "activations")
    log.table(pd.DataFrame([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.items() if k != "row"}
                            for c in compared]), "memory_vs_formulas",
              "Every measured quantity beside its formula (`week10_fsdp.memory_doc.compare_measurements`).")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for strategy, marker in (("ddp", "o"), ("fsdp2", "s")):
        pts = sorted((r["ranks N"], r["total B"], r["formula B"]) for r in rows if r["strategy"] == strategy)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] / 2**20 for p in pts], marker=marker, label=f"{strategy} measured")
            ax.plot([p[0] for p in pts], [p[2] / 2**20 for p in pts], ls="--", color="grey")
    ax.set_xlabel("ranks N")
    ax.set_ylabel("params + grads + optimizer per rank (MiB)")
    ax.set_xticks(sorted({r["ranks N"] for r in rows}))
    ax.legend()
    ax.set_title("per-rank training state (dashed: 16Ψ and 16Ψ/N)")
    log.plot(fig, "memory_per_rank", "Per-rank bytes of parameters, gradients and optimizer state vs the number of "
             "ranks: DDP stays at 16Ψ, FSDP2 falls as 16Ψ/N.")


def throughput_section(log: WeeklyLog, res: WeekResults) -> None:
    bench = [b for p in res.probes.values() for b in p.get("bench", [])]
    if not bench:
        return
    base = next((b["tokens_per_sec"] for b in bench if b["strategy"] == "ddp"), None)
    rows = [{"strategy": b["strategy"], "ranks": b["world_size"], "tokens/s (all ranks)": round(b["tokens_per_sec"]),
             "ms/step": round(b["ms_per_step"], 1),
             "vs DDP": round(b["tokens_per_sec"] / base, 3) if base else None} for b in bench]
    device = next(iter(res.probes.values()))["device"]
    log.section("Throughput: DDP vs FSDP2 vs FSDP2 + activation checkpointing",
                f"Timed AdamW steps of the same GPT on `{device}`. On CPU with gloo this only shows the overheads: "
                "FSDP2 all-gathers every block's parameters in forward and again in backward and reduce-scatters the "
                "gradients (about 1.5× DDP's all-reduce traffic), and checkpointing recomputes each block's forward; "
                "none of it overlaps with compute the way NCCL streams do on GPUs, so the ratios are no forecast for "
                "a GPU cluster. The memory side (above) is hardware-independent.")
    log.table(pd.DataFrame(rows), "throughput")


def parity_section(log: WeeklyLog, res: WeekResults, cfg: Week10Config) -> None:
    rows = parity_rows(res, cfg)
    if not rows:
        log.section("Loss parity", res.skipped.get("parity", "not run"))
        return
    log.section("Loss parity: DDP vs FSDP2 on the same batches",
                f"Each pair trains from the same seed on the same per-rank batches for {cfg.parity.steps} steps "
                "(2 gloo ranks, fp32) through the shared loop (`pretrain` for the LM, `finetune` for SFT); only the "
                "strategy differs. FSDP2 reduce-scatters where DDP all-reduces, so fp32 sums may differ in the last "
                "bit; the check allows 1e-5 per step. The accumulation pair takes the same global batch in "
                f"{cfg.parity.grad_accum_steps} micro-batches per step, skipping the gradient sync on all but the "
                "last (DDP `no_sync`, FSDP2 `set_requires_gradient_sync(False)`).")
    log.table(_frame([{k: (f"{v:.2e}" if k == "max_abs_diff" else round(v, 6) if isinstance(v, float) else v)
                       for k, v in r.items()} for r in rows]), "parity")
    plt = _plt()
    tasks = [t for t in cfg.parity.tasks if f"{t}-ddp" in res.runs]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for name, ls in ((f"{task}-ddp", "-"), (f"{task}-fsdp2", "--")):
            ax.plot(range(1, len(res.runs[name].losses) + 1), res.runs[name].losses, ls=ls, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.set_title(task)
        ax.legend()
    log.plot(fig, "parity", "Train loss per step under DDP (solid) and FSDP2 (dashed): the curves coincide.")


def dcp_section(log: WeeklyLog, res: WeekResults) -> None:
    log.section("Distributed checkpoints (DCP): resharding and export",
                "The FSDP2 runs checkpoint with `torch.distributed.checkpoint` (`shared.dcp.DCPCheckpointer`): every "
                "rank writes its own shards plus one `.metadata`; rank 0 writes `meta.json` and moves the "
                "`last`/`best` pointers once all ranks are done. The LM's last checkpoint (saved by the launch's "
                "ranks) is loaded by one process into a plain GPT (`shared.dcp.load_sharded_into`, no process group) "
                "and by a child `torchrun` job of 4 ranks into an FSDP2 model, each scored on the run's own eval "
                "batches.")
    if res.reshard:
        log.table(_frame(res.reshard), "reshard")
    if res.export:
        rows = [{"model": k, **v} for k, v in res.export.items()]
        log.table(_frame(rows), "export", "Sharded → full state dict → Hugging Face folder (safetensors) → "
                  "loaded back. Weeks 8, 9 and 11 load these folders like any other export.")
    if "export" in res.skipped:
        log.text(f"Skipped: {res.skipped['export']}.")


def minimal_section(log: WeeklyLog, res: WeekResults) -> None:
    if not res.minimal:
        return
    log.section("The minimal example (`week10_fsdp/minimal.py`)",
                "FSDP2 in one page, for the day-64 decision: a stack of Linear layers, one AdamW step under DDP and "
                "under FSDP2, bytes held per rank (`torchrun --standalone --nproc-per-node 2 "
                "week10_fsdp/minimal.py`).")
    log.table(pd.DataFrame(res.minimal), "minimal")


def accelerate_section(log: WeeklyLog, res: WeekResults) -> None:
    log.section("Beyond one machine: accelerate, torchrun, Slurm")
    if res.accelerate is not None:
        a = res.accelerate
        log.text(f"`accelerate launch --config_file week10_fsdp/configs/accelerate_fsdp2.yaml --num_processes 2 -m "
                 f"week10_fsdp.probe ...` ran the same probe: launcher `{a['launcher']}`, FSDP options from the config "
                 f"file {a['fsdp']}; its per-rank bytes are compared with torchrun's in the checks.")
    elif "accelerate" in res.skipped:
        log.text(f"accelerate: {res.skipped['accelerate']}.")
    log.text("Several machines: `week10_fsdp/scripts/multinode.sbatch` starts one `torchrun` per node with a c10d "
             "rendezvous on the first node (`--nnodes`, `--nproc-per-node`, `--rdzv-backend c10d`, "
             "`--rdzv-endpoint $HEAD:29500`, `--rdzv-id $SLURM_JOB_ID`). Nothing in the week's code changes: the "
             "world size comes from the launcher, `dist.backend=auto` picks NCCL on GPUs, and the config values "
             "below are the only edits.")


def scale_out_section(log: WeeklyLog, res: WeekResults, cfg: Week10Config) -> None:
    rows = [r for r in probe_rows(res) if r["rank"] == 0]
    if not rows:
        return
    n = rows[0]["n_params"]
    out = []
    for world in (8, 64):
        for strategy in ("ddp", "fsdp2"):
            b = F.state_bytes(n, world, strategy)
            out.append({"GPUs": world, "strategy": strategy, "per-rank state (MiB)": round(b["total"] / 2**20, 3),
                        "what to change": ("NPROC=8 (torchrun --nproc-per-node 8); profile gpu; "
                                           "fsdp.param_dtype=bf16" if world == 8 else
                                           "multinode.sbatch: 8 nodes × 8 GPUs; the same config values")})
    log.table(pd.DataFrame(out), "scale_out", "This week's GPT at 8 and 64 GPUs (formulas, fp32 state): what a user "
              "changes is the launcher's process count and config values only.")


def pitfalls_section(log: WeeklyLog, res: WeekResults) -> None:
    log.section("Pitfalls, each pinned by a test",
                "`shared/tests/test_fsdp.py` and `shared/tests/test_dcp.py`, run by this week through pytest (and by "
                "`make test`). One found while building: DCP's `get_state_dict` on an optimizer that has not stepped "
                "creates its state with a zero-lr step, so AdamW's step count runs one ahead and every later update "
                "differs; `DCPCheckpointer` saves the model only before the first step. Another: `fully_shard` "
                "replaces every parameter, so an optimizer built before it updates tensors no longer in the model; "
                "`FSDP2Parallel.wrap(model, optimizer)` points the optimizer at the sharded parameters, and the loop "
                "wraps before it resumes.")
    red = next((p["reduction"] for p in res.probes.values() if p.get("reduction")), None)
    if red:
        log.text(f"**bf16 parameters: the reduce dtype.** One backward of the same batches on {red['world_size']} "
                 "ranks under FSDP2, each gradient compared with the fp32 run's (‖g − g_fp32‖ / ‖g_fp32‖). Reducing "
                 "in bf16 rounds every partial sum to 8 bits of mantissa on top of the bf16 compute; "
                 f"{red['elements_changed_by_bf16_reduce']:,} gradient elements differ between the two reductions.")
        log.table(pd.DataFrame([{"setting": k, "relative gradient error": f"{v:.3e}"} for k, v in red.items()
                                if k.startswith("bf16 params")]), "reduce_dtype")
    if res.pitfalls:
        log.table(pd.DataFrame(res.pitfalls), "pitfall_tests")
    else:
        log.text(f"Not run here: {res.skipped.get('pitfalls', '')}.")


def decision_section(log: WeeklyLog) -> None:
    installed = importlib.util.find_spec("deepspeed") is not None
    log.section("Decision note: FSDP2 or DeepSpeed ZeRO",
                f"DeepSpeed in this environment: {'importable' if installed else 'not installed'} "
                "(`importlib.util.find_spec`); on PyPI it is a source distribution that compiles its ops against "
                "CUDA at install time, while FSDP2 and DCP ship inside the pinned torch wheel and ran here on CPU with "
                "gloo. The stages map one to one:")
    log.table(pd.DataFrame([
        {"ZeRO": "stage 1 (optimizer state)", "FSDP": "no direct FSDP2 mode (FSDP1: none)", "per rank (fp32)":
         "8Ψ + 8Ψ/N"},
        {"ZeRO": "stage 2 (+ gradients)", "FSDP": "FSDP2 reshard_after_forward=False (FSDP1 SHARD_GRAD_OP)",
         "per rank (fp32)": "4Ψ + 12Ψ/N (FSDP2: 16Ψ/N at rest, Ψ gathered forward→backward)"},
        {"ZeRO": "stage 3 (+ parameters)", "FSDP": "FSDP2 fully_shard (FSDP1 FULL_SHARD)", "per rank (fp32)": "16Ψ/N"},
        {"ZeRO": "— (replicated)", "FSDP": "DDP (FSDP1 NO_SHARD)", "per rank (fp32)": "16Ψ"},
        {"ZeRO": "ZeRO++ hierarchical", "FSDP": "HSDP (a 2-D device mesh: shard in a node, replicate across)",
         "per rank (fp32)": "16Ψ/N_node"},
    ]), "zero_vs_fsdp")
    log.text("FSDP2 is the default: it is PyTorch's own (no extra build), its parameters are DTensors, so the "
             "state dict, DCP resharding and the optimizer work per parameter with their original names (the "
             "export above needs no conversion), and it composes with `torch.compile`, activation checkpointing and "
             "tensor parallelism through the same device mesh.")


def timings_section(log: WeeklyLog, res: WeekResults) -> None:
    log.section("Timings")
    log.table(pd.DataFrame([{"stage": k, "seconds": round(v, 1)} for k, v in res.timings.items()]), "timings")
