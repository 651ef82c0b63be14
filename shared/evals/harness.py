"""Run the instruction harness on one model: format every eval prompt, decode greedily, score, summarise."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from shared.data.prompts import format_prompt
from shared.evals.generate import greedy_generate
from shared.evals.instruct import EvalItem, HarnessConfig, score_answer, summarise


@dataclass
class HarnessResult:
    """Per-item rows (:func:`shared.evals.instruct.score_answer`), the summary, and the wall time (s)."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    seconds: float


def run_harness(model: nn.Module, tokenizer: Any, items: Sequence[EvalItem], template: str,
                cfg: HarnessConfig) -> HarnessResult:
    """Score ``model`` on ``items``: prompts in ``template``, greedy answers of at most ``cfg.max_new_tokens``.

    Args:
        model: in eval mode (see :func:`shared.evals.generate.greedy_generate`).
        tokenizer: the project's tokenizer interface (``encode``, ``decode``, ``eos_id``, ``pad_id``).

    Raises:
        ValueError: the tokenizer has no EOS id (an answer could never end), or ``items`` is empty.
        ConfigError / TokenizerError: an unknown template, or ``chat`` with a tokenizer that has no chat template.
    """
    if not items:
        raise ValueError("the eval set is empty: nothing to score")
    if tokenizer.eos_id is None:
        raise ValueError("the harness stops answers at EOS, and this tokenizer has no eos_id")
    from rouge_score import rouge_scorer

    t0 = time.perf_counter()
    prompts = [tokenizer.encode(format_prompt(i.instruction, i.input, template, tokenizer)) for i in items]
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    gens = greedy_generate(model, prompts, eos_id=tokenizer.eos_id, pad_id=pad, max_new_tokens=cfg.max_new_tokens,
                           batch_size=cfg.batch_size)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rows = [score_answer(item, tokenizer.decode(g.ids).strip(), g.ended, template, cfg, scorer)
            for item, g in zip(items, gens, strict=True)]
    return HarnessResult(rows, summarise(rows), time.perf_counter() - t0)
