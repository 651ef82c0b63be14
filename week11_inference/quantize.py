"""int8 dynamic quantisation of a language model's linear layers on the CPU: its size, speed and quality cost.

Dynamic quantisation (``torch.ao.quantization.quantize_dynamic``, https://pytorch.org/docs/stable/quantization.html)
stores every ``nn.Linear`` weight as int8 (symmetric: ``w ≈ s_w · q``, q in [-128, 127], one scale per matrix or per
output row) and, at each call, quantises the layer's input to 7-bit unsigned integers over that tensor's own
[min, max] range (``reduce_range``: the x86/fbgemm kernel keeps int8 x int8 products from overflowing int16), runs an
int32 GEMM and rescales the result to fp32. Nothing is calibrated; only the matmuls change. Embeddings, norms and
attention stay fp32, and so does the LM head by default: it is tied to the token embedding, so quantising it would
add an int8 copy next to the fp32 table instead of saving anything (``QuantConfig.skip``).

What a reader should know:

- **per-call activation scales**: the input's scale comes from the whole (B, T, C) tensor of that call, so the same
  token gets slightly different logits in a full forward than in a one-token KV-cache step. Greedy decoding with the
  cache therefore equals the no-cache loop only while no argmax is a near-tie (:func:`cache_agreement` measures both
  the tokens and the logit gap).
- **outliers**: one scale for the whole input (7 bits) is fine for a small GPT trained here, but a model whose
  activations have outlier channels (SmolLM2: max/median of a layer's input up to ~900) loses most channels'
  precision (LLM.int8(), Dettmers et al. 2022, https://arxiv.org/abs/2208.07339); ``skip`` keeps chosen layers fp32.
- **deprecation**: torch 2.14 still ships ``torch.ao.quantization`` but warns that it "is deprecated and will be
  removed in 2.10 ... please migrate to use torchao eager mode quantize_ API instead" (a stale version number), and
  that quantized tensor dtypes (qint8) will go (https://github.com/pytorch/pytorch/issues/184982). It works; those two
  warnings are silenced inside :func:`quantize_int8` only. torchao (``quantize_(model,
  Int8DynamicActivationInt8WeightConfig())``, per-token activation scales) is the successor and not a dependency of
  this project: its 0.18 wheel runs on torch 2.14, more accurately, but without ``torch.compile`` its int8 CPU path
  is an order of magnitude slower than fp32, so the eager CPU speed-up is torch.ao's.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.config import at_least
from shared.profiling import torch_threads

MB = 1e6  # sizes are reported in decimal megabytes


@dataclass
class QuantConfig:
    """How the model is quantised and how its cost is measured."""

    per_channel: bool = True  # one weight scale per output row (False: one per matrix, the coarser torch.ao default)
    skip: tuple[str, ...] = ("lm_head",)  # Linear modules kept fp32: a name or its dotted suffix ("mlp.down_proj")
    threads: int = at_least(1, 1)  # torch intra-op threads while timing (the same for fp32 and int8)
    batch: int = at_least(1, 1)  # sequences per timed call
    prompt_len: int = at_least(1, 16)  # tokens of the prompt before the timed decode
    forward_len: int = at_least(0, 0)  # tokens of the timed full forward (0 = the GPT's block_size, else prompt_len)
    new_tokens: int = at_least(1, 64)  # tokens decoded per timed generation (KV cache)
    warmup: int = at_least(0, 1)  # untimed calls before timing
    repeats: int = at_least(1, 3)  # timed calls; the median is reported
    ppl_tokens: int = at_least(0, 4096)  # val tokens scored for perplexity (0 = all)
    ppl_batch: int = at_least(1, 16)  # windows per perplexity forward
    seed: int = 0  # of the random timing prompts


_QUIET = (r"torch\.ao\.quantization is deprecated", r"torch\.quantize_per_tensor, torch\.quantize_per_channel")


def quantize_int8(model: nn.Module, cfg: QuantConfig | None = None) -> nn.Module:
    """A quantised copy of ``model`` (the original is untouched): every ``nn.Linear`` not named in ``cfg.skip``
    becomes a ``torch.ao.nn.quantized.dynamic.Linear`` with int8 weights; returned in eval mode, on the CPU.

    Raises:
        ValueError: the model is not on the CPU (the int8 kernels are CPU-only), or no Linear is left to quantise.
    """
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    cfg = cfg or QuantConfig()
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"int8 dynamic quantisation runs on the CPU only; the model is on {device}: call .cpu() first")
    qconfig = per_channel_dynamic_qconfig if cfg.per_channel else default_dynamic_qconfig
    spec = {name: qconfig for name, m in model.named_modules() if type(m) is nn.Linear and not skipped(name, cfg.skip)}
    if not spec:
        raise ValueError(f"no nn.Linear to quantise (skip={list(cfg.skip)}): nothing would change")
    with warnings.catch_warnings():
        for pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern)
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=False).eval()


def skipped(name: str, skip: Sequence[str]) -> bool:
    """Whether module ``name`` is kept in fp32: it equals an entry of ``skip`` or ends with ``"." + entry``."""
    return any(name == s or name.endswith("." + s) for s in skip)


def quantized_linears(model: nn.Module) -> list[str]:
    """Names of the int8 dynamic Linear modules of ``model`` (empty for an unquantised one)."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    return [name for name, m in model.named_modules() if isinstance(m, QLinear)]


def model_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` written to memory: what the checkpoint file would weigh. Tied
    tensors share one storage and are written once; an int8 Linear's packed weight is saved with its scales."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def linear_bytes(model: nn.Module, skip: Sequence[str] = ()) -> dict[str, int]:
    """The tensor payload of the Linear layers (quantised or not; a tied weight counted once; those named in
    ``skip`` left out (see :func:`skipped`), so fp32 and int8 compare over the same layers):
    ``{"weights": values (fp32: 4 B, int8: 1 B each), "qparams": scales and zero points (int8 only, 8 B each as
    stored), "bias": fp32 biases, "layers": how many}``. The weights' ratio fp32 / int8 is exactly 4."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    out = {"weights": 0, "qparams": 0, "bias": 0, "layers": 0}
    seen: set[int] = set()
    for name, m in model.named_modules():
        if skipped(name, skip):
            continue
        if isinstance(m, QLinear):
            w, b = m._packed_params._weight_bias()  # (out, in) qint8, (out,) fp32 or None
            out["weights"] += w.numel() * w.element_size()
            if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                out["qparams"] += 8 * (w.q_per_channel_scales().numel() + w.q_per_channel_zero_points().numel())
            else:
                out["qparams"] += 16  # one float64 scale and one int64 zero point
        elif type(m) is nn.Linear:
            w, b = m.weight, m.bias
            if w.data_ptr() not in seen:
                seen.add(w.data_ptr())
                out["weights"] += w.numel() * w.element_size()
        else:
            continue
        out["layers"] += 1
        out["bias"] += 0 if b is None else b.numel() * b.element_size()
    return out


def median_seconds(fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    """Median wall time (s) of ``repeats`` calls of ``fn()`` after ``warmup`` untimed ones."""
    return interleaved_seconds({"fn": fn}, warmup, repeats)["fn"]


def interleaved_seconds(fns: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, float]:
    """Median wall time (s) of each function, timed in turns (a, b, a, b, ...) after ``warmup`` untimed rounds, so
    a load that comes and goes on a shared machine hits every variant alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _prompt(model: nn.Module, cfg: QuantConfig, length: int) -> torch.Tensor:
    vocab = model.cfg.vocab_size if hasattr(model, "cfg") else model.config.vocab_size
    return torch.randint(0, vocab, (cfg.batch, length), generator=torch.Generator().manual_seed(cfg.seed))


def _forward_call(model: nn.Module, cfg: QuantConfig) -> tuple[Callable[[], Any], int]:
    block = getattr(getattr(model, "cfg", None), "block_size", None)
    ids = _prompt(model, cfg, cfg.forward_len or block or cfg.prompt_len)
    return (lambda: model(ids)), ids.shape[1]


def _decode_call(model: nn.Module, cfg: QuantConfig) -> Callable[[], Any]:
    from shared.models.decode import SamplingConfig, generate

    ids = _prompt(model, cfg, cfg.prompt_len)
    if hasattr(model, "new_kv_cache"):  # the project's GPT: its own loop and KVCache
        if ids.shape[1] + cfg.new_tokens > model.cfg.block_size:
            raise ValueError(f"{ids.shape[1]} prompt tokens + {cfg.new_tokens} new ones > model.block_size="
                             f"{model.cfg.block_size}: lower prompt_len or new_tokens")
        return lambda: generate(model, ids, SamplingConfig(max_new_tokens=cfg.new_tokens), use_cache=True)
    mask = torch.ones_like(ids)
    return lambda: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=cfg.new_tokens,
                                  min_new_tokens=cfg.new_tokens, do_sample=False, use_cache=True,
                                  pad_token_id=model.config.eos_token_id)


@torch.no_grad()
def time_speed(models: dict[str, nn.Module], cfg: QuantConfig | None = None) -> dict[str, dict[str, Any]]:
    """Forward and decode speed of each model, interleaved (:func:`interleaved_seconds`), on ``cfg.threads``
    threads: ``name -> {"forward_tok_s", "forward_ms", "forward_len", "decode_tok_s", "decode_s", "new_tokens",
    "kv_cache": True, "threads"}``.

    - forward: one full forward (a prefill) over a (batch, forward_len) input, in tokens per second;
    - decode: a greedy generation of exactly ``new_tokens`` tokens after a ``prompt_len`` prompt through the KV
      cache (the project's GPT: :func:`shared.models.decode.generate` with ``use_cache=True``; a Hugging Face model:
      ``transformers``' ``generate``), prefill included, in new tokens per second.

    Raises:
        ValueError: prompt + new tokens longer than a GPT's block_size.
    """
    cfg = cfg or QuantConfig()
    for m in models.values():
        m.eval()
    fwd = {k: _forward_call(m, cfg) for k, m in models.items()}
    dec = {k: _decode_call(m, cfg) for k, m in models.items()}
    with torch_threads(cfg.threads):
        fs = interleaved_seconds({k: f for k, (f, _) in fwd.items()}, cfg.warmup, cfg.repeats)
        ds = interleaved_seconds(dec, cfg.warmup, cfg.repeats)
    return {k: {"forward_tok_s": cfg.batch * fwd[k][1] / fs[k], "forward_ms": 1e3 * fs[k], "forward_len": fwd[k][1],
                "decode_tok_s": cfg.batch * cfg.new_tokens / ds[k], "decode_s": ds[k], "new_tokens": cfg.new_tokens,
                "kv_cache": True, "threads": cfg.threads} for k in models}


def time_forward(model: nn.Module, cfg: QuantConfig | None = None) -> dict[str, Any]:
    """One model's forward speed: ``{"forward_tok_s", "forward_ms", "forward_len", "threads"}`` (see
    :func:`time_speed`; compare variants with it instead: it interleaves them)."""
    cfg = cfg or QuantConfig()
    model.eval()
    fn, length = _forward_call(model, cfg)
    with torch_threads(cfg.threads), torch.no_grad():
        s = median_seconds(fn, cfg.warmup, cfg.repeats)
    return {"forward_tok_s": cfg.batch * length / s, "forward_ms": 1e3 * s, "forward_len": length,
            "threads": cfg.threads}


def time_decode(model: nn.Module, cfg: QuantConfig | None = None) -> dict[str, Any]:
    """One model's KV-cache decode speed: ``{"decode_tok_s", "decode_s", "new_tokens", "kv_cache": True,
    "threads"}`` (see :func:`time_speed`).

    Raises:
        ValueError: prompt + new tokens longer than a GPT's block_size.
    """
    cfg = cfg or QuantConfig()
    model.eval()
    fn = _decode_call(model, cfg)
    with torch_threads(cfg.threads), torch.no_grad():
        s = median_seconds(fn, cfg.warmup, cfg.repeats)
    return {"decode_tok_s": cfg.batch * cfg.new_tokens / s, "decode_s": s, "new_tokens": cfg.new_tokens,
            "kv_cache": True, "threads": cfg.threads}


@torch.no_grad()
def cache_agreement(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> dict[str, Any]:
    """Greedy decoding of the project's GPT through the KV cache vs re-running the whole sequence each step:
    ``{"tokens_equal", "first_mismatch" (first step whose token differs in some row, or None), "max_logit_gap"
    (max |Δ| of the steps' logits up to and including that step: after it the two runs continue different
    sequences)}``. fp32 agrees to ~1e-7; an int8 model to about its quantisation error (see the module docstring)."""
    from shared.models.decode import SamplingConfig, stream

    cfg = SamplingConfig(max_new_tokens=new_tokens)
    la: list[torch.Tensor] = []
    lb: list[torch.Tensor] = []
    a = torch.stack(list(stream(model, prompt, cfg, use_cache=True, logits_out=la)), 1)
    b = torch.stack(list(stream(model, prompt, cfg, use_cache=False, logits_out=lb)), 1)
    diff = (a != b).any(0).nonzero()
    first = int(diff[0]) if len(diff) else None
    n = len(la) if first is None else first + 1
    gap = max((x - y).abs().max().item() for x, y in zip(la[:n], lb[:n], strict=True))
    return {"tokens_equal": first is None, "first_mismatch": first, "max_logit_gap": gap}


@torch.no_grad()
def logit_agreement(reference: nn.Module, model: nn.Module, ids: torch.Tensor) -> dict[str, float]:
    """``model`` vs ``reference`` (fp32) teacher-forced on the same ``ids`` (B, T): ``{"max_logit_diff_vs_fp32"
    (max |Δ| over every position and vocabulary entry), "argmax_agree_vs_fp32" (share of positions whose next-token
    argmax is the same)}``."""
    a, b = reference(ids).float(), model(ids).float()
    return {"max_logit_diff_vs_fp32": (a - b).abs().max().item(),
            "argmax_agree_vs_fp32": (a.argmax(-1) == b.argmax(-1)).float().mean().item()}


def perplexity(model: nn.Module, tokens: np.ndarray | torch.Tensor, block_size: int,
               cfg: QuantConfig | None = None) -> dict[str, Any]:
    """Perplexity on the first ``cfg.ppl_tokens`` tokens of a val stream, in non-overlapping ``block_size`` windows
    (:func:`shared.train.perplexity.stream_loss`, fp32 activations): ``{"loss", "ppl", "eval_tokens"}``."""
    from shared.train.perplexity import stream_loss

    cfg = cfg or QuantConfig()
    with torch_threads(cfg.threads):
        r = stream_loss(model, tokens, block_size, batch_size=cfg.ppl_batch, max_tokens=cfg.ppl_tokens)
    return {"loss": r["loss"], "ppl": r["perplexity"], "eval_tokens": r["tokens"]}


def size_row(model: nn.Module, skip: Sequence[str] = ()) -> dict[str, Any]:
    """``{"bytes", "mb", "linear_weight_bytes", "linear_total_bytes", "quantized_linears"}`` of one model; the
    linear sizes leave out the layers named in ``skip`` (those a :class:`QuantConfig` keeps in fp32)."""
    lin = linear_bytes(model, skip)
    n = model_bytes(model)
    return {"bytes": n, "mb": n / MB, "linear_weight_bytes": lin["weights"],
            "linear_total_bytes": lin["weights"] + lin["qparams"] + lin["bias"],
            "quantized_linears": len(quantized_linears(model))}


def compare_gpt(model: nn.Module, val_tokens: np.ndarray | torch.Tensor | None = None, label: str = "gpt",
                cfg: QuantConfig | None = None) -> list[dict[str, Any]]:
    """fp32 vs int8 rows of the project's GPT: size, forward and KV-cache decode speed, perplexity on
    ``val_tokens`` (skipped when None), the logit gap to fp32, and the KV-cache agreement of each.

    Returns:
        Two dicts (``variant`` "fp32", "int8") with ``model``, the keys of :func:`size_row`, :func:`time_speed`,
        :func:`perplexity`, :func:`logit_agreement` (on the first val window, or on the random
        prompt without val tokens), ``cache_tokens_equal``, ``cache_first_mismatch``, ``cache_max_logit_gap`` (of
        :func:`cache_agreement` on the random prompt) and ``per_channel``.
    """
    cfg = cfg or QuantConfig()
    model = model.cpu().eval()
    qmodel = quantize_int8(model, cfg)
    block = model.cfg.block_size
    prompt = _prompt(model, cfg, min(cfg.prompt_len, block))
    text = prompt if val_tokens is None else torch.as_tensor(np.asarray(val_tokens[:block], dtype=np.int64))[None]
    new = max(1, min(cfg.new_tokens, block - prompt.shape[1]))
    variants = {"fp32": model, "int8": qmodel}
    speed = time_speed(variants, cfg)
    rows = []
    for variant, m in variants.items():
        agree = cache_agreement(m, prompt, new)
        row = {"model": label, "variant": variant, "per_channel": cfg.per_channel if variant == "int8" else None,
               **size_row(m, cfg.skip), **speed[variant],
               **logit_agreement(model, m, text), "cache_tokens_equal": agree["tokens_equal"],
               "cache_first_mismatch": agree["first_mismatch"], "cache_max_logit_gap": agree["max_logit_gap"]}
        if val_tokens is not None:
            row.update(perplexity(m, val_tokens, model.cfg.block_size, cfg))
        rows.append(row)
    return rows


def compare_hf(model: nn.Module, tokenizer: Any, items: Sequence[Any], template: str, harness: Any = None,
               label: str = "hf", cfg: QuantConfig | None = None) -> list[dict[str, Any]]:
    """fp32 vs int8 rows of a Hugging Face causal LM (an :class:`shared.models.causal_lm.HFCausalLM`, e.g. the
    week-7 SFT export): size, forward and decode speed (``transformers``' generate, KV cache), and the week-7
    instruction harness (:func:`shared.evals.harness.run_harness`) on ``items`` with ``template``.

    Args:
        harness: a :class:`shared.evals.instruct.HarnessConfig` (default: its defaults).

    Returns:
        Two dicts (``variant`` "fp32", "int8") with ``model``, the size and speed keys, :func:`logit_agreement` on
        the first item's prompt, and the harness summary (``items``, ``rougeL``, ``format_compliance``,
        ``exact_match``, ``instruction_following``, ...) plus ``harness_s`` (seconds) and ``answers`` (the decoded
        answers).
    """
    from shared.data.prompts import format_prompt
    from shared.evals.harness import run_harness
    from shared.evals.instruct import HarnessConfig

    cfg = cfg or QuantConfig()
    harness = harness or HarnessConfig()
    model = model.cpu().eval()
    qmodel = quantize_int8(model, cfg)
    first = torch.tensor([tokenizer.encode(format_prompt(items[0].instruction, items[0].input, template, tokenizer))])
    variants = {"fp32": model, "int8": qmodel}
    speed = time_speed(variants, cfg)
    rows = []
    for variant, m in variants.items():
        with torch_threads(cfg.threads), torch.no_grad():
            res = run_harness(m, tokenizer, items, template, harness)
        summary = {k: v for k, v in res.summary.items() if k != "rougeL_by_type"}
        rows.append({"model": label, "variant": variant, "per_channel": cfg.per_channel if variant == "int8" else None,
                     **size_row(m, cfg.skip), **speed[variant], **logit_agreement(model, m, first), **summary, "harness_s": res.seconds,
                     "answers": [r["answer"] for r in res.rows]})
    return rows


def lm_val_tokens(corpus: Any, tokenizer: Any) -> np.ndarray:
    """The val stream of a corpus packed with a trained model's own tokenizer (``[BOS, doc, EOS, ...]``, as
    :func:`shared.data.lm.prepare_lm_data` packs it), without training a tokenizer.

    Args:
        corpus: a :class:`shared.data.corpus.CorpusConfig` (the one the model was trained on: same split).
        tokenizer: the model's tokenizer (e.g. ``load_tokenizer(models/week10/lm-fsdp2)``).
    """
    from shared.data.corpus import load_corpus
    from shared.data.pack import pack_documents

    stream, _ = pack_documents(load_corpus(corpus).val, tokenizer)
    return stream
