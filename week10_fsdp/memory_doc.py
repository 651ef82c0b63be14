"""Generate ``docs/memory.md``: where a training step's memory goes, as formulas (:mod:`week10_fsdp.formulas`), worked
examples, and the week's measurements beside the formulas. Every number in the document comes from a function.

    python -m week10_fsdp.memory_doc --measurements runs/.../memory.json --out docs/memory.md

The measurements dict (JSON) that the week's run passes::

    {
      "hardware": str,                 # e.g. "2 x CPU (gloo)" or "8 x NVIDIA H100 80GB"
      "commit": str,                   # git commit the measurements were taken at
      "rows": [                        # one per measured configuration, numbers of rank 0
        {
          "strategy": str,             # "ddp" | "fsdp2" | "fsdp2_no_reshard" (any of formulas.STRATEGIES)
          "world_size": int,           # N
          "n_params": int,             # Ψ, every parameter counted once
          "params": int,               # bytes of parameters on the rank at rest (a shard under FSDP2)
          "grads": int,                # bytes of .grad after backward
          "optimizer": int,            # bytes of AdamW state after a step
          "activations": int | None,   # bytes saved for backward (measure_step_memory), no checkpointing; None: not run
          "activations_ckpt": int | None,  # the same with per-block activation checkpointing
          "gathered": int | None,      # optional: bytes of all-gathered parameters held between forward and backward
          "batch": int, "seq": int,    # micro-batch B (sequences) and T (tokens per sequence)
          "n_layer": int, "n_embd": int, "n_head": int, "vocab_size": int,  # the GPT's shape
          "precision": str,            # optional, "fp32" (default) | "bf16_mixed": the state formula to compare with
          "bytes_per_elem": int,       # optional, 4 (default) | 2: activations and gathered parameters
          "flash": bool                # optional, False (default): attention that saves no T x T matrix
        }
      ]
    }

FSDP2 with a bf16 ``MixedPrecisionPolicy`` keeps fp32 sharded parameters and gradients at rest: compare it with
``precision="fp32"`` and ``bytes_per_elem=2`` (see :func:`week10_fsdp.formulas.state_bytes`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared.atomic import atomic_write_text
from week10_fsdp import formulas as F

TOLERANCE = 0.05  # a measured number agrees with its formula when |measured / formula - 1| <= this
REQUIRED = ("strategy", "world_size", "n_params", "params", "grads", "optimizer", "batch", "seq", "n_layer", "n_embd",
            "n_head", "vocab_size")
STATE_LABELS = {"ddp": "DDP", "zero1": "ZeRO-1", "zero2": "ZeRO-2", "zero3": "ZeRO-3 = FSDP2",
                "fsdp2_no_reshard": "FSDP2, reshard_after_forward=False"}


def state_formula(strategy: str, precision: str) -> dict[str, str]:
    """The per-rank formula of each state as text, e.g. ``{"optimizer": "12Ψ/N", ..., "total": "4Ψ + 12Ψ/N"}``,
    written from :data:`formulas.BYTES_PER_PARAM` and :data:`formulas.SHARDED`."""
    per_param, sharded = F.BYTES_PER_PARAM[precision], F.SHARDED[strategy]
    out = {k: f"{b}Ψ/N" if s else f"{b}Ψ" for k, b, s in zip(("params", "grads", "optimizer"), per_param, sharded,
                                                              strict=True)}
    full = sum(b for b, s in zip(per_param, sharded, strict=True) if not s)
    split = sum(b for b, s in zip(per_param, sharded, strict=True) if s)
    out["total"] = " + ".join(t for t in (f"{full}Ψ" if full else "", f"{split}Ψ/N" if split else "") if t)
    return out


def _check(measurements: dict) -> None:
    for key in ("hardware", "commit", "rows"):
        if key not in measurements:
            raise ValueError(f"measurements lack '{key}' (schema: see week10_fsdp.memory_doc)")
    for i, row in enumerate(measurements["rows"]):
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ValueError(f"measurements row {i} lacks {', '.join(missing)} (schema: see week10_fsdp.memory_doc)")


def compare_measurements(measurements: dict) -> list[dict]:
    """Each measured number beside its formula: a list of ``{"row", "strategy", "world_size", "quantity",
    "measured", "formula", "ratio", "agrees"}`` (``ratio`` None when the formula is 0; ``agrees`` when
    ``|ratio - 1| <= TOLERANCE``, or both are 0). Quantities that are None or absent are left out.

    Raises:
        ValueError: a required key is missing (named in the message), or a bad strategy or precision.
    """
    _check(measurements)
    out = []
    for i, r in enumerate(measurements["rows"]):
        e, flash = r.get("bytes_per_elem", 4), r.get("flash", False)
        shape = dict(batch=r["batch"], seq=r["seq"], n_embd=r["n_embd"], n_head=r["n_head"], n_layer=r["n_layer"],
                     vocab=r["vocab_size"], bytes_per_elem=e, flash=flash)
        expected = F.state_bytes(r["n_params"], r["world_size"], r["strategy"], r.get("precision", "fp32"))
        expected.pop("total")
        expected["activations"] = F.gpt_activation_bytes(**shape)
        expected["activations_ckpt"] = F.gpt_activation_bytes(**shape, checkpointing=True)
        block = F.gpt_block_params(r["n_embd"])
        root = max(r["n_params"] - r["n_layer"] * block, 0)
        expected["gathered"] = F.gathered_param_bytes(block, r["n_layer"], r["strategy"], e, root)
        if r["strategy"] == "fsdp2_no_reshard":
            # the gathered parameters stay saved for backward: counted with the activations. With checkpointing the
            # blocks save only their inputs, so only the root's (embeddings, final norm) stay
            expected["activations"] += expected["gathered"]
            expected["activations_ckpt"] += root * e
        for quantity, formula in expected.items():
            measured = r.get(quantity)
            if measured is None:
                continue
            ratio = measured / formula if formula else None
            agrees = abs(ratio - 1) <= TOLERANCE if ratio is not None else measured == 0
            out.append({"row": i, "strategy": r["strategy"], "world_size": r["world_size"], "quantity": quantity,
                        "measured": measured, "formula": formula, "ratio": ratio, "agrees": agrees})
    return out


def _gib(n_bytes: float) -> str:
    gib = n_bytes / F.GIB
    return f"{gib:,.2f}" if gib >= 1 else f"{gib:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]


def _what_takes_memory() -> list[str]:
    rows = [[name, *(str(F.BYTES_PER_PARAM[p][i]) for p in F.PRECISIONS), why] for i, (name, why) in enumerate((
        ("parameters", "the weights (bf16 mixed: the copy the matmuls read)"),
        ("gradients", "one per parameter, in the parameters' dtype"),
        ("optimizer (AdamW)", "fp32: two moments; bf16 mixed: fp32 master weights + two moments")))]
    rows.append(["**total**", *(f"**{sum(F.BYTES_PER_PARAM[p])}**" for p in F.PRECISIONS), "Ψ parameters → ×Ψ bytes"])
    return ["## What takes memory", "",
            "Four things live on a GPU during training. Three scale with the parameter count Ψ and not with the batch: "
            "bytes per parameter with AdamW (ZeRO, Rajbhandari et al. 2020, https://arxiv.org/abs/1910.02054, §3.1):",
            "", *_table(["state", "fp32 (bytes/param)", "bf16 mixed (bytes/param)", "why"], rows), "",
            "Mixed precision saves compute and activation memory, not state: the optimizer keeps fp32 copies. The "
            "fourth, **activations**, is what autograd saves in the forward for the backward; it scales with batch × "
            "sequence × width × depth (and with T² for attention that materialises its probabilities).", ""]


def _activations() -> list[str]:
    terms = [[what, f"{n} BTC"] for what, n in F.LAYER_BTC_TERMS]
    terms += [["LayerNorm rstd of norm1 and norm2", f"{F.LAYER_BT} BT"],
              ["attention: masked scores, exp, probabilities (hand-written only)", f"{F.LAYER_ATTN_TT} BHT²"],
              ["attention: row max, row sum, clamped sum (hand-written only)", f"{F.LAYER_ATTN_BHT} BHT"],
              ["attention: isfinite(row max), bool (hand-written only)", f"{F.LAYER_ATTN_BHT_BOOL} BHT bytes"],
              ["flash: logsumexp, fp32 (flash only)", f"{F.FLASH_LSE_BYTES} BHT bytes"]]
    name, _, n_layer, n_embd, n_head, vocab, seq, what = F.WORKED_MODELS[0]
    ex = dict(batch=1, seq=seq, n_embd=n_embd, n_head=n_head, bytes_per_elem=2)
    manual, flash = F.gpt_layer_activation_bytes(**ex), F.gpt_layer_activation_bytes(**ex, flash=True)
    return ["## Activations of one GPT block", "",
            "Counted from what this project's GPT saves (pre-LN, learned positions, GELU MLP 4C, hand-written "
            "attention, no dropout, tied LM head) with `shared.train.memory.measure_step_memory`, term by term; the "
            "formula equals the count to the byte (`week10_fsdp/tests/test_formulas.py`). B batch, T sequence, C "
            "n_embd, H n_head, L n_layer, V vocab, e bytes per element:", "",
            *_table(["saved for backward, per block", "elements"], terms), "",
            f"- **per block**: `e({F.LAYER_BTC} BTC + {F.LAYER_BT} BT) + e({F.LAYER_ATTN_TT} BHT² + "
            f"{F.LAYER_ATTN_BHT} BHT) + {F.LAYER_ATTN_BHT_BOOL} BHT` (hand-written attention); with FlashAttention "
            f"(Dao et al. 2022, https://arxiv.org/abs/2205.14135) `e({F.LAYER_BTC} BTC + {F.LAYER_BT} BT) + "
            f"{F.FLASH_LSE_BYTES} BHT`: no T × T matrix.",
            f"- **outside the blocks**: token and position ids and targets (int64), norm_f and the head's input "
            f"(`e({F.NON_LAYER_BTC} BTC + BT)`), and the loss's log-softmax `4 BTV` (fp32 whatever e: "
            "`causal_lm_loss` casts the logits first). For a large vocabulary this is the biggest single tensor.",
            "- **per-block checkpointing** (Korthikanti et al. 2022, https://arxiv.org/abs/2205.05198): each block "
            "keeps its input only, `L·e·BTC` + outside the blocks; backward recomputes one block at a time, so the "
            "peak adds one block's full activations.",
            f"- A fused `nn.LayerNorm` would save its input and two statistics instead of three C-wide tensors: "
            f"{F.LAYER_BTC - 2 * F.FUSED_LN_SAVING} BTC per block. Korthikanti et al.'s `34 sbh + 5 as²b` (bytes at 16 bits) includes "
            f"dropout masks this GPT does not have.",
            f"- Example, {name} ({what}) at T = {seq}, B = 1, bf16: {_gib(manual)} GiB per block with the "
            f"hand-written attention, {_gib(flash)} GiB with flash.", ""]


def _strategies() -> list[str]:
    gathered = {"ddp": "— (full at rest)", "zero1": "— (full at rest)", "zero2": "— (full at rest)",
                "zero3": "one block", "fsdp2_no_reshard": "every block and the root (Ψ)"}
    lines = ["## DDP vs ZeRO-1/2/3 vs FSDP2: what each rank holds", "",
             "Per rank, at rest, for N ranks (ZeRO §5). ZeRO-1 shards the optimizer state, ZeRO-2 also the gradients "
             "(reduce-scatter instead of all-reduce), ZeRO-3 = FSDP2 (`fully_shard`) also the parameters, "
             "all-gathered one block at a time for forward and again for backward. With `reshard_after_forward=False` "
             "FSDP2 skips the second all-gather by keeping every gathered block from forward to backward.", ""]
    for precision in F.PRECISIONS:
        rows = [[STATE_LABELS[s], *state_formula(s, precision).values(), gathered[s]] for s in STATE_LABELS]
        lines += [f"**{precision}**", "", *_table(["strategy", "params", "grads", "optimizer", "total",
                                                  "gathered between forward and backward"], rows), ""]
    fp32 = state_formula("fsdp2", "fp32")
    return lines + [
        f"FSDP2 with a bf16 `MixedPrecisionPolicy` keeps its sharded fp32 parameters as the master copy and reduces "
        f"gradients into fp32 shards: the same total, split like fp32 ({fp32['params']} + {fp32['grads']} + "
        f"{fp32['optimizer']}); the bf16 copies exist only while a block is gathered. One GPT block is "
        f"`{F.BLOCK_C2}C² + {F.BLOCK_C}C` parameters (`formulas.gpt_block_params`). Not counted: FSDP2 "
        "prefetches the next block's all-gather during the current one (two blocks for a moment). Without "
        "resharding, the root module's parameters (embeddings, final norm) stay gathered too: torch 2.14's FSDP2 "
        "reshards the root after forward like a block, which this week measured.", ""]


def _worked() -> list[str]:
    rows = F.worked_examples()
    keys = list(dict.fromkeys((r["model"], r["precision"], r["strategy"]) for r in rows))
    pivot = []
    for model, precision, strategy in keys:
        sel = [r for r in rows if (r["model"], r["precision"], r["strategy"]) == (model, precision, strategy)]
        pivot.append([model, f"{sel[0]['n_params']:,}", precision, STATE_LABELS[strategy],
                      *(_gib(r["total_gib"] * F.GIB) for r in sel)])
    detail = [[r["model"], r["precision"], STATE_LABELS[r["strategy"]], r["world_size"],
               *(_gib(r[f"{k}_gib"] * F.GIB) for k in ("params", "grads", "optimizer", "total"))] for r in rows]
    acts, seen = [], set()
    for r in rows:
        if (r["model"], r["precision"]) in seen:
            continue
        seen.add((r["model"], r["precision"]))
        acts.append([f"{r['model']} ({r['what']})", f"L {r['n_layer']}, C {r['n_embd']}, H {r['n_head']}, "
                     f"V {r['vocab']}, T {r['seq']}", r["bytes_per_elem"],
                     *(_gib(r[k] * F.GIB) for k in ("act_gib", "act_flash_gib", "act_ckpt_gib",
                                                    "act_ckpt_peak_gib", "act_ckpt_flash_peak_gib"))])
    sizes = [f"{n} GPU{'s' if n > 1 else ''}" for n in F.WORKED_WORLD_SIZES]
    return ["## Worked examples", "",
            "State (params + grads + AdamW) in GiB per rank, from `formulas.state_bytes`:", "",
            *_table(["model", "Ψ", "precision", "strategy", *sizes], pivot), "",
            "<details><summary>params / grads / optimizer per rank (GiB)</summary>", "",
            *_table(["model", "precision", "strategy", "N", "params", "grads", "optimizer", "total"], detail), "",
            "</details>", "",
            "Activations of ONE sequence (micro-batch 1) in GiB, from `formulas.gpt_activation_bytes`; multiply by "
            "the micro-batch. The 1B and 7B are Llama shapes: their Ψ counts SwiGLU, RMSNorm and grouped-query "
            "attention, but their activations are this GELU GPT's formula at their shape, an estimate for the shape "
            "(SwiGLU saves more in the MLP, RMSNorm less in the norms). Activations do not shrink with N under "
            "ZeRO/FSDP: each rank runs its own micro-batch.", "",
            *_table(["model", "shape", "bytes/elem", "no ckpt", "flash", "ckpt (held)", "ckpt, recompute peak",
                     "ckpt + flash, recompute peak"], acts), ""]


def _validated(measurements: dict | None) -> list[str]:
    head = ["## Validated against this week's measurements", ""]
    if measurements is None:
        return head + ["The measurements come from `make week10`, which runs the week's DDP and FSDP2 steps, counts "
                       "their memory and regenerates this file with them beside the formulas.", ""]
    cmp = compare_measurements(measurements)
    rows = measurements["rows"]
    table = []
    for c in cmp:
        r = rows[c["row"]]
        shape = f"B {r['batch']}, T {r['seq']}, L {r['n_layer']}, C {r['n_embd']}, H {r['n_head']}, V {r['vocab_size']}"
        table.append([c["strategy"], c["world_size"], f"{r['n_params']:,}", shape, c["quantity"], f"{c['measured']:,}",
                      f"{c['formula']:,}", "—" if c["ratio"] is None else f"{c['ratio']:.3f}",
                      "yes" if c["agrees"] else "**NO**"])
    ok = sum(c["agrees"] for c in cmp)
    tol = f"{TOLERANCE:.0%}"
    return head + [f"Hardware: {measurements['hardware']}; commit `{measurements['commit']}`. Bytes per rank (rank "
                   f"0); a number agrees when it is within {tol} of its formula.", "",
                   *_table(["strategy", "N", "Ψ", "shape", "quantity", "measured (bytes)", "formula (bytes)",
                            "measured / formula", f"within {tol}"], table), "",
                   f"**{ok} of {len(cmp)} measured numbers agree with their formula within {tol}.**", ""]


def render_memory_doc(measurements: dict | None) -> str:
    """The full Markdown of ``docs/memory.md``; ``measurements`` as in the module docstring, or None (not run yet).

    Raises:
        ValueError: a measurements dict that misses a required key (named in the message).
    """
    lines = ["# Where a training step's memory goes", "",
             "<!-- Generated by `python -m week10_fsdp.memory_doc`: edit week10_fsdp/formulas.py or memory_doc.py, "
             "not this file. -->", "",
             "Every number below comes from the pure functions in `week10_fsdp/formulas.py`; the last section puts "
             "the week's measurements beside them.", ""]
    for part in (_what_takes_memory(), _activations(), _strategies(), _worked(), _validated(measurements)):
        lines += part
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Write ``docs/memory.md`` (or ``--out``) from the formulas and, if given, a measurements JSON file."""
    p = argparse.ArgumentParser(prog="python -m week10_fsdp.memory_doc", description=__doc__.split("\n")[0])
    p.add_argument("--measurements", type=Path, default=None, help="JSON file with the week's measurements")
    p.add_argument("--out", type=Path, default=Path("docs/memory.md"), help="where to write the Markdown")
    args = p.parse_args(argv)
    measurements = json.loads(args.measurements.read_text()) if args.measurements else None
    atomic_write_text(args.out, render_memory_doc(measurements))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
