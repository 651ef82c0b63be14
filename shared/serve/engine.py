"""A small inference engine: a request queue, iteration-level (continuous) batching and a paged KV cache.

Static batching runs a batch until its longest answer ends, so short answers idle and new requests wait.
Iteration-level scheduling (Orca, Yu et al. 2022, "Orca: A Distributed Serving System for Transformer-Based
Generative Models", https://www.usenix.org/conference/osdi22/presentation/yu) decides at every step: a finished
request leaves the batch and frees its KV blocks, a waiting one joins (its prompt is prefilled, then it decodes with
the others). Keys and values live in a :class:`shared.serve.paged_kv.PagedKVCache` (vLLM's PagedAttention, Kwon et al.
2023, https://arxiv.org/abs/2309.06180), so memory follows the tokens actually held.

Admission control: a request joins only when the pool can hold every running request at its longest
(prompt + ``max_new_tokens``) plus this one; blocks are still taken lazily as sequences grow, but no running request
can run out. vLLM instead admits optimistically and preempts (recomputes or swaps out) a request when the pool runs
dry: more concurrency for the same memory, more machinery.

Each step is one prefill forward per prompt length among the newly admitted requests (their whole prompts, batched
when lengths match: no padding enters the cache) and one batched decode forward over every other running request
(B = running, one token each): the model is any :class:`shared.models.gpt.GPT`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from shared.models.decode import SamplingConfig, sample_next
from shared.serve.paged_kv import PagedKVCache


@dataclass
class EngineConfig:
    """The engine's memory and batch limits."""

    num_blocks: int = 256  # KV blocks in the pool; num_blocks · block_size tokens are held at most
    block_size: int = 16  # positions per block (vLLM's default)
    max_batch: int = 32  # running requests at most (the decode batch)

    def validate(self) -> None:
        """Raises ValueError naming a value < 1."""
        for name in ("num_blocks", "block_size", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"engine.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Request:
    """One prompt and how to continue it; ``output`` fills as tokens are generated."""

    request_id: int
    prompt: list[int]
    sampling: SamplingConfig
    generator: torch.Generator | None = None
    output: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "length" (max_new_tokens) or "stop" (a stop id)


@dataclass(frozen=True)
class TokenEvent:
    """A token of one request, as the step produced it (``finish_reason`` set on the request's last token)."""

    request_id: int
    token: int
    finish_reason: str | None = None


class Engine:
    """Continuous batching over a paged KV cache for a :class:`shared.models.gpt.GPT` (see the module docstring).

    Use: :meth:`add_request` any time, :meth:`step` until :attr:`has_work` is False (each step returns the tokens it
    made), or :meth:`run` / :meth:`generate` for everything at once.

    Args:
        model: the GPT (put in eval mode; its dtype and device are the cache's).
        cfg: pool and batch sizes.

    Raises:
        ValueError: a bad ``cfg``.
    """

    def __init__(self, model: torch.nn.Module, cfg: EngineConfig | None = None) -> None:
        self.cfg = cfg or EngineConfig()
        self.cfg.validate()
        self.model = model.eval()
        mc = model.cfg
        w = model.wte.weight
        self.cache = PagedKVCache(mc.n_layer, mc.n_head, mc.n_embd // mc.n_head, self.cfg.num_blocks,
                                  self.cfg.block_size, w.dtype, w.device)
        self.device = w.device
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.finished: dict[int, Request] = {}
        self._ids = itertools.count()
        self.steps = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _blocks_at_most(self, r: Request) -> int:
        return self.cache.blocks_for(len(r.prompt) + r.sampling.max_new_tokens)

    def add_request(self, prompt: Sequence[int], sampling: SamplingConfig | None = None,
                    generator: torch.Generator | None = None) -> int:
        """Queue a prompt (token ids); returns its request id.

        Raises:
            ValueError: an empty prompt, ``max_new_tokens`` < 1, prompt + ``max_new_tokens`` longer than the
                model's block_size (no truncation: the caller shortens the prompt or the answer), or a request
                that needs more KV blocks than the whole pool.
        """
        sampling = sampling or SamplingConfig()
        sampling.validate()
        prompt = [int(t) for t in prompt]
        block_size = self.model.cfg.block_size
        if not prompt:
            raise ValueError("an empty prompt: give at least one token (e.g. the BOS id)")
        if sampling.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {sampling.max_new_tokens}")
        if len(prompt) + sampling.max_new_tokens > block_size:
            raise ValueError(f"prompt of {len(prompt)} tokens + max_new_tokens={sampling.max_new_tokens} exceeds the "
                             f"model's block_size={block_size}: shorten the prompt (keep its last "
                             f"{block_size - sampling.max_new_tokens} tokens) or ask for fewer new tokens")
        r = Request(next(self._ids), prompt, sampling, generator)
        if self._blocks_at_most(r) > self.cfg.num_blocks:
            raise ValueError(f"request needs {self._blocks_at_most(r)} KV blocks of {self.cfg.block_size} positions; "
                             f"the pool has {self.cfg.num_blocks}: raise engine.num_blocks")
        self.waiting.append(r)
        return r.request_id

    def _can_admit(self, r: Request) -> bool:
        if len(self.running) >= self.cfg.max_batch:
            return False
        owed = sum(self._blocks_at_most(x) - len(self.cache.tables[x.request_id]) for x in self.running)
        return self.cache.allocator.num_free - owed >= self._blocks_at_most(r)

    def _choose(self, requests: list[Request], logits: torch.Tensor) -> list[TokenEvent]:
        """Pick each request's next token from its last logits (B, V), record it, finish the requests that are
        done. Greedy rows without a repetition penalty take one batched argmax (one host sync per step)."""
        greedy = [r.sampling.temperature == 0 and r.sampling.repetition_penalty == 1 for r in requests]
        tokens = logits.argmax(dim=-1).tolist() if any(greedy) else [0] * len(requests)
        return [self._record(r, tokens[i] if greedy[i] else self._sample(r, logits[i]))
                for i, r in enumerate(requests)]

    @staticmethod
    def _sample(r: Request, logits: torch.Tensor) -> int:
        seen = torch.tensor([r.prompt + r.output], device=logits.device) if r.sampling.repetition_penalty != 1 \
            else None
        return int(sample_next(logits[None], r.sampling, seen, r.generator)[0])

    @staticmethod
    def _record(r: Request, token: int) -> TokenEvent:
        r.output.append(token)
        if token in r.sampling.stop_ids:
            r.finish_reason = "stop"
        elif len(r.output) >= r.sampling.max_new_tokens:
            r.finish_reason = "length"
        return TokenEvent(r.request_id, token, r.finish_reason)

    @torch.no_grad()
    def step(self) -> list[TokenEvent]:
        """One iteration: admit and prefill what fits, one decode token for every other running request, retire
        the finished ones (their blocks back to the pool). Returns the tokens made, in request order."""
        events: list[TokenEvent] = []
        decoding = list(self.running)
        admitted = []
        while self.waiting and self._can_admit(self.waiting[0]):
            r = self.waiting.popleft()
            self.cache.add_sequence(r.request_id)
            self.running.append(r)
            admitted.append(r)
        for length in dict.fromkeys(len(r.prompt) for r in admitted):  # one prefill per prompt length
            group = [r for r in admitted if len(r.prompt) == length]
            view = self.cache.batch([r.request_id for r in group], length)
            ids = torch.tensor([r.prompt for r in group], device=self.device)  # (B, T)
            logits = self.model(ids, view.attention_mask, view.position_ids, kv_cache=view)  # (B, T, V)
            events += self._choose(group, logits[:, -1])
        if decoding:
            view = self.cache.batch([r.request_id for r in decoding], 1)
            ids = torch.tensor([[r.output[-1]] for r in decoding], device=self.device)  # (B, 1)
            logits = self.model(ids, view.attention_mask, view.position_ids, kv_cache=view)  # (B, 1, V)
            events += self._choose(decoding, logits[:, -1])
        for r in [r for r in self.running if r.finish_reason]:
            self.running.remove(r)
            self.cache.free_sequence(r.request_id)
            self.finished[r.request_id] = r
        self.steps += 1
        return events

    def stream(self) -> Iterator[TokenEvent]:
        """Step until no work is left, yielding every token as it is made."""
        while self.has_work:
            yield from self.step()

    def run(self) -> dict[int, list[int]]:
        """Step until every queued request is done; ``{request_id: generated tokens}``."""
        for _ in self.stream():
            pass
        return {i: r.output for i, r in self.finished.items()}

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig | None = None) -> list[list[int]]:
        """Queue every prompt with the same sampling, run, and return the outputs in prompt order."""
        ids = [self.add_request(p, sampling) for p in prompts]
        outputs = self.run()
        return [outputs[i] for i in ids]
