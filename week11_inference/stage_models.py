"""Inference for the models the second half trained: the week-7 SFT, week-8 LoRA and week-9 DPO exports (and the
registry's SmolLM2 they all start from), each loaded from ``models/`` in Hugging Face format and asked the same
questions greedily with ``transformers``' ``generate`` and its KV cache: load time, tokens/s and the answers.

A missing export is a row with ``status`` SKIP and the command that makes it; nothing here imports another week.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shared.config import at_least
from shared.paths import models_root


@dataclass
class StageModelsConfig:
    """Which exports to time and how."""

    models: list[str] = field(default_factory=lambda: [
        "smollm2-135m-instruct", "week07/sft-v1", "week08/sft-lora", "week09/dpo"])  # folders under models/
    prompts: list[str] = field(default_factory=lambda: [
        "What is the capital of France?", "Give three tips for staying healthy.",
        "Translate 'good morning' into French."])
    new_tokens: int = at_least(1, 48)  # greedy tokens per answer (an answer may stop earlier at EOS)


MAKES = {"week07": "make week07 PROFILE=cpu", "week08": "make week08 PROFILE=cpu", "week09": "make week09 PROFILE=cpu",
         "smollm2-135m-instruct": "make models"}


def time_model(folder: Path, prompts: list[str], new_tokens: int) -> dict:
    """Load ``folder`` with ``transformers`` (fp32, CPU or the first GPU) and answer each prompt greedily.

    Returns ``{model, status, load_s, new_tokens, seconds, tokens_per_sec, answers}``: tokens/s counts the
    tokens generated (up to EOS) over the wall time of the ``generate`` calls, one prompt at a time (batch 1).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    load_s = time.perf_counter() - t0
    made, seconds, answers = 0, 0.0, []
    for prompt in prompts:
        enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True).to(device)
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, use_cache=True,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        seconds += time.perf_counter() - t
        new = out[0, enc["input_ids"].shape[1]:]
        made += len(new)
        answers.append(tok.decode(new, skip_special_tokens=True).strip())
    return {"status": "ok", "load_s": round(load_s, 2), "new_tokens": made, "seconds": round(seconds, 3),
            "tokens_per_sec": round(made / seconds, 2), "answers": answers}


def stage_models_rows(cfg: StageModelsConfig, root: Path | None = None) -> list[dict]:
    """One row per entry of ``cfg.models`` (see :func:`time_model`); a folder without ``config.json`` gives
    ``status`` SKIP with the command that creates it."""
    root = root or models_root()
    rows = []
    for name in cfg.models:
        folder = root / name
        if not (folder / "config.json").is_file():
            make = MAKES.get(name.split("/")[0], "the week that exports it")
            rows.append({"model": name, "status": "SKIP", "reason": f"{folder} is missing: run `{make}` first"})
            continue
        rows.append({"model": name, **time_model(folder, cfg.prompts, cfg.new_tokens)})
    return rows
