"""The decision table (full FT / LoRA / QLoRA) and the failure-mode Q&A, generated from the week's measurements.

Each decision cell states its numbers and cites the run ids they come from; each Q&A item names its reproduction (a
run of this week, a tiny-model reproduction in :mod:`week08_lora.pitfalls`, or a test) and what it measured.
"""

from __future__ import annotations

from typing import Any

from week08_lora.checks import pick_default, rank_needed


def _mib(b: float) -> str:
    return f"{b / 2**20:,.1f} MiB"


def _bench(res: Any, name: str) -> dict[str, Any] | None:
    return next((b for b in res.bench if b["variant"] == name), None)


def _run_id(res: Any, name: str) -> str | None:
    r = res.runs.get(name)
    return r.run_id if r is not None else None


def cells(res: Any, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The decision table: situation, choice, the numbers behind it, the run ids cited."""
    out = []
    full, lora, qlora = (_bench(res, m) for m in ("full", "lora", "qlora"))
    s_full, s_lora, s_q = (res.scored.get(labels[m]) for m in ("full", "lora", "qlora"))
    ids = {m: _run_id(res, m) for m in ("full", "lora", "peft", "qlora")}
    if full and lora and qlora:
        out.append({"cell": "memory is the limit", "choose": "QLoRA" if qlora["total"] < lora["total"] else "LoRA",
                    "evidence": f"counted step memory: full FT {_mib(full['total'])}, LoRA {_mib(lora['total'])}, "
                                f"QLoRA {_mib(qlora['total'])} (frozen weights {_mib(lora['weights'])} → "
                                f"{_mib(qlora['weights'])})",
                    "runs": [i for i in (ids["full"], ids["lora"], ids["qlora"]) if i]})
    if s_full and s_lora:
        better = "full FT" if (s_full["rougeL"], s_full["format_compliance"]) > (s_lora["rougeL"],
                                                                                  s_lora["format_compliance"]) else "LoRA"
        out.append({"cell": "quality matters most and full FT fits", "choose": better,
                    "evidence": f"harness ROUGE-L {s_full['rougeL']:.3f} (full) vs {s_lora['rougeL']:.3f} (LoRA), "
                                f"format compliance {s_full['format_compliance']:.3f} vs "
                                f"{s_lora['format_compliance']:.3f}, same steps and data",
                    "runs": [i for i in (ids["full"], ids["lora"]) if i]})
    rows = [b for b in (full, lora, qlora) if b]
    if rows:
        fastest = min(rows, key=lambda b: b["s/step"])
        out.append({"cell": "speed per step", "choose": labels[fastest["method"]],
                    "evidence": ", ".join(f"{labels[b['method']]} {b['s/step']:.2f} s/step" for b in rows)
                                + " on one fixed batch",
                    "runs": [i for i in (ids[b["method"]] for b in rows) if i]})
    lr = res.runs.get("lora")
    if lr is not None and lr.adapter_bytes and res.export.get("bytes"):
        out.append({"cell": "many tasks on one base (swap adapters)", "choose": "LoRA adapters",
                    "evidence": f"an adapter file is {_mib(lr.adapter_bytes)} vs {_mib(res.export['bytes'])} for the "
                                "merged model",
                    "runs": [lr.run_id, res.runs["sft+lora"].run_id]})
    if s_lora and s_q and lora and qlora:
        pick, why = pick_default(s_lora, s_q, lora["total"], qlora["total"])
        out.append({"cell": "default for weeks 9-11", "choose": pick, "evidence": why,
                    "runs": [i for i in (ids["lora"], ids["qlora"]) if i]})
    if res.sweep:
        ranks = [res.runs[n].spec.r for n in res.sweep]
        need, text = rank_needed(ranks, [res.runs[n].final_val_loss for n in res.sweep])
        out.append({"cell": "how much rank", "choose": f"r={need}", "evidence": f"final val loss {text}",
                    "runs": [res.runs[n].run_id for n in res.sweep]})
    return out


def qa_items(res: Any, cfg: Any, on_cuda: bool) -> list[dict[str, Any]]:
    """The failure-mode Q&A: question, symptom, fix, what the reproduction measured, whether it showed."""
    p, items = res.pitfalls, []

    def item(key: str, question: str, fix: str, source: str, evidence: str, shown: bool | None,
             skip: str = "") -> None:
        items.append({"key": key, "question": question, "fix": fix, "reproduction": source, "measured": evidence,
                      "shown": shown, "skip": skip})

    g = {(res.runs[n].spec.alpha, res.runs[n].spec.lr): res.runs[n] for n in res.grid}
    if g:
        a = max(cfg.sweep.grid_alphas)
        lo, hi = g.get((float(a), min(cfg.sweep.grid_lrs))), g.get((float(a), max(cfg.sweep.grid_lrs)))
        if lo is not None and hi is not None:
            d_lo, d_hi = lo.first_val_loss - lo.final_val_loss, hi.first_val_loss - hi.final_val_loss
            item("lr_too_low", "LoRA barely learns at the full-FT learning rate?",
                 "LoRA's B starts at 0 and only r·(in+out) numbers move: use a ~10x larger lr (here lora.lr)",
                 f"runs {lo.run_id}, {hi.run_id}",
                 f"val-loss drop {d_lo:.4f} at lr {lo.spec.lr:g} vs {d_hi:.4f} at lr {hi.spec.lr:g} (r={lo.spec.r}, "
                 f"alpha={a:g}, {lo.steps} steps)", d_lo < d_hi)
    if "alpha_over_r" in p:
        q = p["alpha_over_r"]
        item("alpha_over_r", "Changing the rank changed the training dynamics?",
             "keep alpha/r fixed when sweeping r (alpha = 2r here), or use rsLoRA's alpha/√r", "pitfalls.alpha_over_r",
             q["symptom"], q["shown"])
    for key, question, fix in (
            ("wrong_targets", "Nothing trains (0 trainable parameters)?",
             "name the model's own module names (Llama: q_proj … down_proj); the injection lists them"),
            ("forgot_merge", "The exported model behaves like the base?",
             "merge (unload_lora / merge_and_unload) before saving a full model"),
            ("merged_twice", "Outputs drift after a second merge?",
             "merge once; LoRALinear.merge refuses a second merge, unmerge first"),
            ("dtype_mismatch", "'expected m1 and m2 to have the same dtype' with a bf16 base?",
             "cast the adapter's input to its dtype and the output back (LoRALinear does)")):
        if key in p:
            item(key, question, fix, f"pitfalls.{key}", p[key]["symptom"], p[key]["shown"])
    lr = res.runs.get("lora")
    if lr is not None and lr.adapter_bytes and res.export.get("bytes"):
        item("full_model_saved", "A 'LoRA checkpoint' the size of the model?",
             "save only A and B (save_adapter / peft save_pretrained); merge only for serving",
             f"run {lr.run_id} and models/{res.export['path'].removeprefix('models/')}",
             f"adapter {_mib(lr.adapter_bytes)} vs merged model {_mib(res.export['bytes'])}",
             lr.adapter_bytes * 2 < res.export["bytes"])
    q_bf, q_fp = _bench(res, "qlora"), next((b for b in res.bench if b["variant"].startswith("qlora-")), None)
    if q_bf and q_fp:
        fp32 = q_bf if q_bf["compute dtype"] == "float32" else q_fp
        low = q_fp if fp32 is q_bf else q_bf
        bf16_faster = low["s/step"] < fp32["s/step"]
        # bf16 more than twice as slow as fp32: the hardware emulates bf16 matmuls, and fp32 is the right choice
        emulated = low["compute dtype"] == "bfloat16" and low["s/step"] > 2 * fp32["s/step"]
        item("qlora_fp32_compute", "QLoRA slower or bigger than expected?",
             "NF4 is storage only: the compute dtype sets the activations and the matmul speed. bf16 "
             "(bnb_4bit_compute_dtype / quant.compute_dtype) saves activation memory and is faster where the "
             "hardware multiplies bf16 (GPUs, CPUs with AVX512-BF16 or AMX); here it measured "
             + ("faster" if bf16_faster else f"{low['s/step'] / fp32['s/step']:.1f}x slower per step"
                + (", so this profile computes in fp32" if cfg.quant.compute_dtype == "float32" else "")),
             "bench rows qlora / " + q_fp["variant"],
             f"compute {fp32['compute dtype']}: {fp32['s/step']:.2f} s/step, activations {_mib(fp32['activations'])}"
             f"; {low['compute dtype']}: {low['s/step']:.2f} s/step, activations {_mib(low['activations'])}",
             None if emulated or not cfg.check.judge_speed
             else fp32["s/step"] > low["s/step"] or fp32["activations"] > low["activations"],
             skip="millisecond steps of a tiny model (smoke): shown, not judged" if not cfg.check.judge_speed else
             (f"bf16 matmuls are emulated here: bf16 measured {low['s/step'] / fp32['s/step']:.1f}x slower than "
              "fp32 per step, so fp32 is no mistake on this hardware (the pitfall needs bf16 matmul units)")
             if emulated else "")
    b = res.bnb
    if on_cuda:
        item("cpu_trap", "bitsandbytes QLoRA on CPU: loss normal, gradients wrong?", "not on CUDA", "bnb_check",
             "CUDA: bitsandbytes has autograd kernels here", None, skip="the trap is CPU-only")
    elif b.get("available") and b.get("after_eval_error"):
        item("cpu_trap", "bitsandbytes QLoRA on CPU: loss normal, gradients wrong?", "", "bnb_check.gradient_check",
             f"fresh cosine {b['cos_before']:.4f}; the eval-mode repack raised", None,
             skip=f"bitsandbytes' CPU repack fails on this model's shapes ({b['after_eval_error']})")
    elif b.get("available") and not b.get("repacked_after_eval"):
        item("cpu_trap", "bitsandbytes QLoRA on CPU: loss normal, gradients wrong?", "", "bnb_check.gradient_check",
             f"no repack: adapter-gradient cosine with the hand QLoRA {b['cos_before']:.4f} fresh, "
             f"{b['cos_after']:.4f} after one eval forward", None,
             skip=f"bitsandbytes left the 4-bit weights unpacked after the eval forward (this CPU's AVX512-BF16: "
                  f"{'yes' if b.get('cpu_avx512bf16') else 'no'}); the trap needs the repack; "
                  "week08_lora/tests/test_bnb_trap.py shows it where the CPU has AVX512-BF16")
    elif b.get("available"):
        item("cpu_trap", "bitsandbytes QLoRA on CPU: loss normal, gradients wrong?",
             "never evaluate/generate with the bnb model before training on CPU (or reload it), or use the "
             "hand-written QLoRA; test: week08_lora/tests/test_bnb_trap.py",
             "bnb_check.gradient_check",
             f"adapter-gradient cosine with the hand QLoRA {b['cos_before']:.4f} fresh → {b['cos_after']:.4f} after "
             f"one eval forward; layer-0 norm {b['layer0_norm_before']:.3g} → {b['layer0_norm_after']:.3g}; loss "
             f"{b['loss_bnb']:.4f} → {b['loss_bnb_after_eval']:.4f}",
             b["cos_before"] >= cfg.check.grad_cos > b["cos_after"])
    else:
        item("cpu_trap", "bitsandbytes QLoRA on CPU: loss normal, gradients wrong?", "", "bnb_check",
             b.get("reason", ""), None, skip=b.get("reason", "bitsandbytes unavailable"))
    return items


def render(cells_: list[dict[str, Any]], items: list[dict[str, Any]], header: str) -> str:
    """``docs/peft-decision.md``: the decision table and the Q&A, as Markdown."""
    lines = [ "# Full fine-tuning, LoRA or QLoRA? (generated by `make week08`; do not edit by hand)", "", header, "",
             "## Decision table", "", "| situation | choose | measured | runs |", "|---|---|---|---|"]
    lines += [f"| {c['cell']} | **{c['choose']}** | {c['evidence']} | {', '.join(f'`{r}`' for r in c['runs'])} |"
              for c in cells_]
    lines += ["", "## Failure modes: symptom, fix, reproduction", ""]
    for i in items:
        state = ("not reproducible here: " + i["skip"]) if i["skip"] else ("reproduced" if i["shown"] else
                                                                           "**symptom not shown**")
        lines += [f"### {i['question']}", "", f"- measured: {i['measured']}", f"- fix: {i['fix']}",
                  f"- reproduction: `{i['reproduction']}` ({state})", ""]
    return "\n".join(lines) + "\n"
