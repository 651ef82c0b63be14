"""The chat page's server: one static page and one streaming endpoint, over a local model or an upstream server.

``GET /`` serves ``static/index.html``; ``GET /api/info`` names the backend; ``POST /api/chat`` takes
``{"messages": [{"role", "content"}, ...], "max_tokens", "temperature"}`` and answers with server-sent events
(https://html.spec.whatwg.org/multipage/server-sent-events.html): ``data: {"text": "..."}`` for each piece of the
answer as soon as it is final, then ``event: done`` with ``{"tokens", "seconds", "ttft_s", "tokens_per_s",
"finish_reason"}`` (or ``event: error`` with ``{"message"}`` when the stream breaks). A malformed body is a 422
(FastAPI's validation, the field named), a conversation the backend refuses (last turn not the user's, prompt too
long) a 400, an unreachable upstream a 502, all with a message.

Backends turn messages into :class:`Piece` s:

- :class:`LocalBackend`: a model loaded in this process (a registry name such as ``smollm2-135m-instruct``, a
  Hugging Face folder such as ``models/week07/sft-v1``, or a project checkpoint), its chat template applied, its
  tokens from the project's decoder (:func:`shared.models.decode.stream`) turned into text by
  :func:`shared.models.text_stream.stream_text`. A Hugging Face model goes through :class:`HFDecodeModel`, which
  gives it the interface ``stream`` calls and keeps its own ``DynamicCache`` as the KV cache.
- :class:`OpenAIBackend`: a proxy to an OpenAI-compatible server (vLLM from ``make serve``, llama.cpp's server),
  ``POST {base_url}/chat/completions`` with ``"stream": true``, its SSE read with ``httpx``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, Protocol

import torch
from fastapi import FastAPI, HTTPException
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from torch import nn

from shared.data.tokenizer import Tokenizer
from shared.models.decode import SamplingConfig
from shared.models.text_stream import stream_text

STATIC = Path(__file__).parent / "static"
PLAIN_STOPS = ("\n\nUser:", "\n\nSystem:")  # where a model with the plain "Role: text" template starts a new turn
# the page loads nothing from elsewhere and talks only to this server
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'"


class ChatError(ValueError):
    """The backend refuses this conversation (HTTP 400)."""


class UpstreamError(RuntimeError):
    """The upstream server is unreachable or failed (HTTP 502)."""


@dataclass
class Piece:
    """A piece of the answer: its text and how many new tokens it accounts for (the last piece of a stream carries
    ``finish_reason``: ``"stop"`` or ``"length"``)."""

    text: str
    tokens: int = 0
    finish_reason: str | None = None


class ChatBackend(Protocol):
    """Where answers come from. ``open`` checks the request now (raising :class:`ChatError` /
    :class:`UpstreamError` before any byte is sent) and returns the answer's pieces as a lazy iterator."""

    name: str
    kind: str

    def open(self, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> Iterator[Piece]: ...


class HFDecodeModel(nn.Module):
    """A Hugging Face ``*ForCausalLM`` behind what :func:`shared.models.decode.stream` calls: ``cfg.block_size``,
    ``new_kv_cache(batch, max_len)`` and ``forward(ids, mask, positions, kv_cache) -> logits``.

    The "cache" is a holder for ``transformers``' own ``DynamicCache`` (``past_key_values``), filled by the
    prefill and extended by each decode step, so the project's sampler and loop drive the library's attention
    and cache. ``kv_cache=None`` reruns the whole sequence (``use_cache=False``), as the project's GPT does.
    """

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model
        cfg = hf_model.config
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2**20
        self.cfg = SimpleNamespace(block_size=int(limit))

    def new_kv_cache(self, batch: int, max_len: int | None = None) -> SimpleNamespace:
        return SimpleNamespace(past=None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, kv_cache: SimpleNamespace | None = None) -> torch.Tensor:
        """(B, T) new ids (mask (B, past + T), positions (B, T)) -> (B, T, V) logits."""
        if position_ids is not None and position_ids.dim() == 1:
            position_ids = position_ids[None].expand(input_ids.shape[0], -1)
        if kv_cache is None:
            return self.hf(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False).logits
        out = self.hf(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      past_key_values=kv_cache.past, use_cache=True)
        kv_cache.past = out.past_key_values
        return out.logits


def decodable(model: nn.Module) -> nn.Module:
    """``model`` as :func:`shared.models.decode.stream` needs it: the project's GPT as it is, a Hugging Face model
    (bare or inside :class:`shared.models.causal_lm.HFCausalLM`) behind :class:`HFDecodeModel`."""
    if hasattr(model, "new_kv_cache"):
        return model
    return HFDecodeModel(getattr(model, "hf", model))


class LocalBackend:
    """A model in this process. ``LocalBackend("smollm2-135m-instruct")``, ``LocalBackend("models/week07/sft-v1")``
    or a checkpoint folder (:func:`shared.models.loading.load_any_lm`); :meth:`from_model` takes loaded objects.

    A tokenizer with a chat template (ChatML for SmolLM2) ends the answer at its EOS id; one with the plain
    ``Role: text`` template also at the start of a new turn (:data:`PLAIN_STOPS`).
    """

    kind = "local"

    def __init__(self, spec: str | Path, device: str = "cpu") -> None:
        from shared.models.loading import load_any_lm

        lm = load_any_lm(spec, device)
        self._setup(lm.model, lm.tokenizer, lm.name, device)

    @classmethod
    def from_model(cls, model: nn.Module, tokenizer: Tokenizer, name: str, device: str = "cpu") -> LocalBackend:
        self = cls.__new__(cls)
        self._setup(model, tokenizer, name, device)
        return self

    def _setup(self, model: nn.Module, tokenizer: Tokenizer, name: str, device: str) -> None:
        self.model = decodable(model).eval()
        self.tokenizer, self.name, self.device = tokenizer, name, torch.device(device)
        self.stop_ids = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
        has_template = bool(getattr(getattr(tokenizer, "hf", None), "chat_template", None))
        self.stop_strings = () if has_template else PLAIN_STOPS

    def prompt_ids(self, messages: list[dict[str, str]]) -> torch.Tensor:
        """The conversation through the chat template, the assistant's turn opened: (1, T) ids."""
        try:  # no chat template, a message it cannot format, a character outside a char vocabulary
            ids = self.tokenizer.encode(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        except ValueError as e:
            raise ChatError(str(e)) from e
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def open(self, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> Iterator[Piece]:
        ids = self.prompt_ids(messages)
        limit = self.model.cfg.block_size
        if ids.shape[1] + max_tokens > limit:
            raise ChatError(f"the conversation is {ids.shape[1]} tokens; with max_tokens={max_tokens} it passes "
                            f"the model's context of {limit}: start a new chat or lower max_tokens")
        cfg = SamplingConfig(max_new_tokens=max_tokens, temperature=temperature, stop_ids=self.stop_ids)
        return self._pieces(ids, cfg)

    def _pieces(self, ids: torch.Tensor, cfg: SamplingConfig) -> Iterator[Piece]:
        tokens: list[int] = []
        counted = 0
        for text in stream_text(self.model, self.tokenizer.decode, ids, cfg, self.stop_strings, tokens_out=tokens):
            yield Piece(text, len(tokens) - counted)
            counted = len(tokens)
        ended = len(tokens) < cfg.max_new_tokens or (tokens and tokens[-1] in cfg.stop_ids)
        yield Piece("", len(tokens) - counted, "stop" if ended else "length")


class OpenAIBackend:
    """A proxy to an OpenAI-compatible server: ``OpenAIBackend("http://127.0.0.1:8000/v1")``.

    Args:
        base_url: the API root (ending in ``/v1``).
        model: the served model's name (default: the first of ``GET {base_url}/models``).
        client: an ``httpx.Client`` (tests pass one over ``httpx.MockTransport``).
    """

    kind = "openai"

    def __init__(self, base_url: str, model: str | None = None, client: Any = None, timeout_s: float = 120.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=httpx.Timeout(timeout_s, connect=5.0))
        self._model = model
        self.name = model or self.base_url

    def model(self) -> str:
        """The model name to send (asked of the server once when not given)."""
        if self._model is None:
            data = self._call("GET", "/models").json().get("data") or []
            if not data:
                raise UpstreamError(f"{self.base_url}/models lists no model: pass the served model's name")
            self._model = self.name = data[0]["id"]
        return self._model

    def _call(self, method: str, path: str, stream: bool = False, **kw: Any) -> Any:
        import httpx

        url = self.base_url + path
        try:
            resp = self.client.send(self.client.build_request(method, url, **kw), stream=stream)
        except httpx.HTTPError as e:
            raise UpstreamError(f"{url} cannot be reached ({type(e).__name__}: {e}); is the server up "
                                "(`make serve`)?") from e
        if resp.status_code != 200:
            body = resp.read().decode(errors="replace")[:500]
            resp.close()
            err = ChatError if 400 <= resp.status_code < 500 else UpstreamError
            raise err(f"{url} answered {resp.status_code}: {body}")
        return resp

    def open(self, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> Iterator[Piece]:
        body = {"model": self.model(), "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "stream": True, "stream_options": {"include_usage": True}}
        return self._pieces(self._call("POST", "/chat/completions", stream=True, json=body))

    @staticmethod
    def _pieces(resp: Any) -> Iterator[Piece]:
        """Each content delta is counted as one token until the final ``usage`` chunk gives the true count."""
        counted, usage, finish = 0, None, None
        try:
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage = chunk["usage"].get("completion_tokens")
                for choice in chunk.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    if text := (choice.get("delta") or {}).get("content"):
                        counted += 1
                        yield Piece(text, 1)
        finally:
            resp.close()
        yield Piece("", (usage - counted) if usage is not None else 0, finish or "stop")


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=32_000)


class ChatRequest(BaseModel):
    messages: list[Message] = Field(min_length=1, max_length=200)
    max_tokens: int = Field(256, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # 0 = greedy


def sse(data: dict[str, Any], event: str | None = None) -> str:
    """One server-sent event: an optional ``event:`` line, one ``data:`` line of JSON, a blank line."""
    return (f"event: {event}\n" if event else "") + f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def sse_events(pieces: Iterator[Piece], started: float) -> Iterator[str]:
    """The answer's pieces as events: text chunks, then ``done`` with the token count and speed (or ``error``)."""
    tokens, first, finish = 0, None, None
    try:
        for piece in pieces:
            tokens += piece.tokens
            finish = piece.finish_reason or finish
            if piece.text:
                first = first or time.perf_counter()
                yield sse({"text": piece.text})
    except Exception as e:  # noqa: BLE001 - the status line is already sent: report the failure in the stream
        yield sse({"message": f"{type(e).__name__}: {e}"}, event="error")
        return
    finally:
        if hasattr(pieces, "close"):
            pieces.close()  # a client that left: the decoding loop ends now, not at garbage collection
    seconds = time.perf_counter() - started
    yield sse({"tokens": tokens, "seconds": round(seconds, 3),
               "ttft_s": None if first is None else round(first - started, 3),
               "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else None,
               "finish_reason": finish or "stop"}, event="done")


def create_app(backend: ChatBackend) -> FastAPI:
    """The chat app over ``backend`` (serve it with ``uvicorn.run(app, host="127.0.0.1", port=...)``)."""
    app = FastAPI(title="AI from Scratch chat", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"),
                            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # no icon, and no 404 in the browser's console

    @app.get("/api/info")
    def info() -> dict[str, str]:
        return {"backend": backend.kind, "model": backend.name}

    @app.post("/api/chat")
    async def chat(req: ChatRequest) -> StreamingResponse:
        if req.messages[-1].role != "user":
            raise HTTPException(400, f"the last message must be the user's, got a '{req.messages[-1].role}' one")
        started = time.perf_counter()
        messages = [m.model_dump() for m in req.messages]
        try:
            pieces = await run_in_threadpool(backend.open, messages, req.max_tokens, req.temperature)
        except ChatError as e:
            raise HTTPException(400, str(e)) from e
        except UpstreamError as e:
            raise HTTPException(502, str(e)) from e
        events = sse_events(pieces, started)

        async def body() -> AsyncIterator[str]:
            try:  # each step of the decoding loop runs in the thread pool: it never blocks the event loop
                async for event in iterate_in_threadpool(events):
                    yield event
            finally:  # the stream ended, or the client left (the pending step has returned by now)
                events.close()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app
