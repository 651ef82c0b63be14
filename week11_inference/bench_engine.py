"""The engine benchmark: aggregate tokens/s of the project's engine (continuous batching, paged KV cache) at 1, 8 and
32 concurrent requests, beside static batching with the contiguous cache (``shared.models.decode.generate``) and
Hugging Face ``generate`` on the same weights (``shared.models.hf.to_hf``), same prompts, same lengths, greedy.

At each concurrency n, n batch slots serve a queue of ``requests_per_slot · n`` requests. Two workloads: every
request asks for ``new_tokens`` tokens (``equal``: static batching, in waves of n, wastes nothing), or the answer
lengths spread from ``new_tokens / 8`` to ``new_tokens`` (``mixed``: a static wave keeps decoding finished rows until
its longest answer ends; the engine retires each request at its own end and gives its slot to the next in the
queue).
No stop id, so every system makes the same tokens; a row's ``same_as_alone`` counts the requests whose tokens equal
decoding that prompt alone (batching must not change them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from shared.config import at_least
from shared.models.decode import SamplingConfig, generate, left_pad
from shared.models.gpt import GPT
from shared.serve.engine import Engine, EngineConfig


@dataclass
class EngineBenchConfig:
    """Sizes of the engine benchmark."""

    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])  # requests submitted at once
    prompt_tokens: int = at_least(1, 32)  # every prompt this long (cut from the val tokens)
    new_tokens: int = at_least(1, 64)  # every request generates exactly this many
    block_size: int = at_least(1, 16)  # KV block of the engine (positions)
    hf: bool = True  # also time Hugging Face generate on the same weights
    requests_per_slot: int = at_least(1, 4)  # requests queued per batch slot: n concurrent slots serve this × n
    workloads: list[str] = field(default_factory=lambda: ["equal", "mixed"])  # answer lengths: all new_tokens, or
    #                                                                             spread from new_tokens/8 to new_tokens


def _prompts(tokens: torch.Tensor, n: int, length: int) -> list[list[int]]:
    """``n`` prompts of ``length`` tokens from evenly spaced offsets of ``tokens`` (1-D)."""
    stride = max(1, (len(tokens) - length) // max(n, 1))
    return [tokens[i * stride: i * stride + length].tolist() for i in range(n)]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def answer_lengths(n: int, new_tokens: int, workload: str) -> list[int]:
    """Each request's answer length: all ``new_tokens`` (``equal``), or spread evenly from ``new_tokens / 8`` to
    ``new_tokens`` in a seeded shuffled order (``mixed``: what a server sees, where answers end at different times).

    Raises:
        ValueError: an unknown workload.
    """
    if workload == "equal":
        return [new_tokens] * n
    if workload != "mixed":
        raise ValueError(f"engine.workloads: unknown workload '{workload}'. Choose one of: equal, mixed")
    lo = max(1, new_tokens // 8)
    lengths = [round(lo + (new_tokens - lo) * i / max(n - 1, 1)) for i in range(n)]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    return [lengths[i] for i in order]


def bench_engine(model: GPT, tokens: torch.Tensor, cfg: EngineBenchConfig, label: str) -> list[dict]:
    """Rows ``{model, workload, concurrency, requests, prompt_tokens, new_tokens, useful_tokens, system, seconds,
    tokens_per_sec, same_as_alone}`` per workload, concurrency level and system (``engine``, ``static_batch``,
    ``hf_generate``). ``tokens_per_sec`` counts the tokens the requests asked for (``useful_tokens``): a static
    wave decodes every row until its longest answer is done and throws the surplus away. Engine rows add
    ``engine_steps`` and ``leaked_blocks`` (blocks not back in the pool after every request finished).

    Args:
        model: the GPT (eval mode).
        tokens: 1-D token ids the prompts are cut from.
        label: the model's name in the rows.

    Raises:
        ValueError: prompt_tokens + new_tokens > the model's block_size, or an unknown workload.
    """
    if cfg.prompt_tokens + cfg.new_tokens > model.cfg.block_size:
        raise ValueError(f"bench.engine: prompt_tokens={cfg.prompt_tokens} + new_tokens={cfg.new_tokens} exceeds "
                         f"the model's block_size={model.cfg.block_size}")
    model.eval()
    hf = None
    if cfg.hf:
        from shared.models.hf import to_hf

        hf = to_hf(model).eval()
    rows = []
    for workload in cfg.workloads:
        for n in cfg.concurrency:
            rows += _level(model, hf, tokens, cfg, label, workload, n)
    return rows


def _level(model: GPT, hf: torch.nn.Module | None, tokens: torch.Tensor, cfg: EngineBenchConfig, label: str,
           workload: str, n: int) -> list[dict]:
    """``n`` slots serving ``requests_per_slot · n`` queued requests: the engine keeps ``n`` running and admits the
    next as soon as one ends; static batching serves them in waves of ``n``, each as long as its longest answer."""
    total = n * cfg.requests_per_slot
    prompts = _prompts(tokens, total, cfg.prompt_tokens)
    lengths = answer_lengths(total, cfg.new_tokens, workload)
    alone = [generate(model, torch.tensor([p]), SamplingConfig(max_new_tokens=k))[0, len(p):].tolist()
             for p, k in zip(prompts, lengths, strict=True)]
    blocks = n * -(-(cfg.prompt_tokens + cfg.new_tokens) // cfg.block_size)
    engine = Engine(model, EngineConfig(num_blocks=blocks, block_size=cfg.block_size, max_batch=n))

    def run_engine() -> list[list[int]]:
        ids = [engine.add_request(p, SamplingConfig(max_new_tokens=k)) for p, k in zip(prompts, lengths, strict=True)]
        done = engine.run()
        return [done[i] for i in ids]

    def waves(decode) -> list[list[int]]:
        outs: list[list[int]] = []
        for i in range(0, total, n):
            ids, mask = left_pad(prompts[i:i + n], 0)
            with torch.no_grad():
                out = decode(ids, mask, max(lengths[i:i + n]))
            outs += _cut(out[:, ids.shape[1]:], lengths[i:i + n])
        return outs

    outs, dt = _timed(run_engine)
    base = {"model": label, "workload": workload, "concurrency": n, "requests": total,
            "prompt_tokens": cfg.prompt_tokens, "new_tokens": cfg.new_tokens, "useful_tokens": sum(lengths)}
    rows = [{**_row(base, "engine", dt, outs, alone), "engine_steps": engine.steps,
             "leaked_blocks": blocks - engine.cache.allocator.num_free}]
    outs, dt = _timed(lambda: waves(lambda ids, mask, k: generate(model, ids, SamplingConfig(max_new_tokens=k), mask)))
    rows.append(_row(base, "static_batch", dt, outs, alone))
    if hf is not None:
        outs, dt = _timed(lambda: waves(lambda ids, mask, k: hf.generate(
            ids, attention_mask=mask, max_new_tokens=k, min_new_tokens=k, do_sample=False, pad_token_id=0)))
        rows.append(_row(base, "hf_generate", dt, outs, alone))
    return rows


def _cut(out: torch.Tensor, lengths: list[int]) -> list[list[int]]:
    """Each row's first ``lengths[i]`` tokens: the answer it asked for, the rest of its static-batch row discarded."""
    return [row[:k] for row, k in zip(out.tolist(), lengths, strict=True)]


def _row(base: dict, system: str, seconds: float, outs: list[list[int]], alone: list[list[int]]) -> dict:
    return {**base, "system": system, "seconds": round(seconds, 4),
            "tokens_per_sec": round(base["useful_tokens"] / seconds, 2),
            "same_as_alone": sum(o == a for o, a in zip(outs, alone, strict=True))}
