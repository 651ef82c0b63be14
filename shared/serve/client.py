"""A client benchmark for any OpenAI-compatible server (vLLM, llama.cpp, the project's own): latency, TTFT and
throughput from streamed ``/v1/completions`` requests, and a greedy completion with log-probs.

    rows = benchmark("http://127.0.0.1:8000/v1", "smollm2-135m-instruct", prompts, max_tokens=32, levels=(1, 8, 32))

Per request (:class:`RequestResult`), timed on the client with ``time.perf_counter``:

- TTFT (s): from sending the request to the first streamed chunk that carries text (prefill + one decode step +
  queueing);
- latency (s): from sending to the end of the stream;
- generated tokens: the server's own count, ``usage.completion_tokens`` of the last chunk (asked for with
  ``stream_options={"include_usage": true}``); a server that sends no usage is counted by its text chunks (one
  token each, as vLLM and llama.cpp stream them) and the row says ``tokens_from="chunks"``.

Per concurrency level (:func:`summarize`), N requests are sent at once (asyncio + ``httpx.AsyncClient``): aggregate
tokens/s = all generated tokens / wall time from the first send to the last byte; p50/p95 of the latencies and
TTFTs. API: https://platform.openai.com/docs/api-reference/completions ; streaming is server-sent events
(https://html.spec.whatwg.org/multipage/server-sent-events.html), one ``data: {json}`` line per chunk, ending with
``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class RequestResult:
    """One streamed request, measured on the client.

    Attributes:
        ok: it finished with HTTP 200 and a complete stream.
        latency_s: seconds from send to the end of the stream.
        ttft_s: seconds from send to the first chunk with text (None: no text came).
        completion_tokens: generated tokens (see ``tokens_from``).
        prompt_tokens: the server's count of prompt tokens (None without ``usage``).
        tokens_from: ``"usage"`` (the server's count) or ``"chunks"`` (counted text chunks).
        text: the generated text; finish_reason: ``"length"``, ``"stop"``, ...; error: what went wrong when not ok.
    """

    ok: bool
    latency_s: float
    ttft_s: float | None = None
    completion_tokens: int = 0
    prompt_tokens: int | None = None
    tokens_from: str = "usage"
    text: str = ""
    finish_reason: str | None = None
    error: str = ""

    @property
    def tok_s(self) -> float:
        """End-to-end tokens/s of this request: generated tokens / latency (prefill included)."""
        return self.completion_tokens / self.latency_s if self.latency_s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float | None:
        """Decode tokens/s after the first token: (tokens − 1) / (latency − TTFT); None when undefined."""
        if self.ttft_s is None or self.completion_tokens < 2 or self.latency_s <= self.ttft_s:
            return None
        return (self.completion_tokens - 1) / (self.latency_s - self.ttft_s)


def parse_sse_line(line: str) -> dict[str, Any] | None:
    """The JSON event of one server-sent-event line (``data: {...}``); None for blank lines, comments (``:``),
    other fields and the final ``data: [DONE]``.

    Raises:
        ValueError: a ``data:`` line that is not JSON (the message quotes it).
    """
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a JSON event in the stream: {data[:200]!r} ({e})") from None


def parse_sse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON events of a server-sent-event stream (:func:`parse_sse_line` of each line), stopping at ``[DONE]``."""
    for line in lines:
        if line.strip() == "data: [DONE]":
            return
        if (ev := parse_sse_line(line)) is not None:
            yield ev


def completion_body(model: str, prompt: str, max_tokens: int, *, stream: bool = True, usage: bool = True,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body of a greedy ``/v1/completions`` request (temperature 0) of at most ``max_tokens`` tokens;
    ``extra`` adds engine-specific fields (vLLM: ``{"ignore_eos": true}`` to always generate ``max_tokens``)."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                            "stream": stream}
    if stream and usage:
        body["stream_options"] = {"include_usage": True}
    return {**body, **(extra or {})}


def result_from_events(events: Iterable[tuple[float, Mapping[str, Any]]], t_send: float, t_end: float
                       ) -> RequestResult:
    """Fold a stream's ``(arrival time, event)`` pairs into a :class:`RequestResult` (pure: times in seconds on
    any one clock): TTFT = arrival of the first event with text − ``t_send``; latency = ``t_end − t_send``."""
    ttft, text, chunks, usage, finish = None, [], 0, None, None
    for t, ev in events:
        for choice in ev.get("choices") or []:
            piece = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
            if piece:
                ttft = t - t_send if ttft is None else ttft
                text.append(piece)
                chunks += 1
            finish = choice.get("finish_reason") or finish
        usage = ev.get("usage") or usage
    if usage and usage.get("completion_tokens") is not None:
        n, src, prompt = int(usage["completion_tokens"]), "usage", usage.get("prompt_tokens")
    else:
        n, src, prompt = chunks, "chunks", None
    return RequestResult(True, t_end - t_send, ttft, n, prompt, src, "".join(text), finish)


async def stream_completion(client: httpx.AsyncClient, base_url: str, body: Mapping[str, Any],
                            path: str = "completions") -> RequestResult:
    """Send one streamed request (``POST {base_url}/{path}``: ``completions`` or ``chat/completions``) and measure
    it; failures come back as ``ok=False`` with the error (HTTP status and body, or the exception), never raised."""
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", f"{base_url}/{path}", json=dict(body)) as r:
            if r.status_code != 200:
                detail = (await r.aread()).decode(errors="replace")[:300]
                return RequestResult(False, time.perf_counter() - t0, error=f"HTTP {r.status_code}: {detail}")
            events = []
            async for line in r.aiter_lines():
                if (ev := parse_sse_line(line)) is not None:
                    events.append((time.perf_counter(), ev))
        return result_from_events(events, t0, time.perf_counter())
    except (httpx.HTTPError, ValueError) as e:
        return RequestResult(False, time.perf_counter() - t0, error=f"{type(e).__name__}: {e}")


async def _concurrent(base_url: str, bodies: Sequence[Mapping[str, Any]], timeout_s: float
                      ) -> tuple[list[RequestResult], float]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(stream_completion(client, base_url, b) for b in bodies))
        return list(results), time.perf_counter() - t0


def run_concurrent(base_url: str, bodies: Sequence[Mapping[str, Any]], timeout_s: float = 600.0
                   ) -> tuple[list[RequestResult], float]:
    """Send all ``bodies`` at once; their results and the wall time (s) from the first send to the last byte."""
    return asyncio.run(_concurrent(base_url, bodies, timeout_s))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics (numpy's default
    ``method="linear"``); NaN for no values.

    Raises:
        ValueError: q outside 0-100.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in 0-100, got {q}")
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(results: Sequence[RequestResult], wall_s: float, concurrency: int,
              **labels: Any) -> dict[str, Any]:
    """One benchmark row from the requests of one level (``labels`` go first: engine, model, ...).

    Columns: concurrency, requests, failed, tokens (generated, all ok requests), tokens_from (``usage`` or
    ``chunks``: where the counts came from), wall_s, agg_tok_s (tokens / wall_s), req_tok_s (mean per-request
    end-to-end tokens/s), decode_tok_s (mean per-request, after the first token), ttft_p50_s, ttft_p95_s,
    latency_p50_s, latency_p95_s, first_error. Times in seconds; NaN where nothing was measured.
    """
    ok = [r for r in results if r.ok]
    lat = [r.latency_s for r in ok]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    dec = [d for r in ok if (d := r.decode_tok_s) is not None]
    tokens = sum(r.completion_tokens for r in ok)
    sources = sorted({r.tokens_from for r in ok})
    return {
        **labels,
        "concurrency": concurrency,
        "requests": len(results),
        "failed": len(results) - len(ok),
        "tokens": tokens,
        "tokens_from": "+".join(sources) or "none",
        "wall_s": wall_s,
        "agg_tok_s": tokens / wall_s if wall_s > 0 and ok else math.nan,
        "req_tok_s": sum(r.tok_s for r in ok) / len(ok) if ok else math.nan,
        "decode_tok_s": sum(dec) / len(dec) if dec else math.nan,
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p95_s": percentile(ttft, 95),
        "latency_p50_s": percentile(lat, 50),
        "latency_p95_s": percentile(lat, 95),
        "first_error": next((r.error for r in results if not r.ok), ""),
    }


def benchmark(base_url: str, model: str, prompts: Sequence[str], max_tokens: int, levels: Sequence[int] = (1, 8, 32),
              *, single_requests: int = 3, warmup: bool = True, extra: Mapping[str, Any] | None = None,
              timeout_s: float = 600.0, **labels: Any) -> list[dict[str, Any]]:
    """One :func:`summarize` row per level: level 1 sends ``single_requests`` requests one after another (the
    single-request TTFT and tokens/s), a level N > 1 sends N requests at once (prompts reused in turn).

    ``warmup`` first sends one unmeasured request (an engine's first request pays one-off costs).
    """
    if not prompts:
        raise ValueError("benchmark needs at least one prompt")

    def bodies(n: int, start: int = 0) -> list[dict[str, Any]]:
        return [completion_body(model, prompts[(start + i) % len(prompts)], max_tokens, extra=extra) for i in range(n)]

    if warmup:
        run_concurrent(base_url, bodies(1), timeout_s)
    rows = []
    for level in levels:
        if level == 1:
            results, wall = [], 0.0
            for i in range(single_requests):
                res, w = run_concurrent(base_url, bodies(1, i), timeout_s)
                results += res
                wall += w
        else:
            results, wall = run_concurrent(base_url, bodies(level), timeout_s)
        rows.append(summarize(results, wall, level, **labels))
    return rows


@dataclass
class GreedyResult:
    """A greedy (temperature 0) completion with the log-probability of each generated token.

    Attributes:
        tokens: the generated tokens as the server names them (vLLM with ``return_tokens_as_token_ids``:
            ``"token_id:1234"``; llama.cpp: the token's text).
        token_ids: the ids when the server gave them, else None.
        logprobs: natural-log probability of each generated token (the engine's own).
        top_logprobs: per position, the server's top alternatives {token: logprob}.
    """

    text: str
    tokens: list[str]
    logprobs: list[float]
    token_ids: list[int] | None = None
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    prompt_tokens: int | None = None
    finish_reason: str | None = None


def parse_logprobs_choice(choice: Mapping[str, Any], usage: Mapping[str, Any] | None = None) -> GreedyResult:
    """A :class:`GreedyResult` from one ``choices[0]`` of a non-streamed ``/v1/completions`` answer with
    ``logprobs`` (OpenAI's legacy format: ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``).

    Raises:
        ValueError: the choice has no log-probs (the server ignored the ``logprobs`` field).
    """
    lp = choice.get("logprobs")
    if not lp or lp.get("token_logprobs") is None:
        raise ValueError("the server returned no logprobs (llama.cpp needs --logits_all true; vLLM --max-logprobs)")
    tokens = list(lp["tokens"])
    ids = None
    if tokens and all(t.startswith("token_id:") for t in tokens):
        ids = [int(t.removeprefix("token_id:")) for t in tokens]
    return GreedyResult(text=choice.get("text", ""), tokens=tokens,
                        logprobs=[float(x) for x in lp["token_logprobs"]], token_ids=ids,
                        top_logprobs=[dict(t or {}) for t in (lp.get("top_logprobs") or [])],
                        prompt_tokens=(usage or {}).get("prompt_tokens"), finish_reason=choice.get("finish_reason"))


def greedy_completion(base_url: str, model: str, prompt: str, max_tokens: int = 32, top_logprobs: int = 2,
                      extra: Mapping[str, Any] | None = None, timeout_s: float = 300.0) -> GreedyResult:
    """One greedy, non-streamed ``/v1/completions`` request asking for ``logprobs=top_logprobs``.

    Raises:
        httpx.HTTPStatusError: a non-200 answer. ValueError: no log-probs in the answer.
    """
    body = {**completion_body(model, prompt, max_tokens, stream=False), "logprobs": top_logprobs, **(extra or {})}
    r = httpx.post(f"{base_url}/completions", json=body, timeout=timeout_s)
    r.raise_for_status()
    data = r.json()
    return parse_logprobs_choice(data["choices"][0], data.get("usage"))
