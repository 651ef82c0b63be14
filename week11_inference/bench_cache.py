"""The KV cache measured: tokens/s, time to first token and per-token latency with and without the cache.

Two models: the project's GPT at the GPT-2-small shape (12 layers × 768 wide × 12 heads, block 1024, vocab 50257:
124M parameters; random weights, speed does not depend on them) decoded by :func:`shared.models.decode.stream`, and
SmolLM2-135M through ``transformers``' ``generate(use_cache=True/False, do_sample=False)``. Greedy decoding, so the
two modes must produce the same tokens: each row carries a hash of its tokens and whether they equal the other mode's.

**What is timed** (``time.perf_counter``, after a warm-up run of a few tokens for the same batch and mode):

- ``ttft_s``, time to first token: from the call to the first new token on the host. For the GPT, the first item
  :func:`~shared.models.decode.stream` yields (prefill + the first argmax). For ``transformers``, a streamer's
  ``put``: ``generate`` puts the prompt once before any forward, then each step's new tokens; TTFT is the time of
  the second ``put`` (``generate``'s own set-up included, as a user sees it).
- ``per_token_ms``: the time after the first token divided by the tokens after it (the decode latency of one step,
  for the whole batch).
- ``tokens_per_sec``: ``batch · new_tokens / total`` (prefill included).

**Which cells run.** Without a cache, step i re-runs all P + i tokens, so the time grows with n² (each of the
GPT's full forwards also computes the LM head at every position): at 1,024 new tokens on 2 CPU cores it is most of
an hour for the 124M shape. Before the grid, a calibration times a full forward at two lengths (fit
``a + c·B·L``) and a cached step per batch; every cell's time is estimated from them, and a cell is skipped, with the
estimate and the reason in its row, when the estimate exceeds ``max_cell_s`` or would take the grid past
``budget_s`` (cheapest cells first). ``force_cells`` run whatever their estimate. New-token counts past the context
(prompt + new > block_size) run with ``block_size - prompt_len`` new tokens (``new_tokens_run``).

**Cache memory** (:func:`cache_memory_rows`): the bytes of the allocated :class:`shared.nn.kv_cache.KVCache`
(``nbytes``) and of ``transformers``' returned ``past_key_values`` (the sum of every layer's key and value
tensors), each beside the formula ``2 · n_layer · B · T · d_kv · bytes`` with d_kv = n_embd for the GPT (all heads
keep K and V) and n_kv_heads · head_dim for SmolLM2 (grouped-query attention: 3 KV heads for 9 query heads, a third
of ``2 · n_layer · B · T · n_embd · bytes``).
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared.models.decode import SamplingConfig, stream
from shared.models.gpt import GPT, GPTConfig
from shared.tracking import console

FIELDS = ("model", "device", "dtype", "threads", "attn_backend", "batch", "prompt_len", "new_tokens", "new_tokens_run",
          "use_cache", "status", "reason", "est_s", "total_s", "ttft_s", "per_token_ms", "tokens_per_sec",
          "tokens_sha", "tokens_equal", "cache_bytes", "cache_formula_bytes")
MEMORY_FIELDS = ("model", "kind", "batch", "seq_len", "dtype", "measured_bytes", "formula_bytes", "formula", "equal")


@dataclass
class CacheBenchConfig:
    """The model shape (GPT-2 small by default, random weights), the grid, and the time caps that choose its cells."""

    name: str = "gpt2-124m-shape"  # the model column of the rows
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50257
    attn_backend: str = "torch"  # the GPT's attention: "torch" (SDPA) or "manual"
    new_tokens: tuple[int, ...] = (128, 512, 1024)
    batches: tuple[int, ...] = (1, 8)
    prompt_len: int = 16  # random prompt tokens per row
    repeats: int = 1  # timed runs per cell (medians reported)
    warmup_tokens: int = 4  # one untimed run of this many tokens per (batch, mode) first
    threads: int = 0  # torch.set_num_threads (0: leave torch's default)
    max_cell_s: float = 120.0  # skip a cell whose estimated time exceeds this
    budget_s: float = 600.0  # skip cells (most expensive first) once the grid's estimated total would exceed this
    force_cells: tuple[tuple[int, int, bool], ...] = ()  # (batch, new_tokens, use_cache) run whatever the estimate
    calib_len: int = 256  # the longer calibration forward's length
    device: str = "cpu"
    seed: int = 0

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(vocab_size=self.vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, attn_backend=self.attn_backend)


def build_gpt(cfg: CacheBenchConfig) -> GPT:
    """The benchmark GPT: ``cfg``'s shape, seeded random weights, eval mode, on ``cfg.device``."""
    torch.manual_seed(cfg.seed)
    return GPT(cfg.gpt_config()).to(cfg.device).eval()


def tokens_sha(tokens: torch.Tensor) -> str:
    """A short hash of a (B, n) token tensor (equal hashes: the same tokens)."""
    return hashlib.sha1(tokens.cpu().to(torch.int64).numpy().tobytes()).hexdigest()[:12]


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _prompts(cfg: CacheBenchConfig, batch: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(cfg.seed + batch)
    return torch.randint(0, vocab, (batch, cfg.prompt_len), generator=g).to(cfg.device)


@dataclass
class Costs:
    """Calibrated costs: a full forward of B·L tokens takes ``a + c·B·L`` s; a cached step at batch B ``step[B]`` s."""

    a: float
    c: float
    step: dict[int, float]

    def estimate(self, batch: int, prompt: int, n: int, use_cache: bool) -> float:
        """Seconds to decode n tokens after a prompt of ``prompt`` tokens (one run)."""
        if use_cache:
            return self.a + self.c * batch * prompt + max(n - 1, 0) * self.step[batch]
        return n * self.a + self.c * batch * (n * prompt + n * (n - 1) / 2)  # sum over L = prompt .. prompt + n - 1


def _time(fn: Callable[[], Any], device: torch.device | str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def calibrate(full: Callable[[torch.Tensor], Any], prefill_and_step: Callable[[torch.Tensor], Callable[[], Any]],
              cfg: CacheBenchConfig, vocab: int, long_len: int) -> Costs:
    """Fit :class:`Costs` from a full forward of (1, prompt_len) and (1, long_len) tokens (after one warm-up) and one
    timed cached step per batch (``prefill_and_step(ids)`` prefills and returns the step to time)."""
    short = _prompts(cfg, 1, vocab)
    longer = torch.randint(0, vocab, (1, long_len), generator=torch.Generator().manual_seed(cfg.seed)).to(cfg.device)
    with torch.no_grad():
        full(short)
        t_s = min(_time(lambda: full(short), cfg.device) for _ in range(2))
        t_l = _time(lambda: full(longer), cfg.device)
        c = max((t_l - t_s) / max(long_len - cfg.prompt_len, 1), 1e-9)
        a = max(t_s - c * cfg.prompt_len, 0.0)
        step = {}
        for b in cfg.batches:
            one = prefill_and_step(_prompts(cfg, b, vocab))
            one()
            step[b] = min(_time(one, cfg.device) for _ in range(2))
    return Costs(a, c, step)


def plan(cells: Iterable[tuple[int, int, int, bool]], costs: Costs, cfg: CacheBenchConfig) -> dict[tuple, tuple]:
    """``{(batch, n_requested, use_cache): (est_s, skip_reason or "")}`` for cells ``(batch, n_req, n_run,
    use_cache)``: skip above ``max_cell_s``, then the most expensive while the total (× repeats) passes ``budget_s``;
    ``force_cells`` always run, on top of the budget."""
    est = {(b, n, uc): costs.estimate(b, cfg.prompt_len, n_run, uc) * cfg.repeats for b, n, n_run, uc in cells}
    forced = {tuple(c) for c in cfg.force_cells}  # a YAML config gives lists
    out = {}
    for key, s in est.items():
        over = s > cfg.max_cell_s and key not in forced
        out[key] = (s, f"estimated {s:.0f} s > max_cell_s={cfg.max_cell_s:.0f} s" if over else "")
    total = sum(s for key, (s, why) in out.items() if not why and key not in forced)  # forced cells come on top
    for key in sorted(out, key=lambda k: -out[k][0]):
        if total <= cfg.budget_s:
            break
        s, why = out[key]
        if not why and key not in forced:
            out[key] = (s, f"estimated {s:.0f} s would take the grid past budget_s={cfg.budget_s:.0f} s")
            total -= s
    return out


def _summary(runs: list[tuple[torch.Tensor, float, float]], batch: int, n: int) -> dict[str, Any]:
    """Median timings of repeated runs ``(tokens, ttft_s, total_s)``."""
    ttft = statistics.median(r[1] for r in runs)
    total = statistics.median(r[2] for r in runs)
    return {"ttft_s": ttft, "total_s": total, "per_token_ms": (total - ttft) / max(n - 1, 1) * 1e3,
            "tokens_per_sec": batch * n / total, "tokens_sha": tokens_sha(runs[0][0])}


def _gpt_run(model: GPT, ids: torch.Tensor, n: int, use_cache: bool) -> tuple[torch.Tensor, float, float]:
    """Greedy-decode n tokens; (tokens (B, n), ttft_s, total_s)."""
    out, ttft = [], 0.0
    _sync(ids.device)
    t0 = time.perf_counter()
    for tok in stream(model, ids, SamplingConfig(max_new_tokens=n, temperature=0.0), use_cache=use_cache):
        out.append(tok)
        if len(out) == 1:
            _sync(ids.device)
            ttft = time.perf_counter() - t0
    _sync(ids.device)
    return torch.stack(out, 1), ttft, time.perf_counter() - t0


def _grid(cfg: CacheBenchConfig, block_size: int) -> list[tuple[int, int, int, bool]]:
    return [(b, n, min(n, block_size - cfg.prompt_len), uc) for b in cfg.batches for n in cfg.new_tokens
            for uc in (True, False)]


def _run_grid(cfg: CacheBenchConfig, base: dict[str, Any], cells: list[tuple[int, int, int, bool]],
              decided: dict[tuple, tuple], run: Callable[[int, int, bool], tuple[dict[str, Any], torch.Tensor]],
              warm: Callable[[int, bool], None]) -> list[dict[str, Any]]:
    rows, tokens, warmed = [], {}, set()
    for b, n, n_run, uc in cells:
        est, why = decided[(b, n, uc)]
        row = {**base, "batch": b, "prompt_len": cfg.prompt_len, "new_tokens": n, "new_tokens_run": n_run,
               "use_cache": uc, "status": "skip" if why else "ok", "est_s": round(est, 2),
               "reason": why or (f"capped at block_size - prompt_len = {n_run}" if n_run < n else ""),
               **dict.fromkeys(("total_s", "ttft_s", "per_token_ms", "tokens_per_sec", "tokens_sha", "tokens_equal",
                                "cache_bytes", "cache_formula_bytes"))}
        rows.append(row)
        if why:
            continue
        if (b, uc) not in warmed:
            warm(b, uc)
            warmed.add((b, uc))
        console(f"cache bench: {base['model']} B={b} {n_run} new tokens {'with' if uc else 'without'} the cache "
                f"(estimated {est:.0f} s)")
        extra, toks = run(b, n_run, uc)
        row.update(extra)
        tokens[(b, n, uc)] = toks
    for row in rows:  # equality with the other mode's tokens, where both ran
        mine, other = (tokens.get((row["batch"], row["new_tokens"], uc)) for uc in (row["use_cache"], not row["use_cache"]))
        if mine is not None and other is not None:
            row["tokens_equal"] = bool(torch.equal(mine, other))
    return rows


def bench_gpt(model: GPT, cfg: CacheBenchConfig) -> list[dict[str, Any]]:
    """Time :func:`shared.models.decode.stream` with and without the cache over ``cfg``'s grid.

    Returns:
        one row per (batch, new_tokens, use_cache), fields :data:`FIELDS`; a skipped cell has ``status='skip'``,
        its estimate (``est_s``) and the reason. ``cache_bytes`` is the cache ``stream`` allocates
        (``model.new_kv_cache(B, prompt + n).nbytes``).
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model.eval()
    mc = model.cfg
    dev = model.wte.weight.device
    vocab = mc.vocab_size

    def prefill_and_step(ids: torch.Tensor) -> Callable[[], Any]:
        cache = model.new_kv_cache(ids.shape[0], cfg.prompt_len + 8)
        model(ids, kv_cache=cache)
        nxt = ids[:, -1:]

        def step() -> Any:
            out = model(nxt, kv_cache=cache)
            cache.length -= 1  # the same position again: the step is timed twice at the same length
            return out

        return step

    costs = calibrate(lambda ids: model(ids), prefill_and_step, cfg, vocab, min(cfg.calib_len, mc.block_size))
    cells = _grid(cfg, mc.block_size)
    decided = plan(cells, costs, cfg)
    base = {"model": cfg.name, "device": dev.type, "dtype": str(model.wte.weight.dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "attn_backend": mc.attn_backend}

    def warm(b: int, uc: bool) -> None:
        _gpt_run(model, _prompts(cfg, b, vocab), cfg.warmup_tokens, uc)

    def run(b: int, n: int, uc: bool) -> tuple[dict[str, Any], torch.Tensor]:
        ids = _prompts(cfg, b, vocab)
        runs = [_gpt_run(model, ids, n, uc) for _ in range(cfg.repeats)]
        extra = _summary(runs, b, n)
        if uc:
            t = cfg.prompt_len + n
            extra["cache_bytes"] = model.new_kv_cache(b, t).nbytes
            extra["cache_formula_bytes"] = 2 * mc.n_layer * b * t * mc.n_embd * model.wte.weight.element_size()
        return extra, runs[0][0]

    return _run_grid(cfg, base, cells, decided, run, warm)


class _TimingStreamer:
    """A ``transformers`` streamer that only keeps the time of each ``put`` (the first put is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def hf_cache_bytes(past_key_values: Any) -> tuple[int, int]:
    """``(bytes, cached length)`` of a ``transformers`` cache: every layer's key and value tensors summed
    (``DynamicCache.layers[i].keys/.values``; a legacy tuple of (k, v) pairs also works)."""
    layers = getattr(past_key_values, "layers", None)
    pairs = [(layer.keys, layer.values) for layer in layers] if layers is not None else list(past_key_values)
    tensors = [t for kv in pairs for t in kv if t is not None]
    return sum(t.nbytes for t in tensors), tensors[0].shape[-2]


def _hf_formula(config: Any, batch: int, t: int, element_size: int) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * batch * t * kv_heads * head_dim * element_size


def load_hf_model(model_dir: str | Path, device: str = "cpu") -> Any:
    """``AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)`` in fp32, eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True).to(device).eval()


def _hf_run(hf: Any, ids: torch.Tensor, n: int, use_cache: bool) -> tuple[torch.Tensor, float, float, Any]:
    """Greedy ``generate`` of exactly n tokens (``min_new_tokens=n``: no early end of sequence); (tokens, ttft_s,
    total_s, past_key_values or None)."""
    streamer = _TimingStreamer()
    pad = hf.generation_config.pad_token_id
    pad = pad if pad is not None else hf.generation_config.eos_token_id
    _sync(ids.device)
    t0 = time.perf_counter()
    out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                      do_sample=False, use_cache=use_cache, streamer=streamer, return_dict_in_generate=True,
                      pad_token_id=pad)
    _sync(ids.device)
    total = time.perf_counter() - t0
    ttft = streamer.times[1] - t0 if len(streamer.times) > 1 else total
    return out.sequences[:, ids.shape[1]:], ttft, total, getattr(out, "past_key_values", None)


def bench_hf(model_dir: str | Path | Any, cfg: CacheBenchConfig, name: str | None = None) -> list[dict[str, Any]]:
    """Time ``transformers``' ``generate(do_sample=False, use_cache=True/False)`` over ``cfg``'s grid (the shape
    fields of ``cfg`` are ignored: the model's own are used).

    Args:
        model_dir: a local model folder (loaded with :func:`load_hf_model`) or an already loaded causal LM.
        name: the model column (default: the folder's name, or the config's ``model_type``).

    Returns:
        rows as :func:`bench_gpt`'s; a cached row's ``cache_bytes`` are the returned ``past_key_values``' tensors.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    loaded = not isinstance(model_dir, str | Path)
    hf = model_dir if loaded else load_hf_model(model_dir, cfg.device)
    name = name or (hf.config.model_type if loaded else Path(model_dir).name)
    hf.eval()
    dev = next(hf.parameters()).device
    vocab = hf.config.vocab_size
    max_pos = getattr(hf.config, "max_position_embeddings", None) or 10**9

    def full(ids: torch.Tensor) -> Any:
        return hf(input_ids=ids, use_cache=False, logits_to_keep=1)  # generate keeps the last position's logits only

    def prefill_and_step(ids: torch.Tensor) -> Callable[[], Any]:
        out = hf(input_ids=ids, use_cache=True, logits_to_keep=1)
        pkv, nxt = out.past_key_values, ids[:, -1:]

        def step() -> Any:
            r = hf(input_ids=nxt, past_key_values=pkv, use_cache=True, logits_to_keep=1)
            pkv.crop(-1)  # drop the step just added: every timed step sees the same length
            return r

        return step

    costs = calibrate(full, prefill_and_step, cfg, vocab, cfg.calib_len)
    cells = _grid(cfg, max_pos)
    decided = plan(cells, costs, cfg)
    base = {"model": name, "device": dev.type, "dtype": str(next(hf.parameters()).dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "attn_backend": getattr(hf.config, "_attn_implementation", "")}

    def warm(b: int, uc: bool) -> None:
        with torch.no_grad():
            _hf_run(hf, _prompts(cfg, b, vocab), cfg.warmup_tokens, uc)

    def run(b: int, n: int, uc: bool) -> tuple[dict[str, Any], torch.Tensor]:
        ids = _prompts(cfg, b, vocab)
        with torch.no_grad():
            runs = [_hf_run(hf, ids, n, uc) for _ in range(cfg.repeats)]
        extra = _summary([r[:3] for r in runs], b, n)
        pkv = runs[0][3]
        if uc and pkv is not None:
            nbytes, t = hf_cache_bytes(pkv)
            extra["cache_bytes"] = nbytes
            extra["cache_formula_bytes"] = _hf_formula(hf.config, b, t, next(hf.parameters()).element_size())
        return extra, runs[0][0]

    return _run_grid(cfg, base, cells, decided, run, warm)


def cache_memory_rows(model: GPT | None = None, batches: Sequence[int] = (1, 8),
                      lengths: Sequence[int] = (128, 512, 1024), hf_rows: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Measured cache bytes beside ``2 · n_layer · B · T · d_kv · bytes``, fields :data:`MEMORY_FIELDS`.

    Args:
        model: the GPT whose :class:`~shared.nn.kv_cache.KVCache` is allocated for every (batch, length) and its
            ``nbytes`` read (lengths past block_size are left out).
        hf_rows: :func:`bench_hf` rows: each cached row's ``past_key_values`` bytes (measured after its run).
    """
    rows = []
    if model is not None:
        c, el = model.cfg, model.wte.weight.element_size()
        for b in batches:
            for t in (t for t in lengths if t <= c.block_size):
                measured = model.new_kv_cache(b, t).nbytes
                formula = 2 * c.n_layer * b * t * c.n_embd * el
                rows.append({"model": "gpt", "kind": "KVCache (static, shared.nn.kv_cache)", "batch": b, "seq_len": t,
                             "dtype": str(model.wte.weight.dtype).removeprefix("torch."), "measured_bytes": measured,
                             "formula_bytes": formula, "formula": "2·n_layer·B·T·n_embd·bytes",
                             "equal": measured == formula})
    for r in hf_rows:
        if r.get("use_cache") and r.get("cache_bytes") is not None:
            rows.append({"model": r["model"], "kind": "DynamicCache (transformers past_key_values)",
                         "batch": r["batch"], "seq_len": r["prompt_len"] + r["new_tokens_run"] - 1, "dtype": r["dtype"],
                         "measured_bytes": r["cache_bytes"], "formula_bytes": r["cache_formula_bytes"],
                         "formula": "2·n_layer·B·T·n_kv_heads·head_dim·bytes (GQA)",
                         "equal": r["cache_bytes"] == r["cache_formula_bytes"]})
    return rows


def speedup(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cache vs no cache per (model, batch, new_tokens): ``speedup = no-cache time / cache time``. Where the no-cache
    cell was skipped its estimate is used and ``measured`` is False (where the cached cell was skipped: no row)."""
    by = {(r["model"], r["batch"], r["new_tokens"], r["use_cache"]): r for r in rows}
    out = []
    for (model, b, n, uc), r in by.items():
        other = by.get((model, b, n, False))
        if not uc or r["status"] != "ok" or other is None:
            continue
        measured = other["status"] == "ok"
        slow = other["total_s"] if measured else other["est_s"]
        out.append({"model": model, "batch": b, "new_tokens": n, "cache_s": r["total_s"], "no_cache_s": slow,
                    "speedup": slow / r["total_s"], "measured": measured, "tokens_equal": r["tokens_equal"]})
    return out


def plot(rows: Sequence[dict[str, Any]], path: str | Path,
         memory_rows: Sequence[dict[str, Any]] = ()) -> Path:
    """tokens/s and per-token latency vs new tokens, one line per (model, batch, cache on/off); with
    ``memory_rows`` a third panel of measured cache bytes (markers) over the formula (lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_ax = 3 if memory_rows else 2
    fig, axes = plt.subplots(1, n_ax, figsize=(5.2 * n_ax, 4.2))
    for key in sorted({(r["model"], r["batch"], r["use_cache"]) for r in rows}):
        pts = sorted((r["new_tokens_run"], r["tokens_per_sec"], r["per_token_ms"]) for r in rows
                     if (r["model"], r["batch"], r["use_cache"]) == key and r["status"] == "ok")
        if not pts:
            continue
        label = f"{key[0]} B={key[1]} {'cache' if key[2] else 'no cache'}"
        style = "-o" if key[2] else "--x"
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], style, label=label)
    for ax, ylabel in ((axes[0], "tokens/s (batch total, prefill included)"), (axes[1], "per-token latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("new tokens")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    if memory_rows:
        ax = axes[2]
        for key in sorted({(r["model"], r["batch"]) for r in memory_rows}):
            pts = sorted((r["seq_len"], r["measured_bytes"], r["formula_bytes"]) for r in memory_rows
                         if (r["model"], r["batch"]) == key)
            line = ax.plot([p[0] for p in pts], [p[2] / 2**20 for p in pts], "-", alpha=0.5)[0]
            ax.plot([p[0] for p in pts], [p[1] / 2**20 for p in pts], "o", color=line.get_color(),
                    label=f"{key[0]} B={key[1]}")
        ax.set_xlabel("cached positions T")
        ax.set_ylabel("cache MiB (markers measured, lines formula)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    threads = rows[0]["threads"] if rows else "?"
    fig.suptitle(f"greedy decoding with vs without the KV cache ({rows[0]['device'] if rows else '?'}, "
                 f"{threads} threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
