"""Memory of a training step as formulas: parameters, gradients, optimizer state (per rank, by sharding strategy) and
the activations the project's GPT saves for backward. Pure functions of shapes, standard library only; every count
is in bytes (GiB = 2**30 bytes where a table says so).

Sources:
- State division (DDP vs ZeRO-1/2/3; FSDP2 is ZeRO-3): Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward
  Training Trillion Parameter Models", https://arxiv.org/abs/1910.02054 (section 3.1 for the 16Ψ of mixed precision
  Adam, section 5 for the stages).
- Activations and per-block recomputation: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models", https://arxiv.org/abs/2205.05198 (section 4.1 counts a block's saved tensors).
- Attention without the T x T matrix: Dao et al. 2022, "FlashAttention", https://arxiv.org/abs/2205.14135.

The activation formula is not copied from the papers: each term was read off what ``shared.models.gpt.GPT`` and
``shared.tasks.lm.causal_lm_loss`` actually save (``shared.train.memory.measure_step_memory``), and it matches that
count to the byte (``week10_fsdp/tests/test_formulas.py``).
"""

from __future__ import annotations

STRATEGIES = ("ddp", "zero1", "zero2", "zero3", "fsdp2", "fsdp2_no_reshard")
PRECISIONS = ("fp32", "bf16_mixed")
GIB = 2**30

# Bytes per parameter of (params, grads, optimizer) with AdamW. fp32: 4 + 4 + 8 (two fp32 moments). bf16_mixed, the
# ZeRO paper's mixed precision: bf16 params and grads (2 + 2) and an fp32 optimizer of master copy + two moments
# (4 + 4 + 4 = 12). Both total 16 bytes per parameter: mixed precision saves compute and activations, not state.
BYTES_PER_PARAM = {"fp32": (4, 4, 8), "bf16_mixed": (2, 2, 12)}

# Which of (params, grads, optimizer) each strategy divides among the N ranks, at rest (between steps).
# zero1 shards the optimizer state, zero2 also the gradients (reduce-scatter instead of all-reduce), zero3 also the
# parameters (all-gathered block by block when needed). FSDP2 (fully_shard) is zero3; with reshard_after_forward=False
# it is still sharded at rest (parameters are resharded after backward) but keeps the gathered ones from forward to
# backward: see gathered_param_bytes.
SHARDED = {
    "ddp": (False, False, False),
    "zero1": (False, False, True),
    "zero2": (False, True, True),
    "zero3": (True, True, True),
    "fsdp2": (True, True, True),
    "fsdp2_no_reshard": (True, True, True),
}

# ---- Activations of the project's GPT (pre-LN, learned positions, GELU MLP 4C, hand-written attention, no dropout).
# Each term: (what autograd saves, elements per B*T*C). Read off shared/nn/{layers,mha,attention}.py and confirmed by
# counting saved tensors with a pack hook, one by one.
LAYER_BTC_TERMS = (
    ("norm1: x - mean, twice (the hand-written LayerNorm computes it for pow and again for the scale)", 2),
    ("norm1: (x - mean) * rstd, saved by the multiply with the weight", 1),
    ("c_attn input (norm1 output)", 1),
    ("q, k, v: matmul copies the (B, H, T, D) head views to contiguous; flash saves the (B, T, 3C) qkv they view", 3),
    ("c_proj input (heads merged; with flash it is the kernel's own (B, T, H, D) output, no second copy)", 1),
    ("norm2: x - mean twice, (x - mean) * rstd", 3),
    ("c_fc input (norm2 output)", 1),
    ("GELU input (c_fc output, 4C wide)", 4),
    ("MLP c_proj input (GELU output, 4C wide)", 4),
)
LAYER_BTC = sum(n for _, n in LAYER_BTC_TERMS)  # 20
FUSED_LN_SAVING = 2  # BTC per LayerNorm a fused nn.LayerNorm would not save: it keeps its input (+ stats), not 3 BTC
LAYER_BT = 2  # rstd (B, T, 1) of norm1 and norm2
# Hand-written attention, elements per B*H*T*T: the masked scores (saved by amax for the row max), exp(scores - max)
# (saved by exp and by the division), the probabilities (saved by the matmul with v).
LAYER_ATTN_TT = 3
LAYER_ATTN_BHT = 3  # row max (amax's result), row sum, clamped row sum (saved by clamp_min and the division)
LAYER_ATTN_BHT_BOOL = 1  # isfinite(row max), saved by torch.where: one byte per element
FLASH_LSE_BYTES = 4  # flash saves a (B, H, T) logsumexp in fp32 whatever the input dtype
# Outside the blocks (bytes): token ids (B*T int64, the embedding's backward needs them), position ids (T int64),
# norm_f (3 B*T*C + B*T), the LM head's input (B*T*C), the log-softmax of the loss (B*T*V, always fp32:
# causal_lm_loss casts the logits to fp32; the logits themselves are not saved, the head's backward needs its input and
# log-softmax's backward its output), the targets (B*T int64, saved by nll_loss) and nll_loss's total weight (a 4-byte
# scalar).
NON_LAYER_BTC = 4
INT64 = 8


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} '{value}'. Choose one of: {', '.join(choices)}")


def _check_count(name: str, value: int, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def state_bytes(n_params: int, world_size: int, strategy: str, precision: str = "fp32") -> dict[str, int]:
    """Bytes per rank of parameters, gradients and AdamW state at rest, Ψ = n_params, N = world_size.

    fp32: ddp 16Ψ, zero1 8Ψ + 8Ψ/N, zero2 4Ψ + 12Ψ/N, zero3 = fsdp2 = fsdp2_no_reshard 16Ψ/N.
    bf16_mixed (ZeRO paper, section 3.1): ddp 16Ψ, zero1 4Ψ + 12Ψ/N, zero2 2Ψ + 14Ψ/N, zero3 16Ψ/N.
    A sharded part is rounded up to a whole byte; fully_shard splits each parameter on dim 0 and pads it, so a rank
    may hold up to one row per parameter more than the average. Not counted: AdamW's ``step`` (one scalar per
    parameter tensor) and any communication buffer. FSDP2 with ``MixedPrecisionPolicy(param_dtype=bf16,
    reduce_dtype=fp32)`` keeps its sharded fp32 parameters as the master copy and fp32 sharded gradients: the same
    16Ψ/N in total, split 4 + 4 + 8 (use ``precision="fp32"`` to compare its parts).

    Returns:
        ``{"params", "grads", "optimizer", "total"}`` in bytes per rank.

    Raises:
        ValueError: unknown strategy or precision (the message lists the choices), n_params < 0, world_size < 1.
    """
    _check_choice("strategy", strategy, STRATEGIES)
    _check_choice("precision", precision, PRECISIONS)
    _check_count("n_params", n_params, 0)
    _check_count("world_size", world_size, 1)
    parts = {}
    for key, per_param, sharded in zip(("params", "grads", "optimizer"), BYTES_PER_PARAM[precision],
                                       SHARDED[strategy], strict=True):
        full = n_params * per_param
        parts[key] = -(-full // world_size) if sharded else full  # ceil: a shard is whole bytes
    return {**parts, "total": sum(parts.values())}


def gathered_param_bytes(block_params: int, n_blocks: int, strategy: str, bytes_per_param: int = 4,
                         root_params: int = 0) -> int:
    """Bytes of unsharded (all-gathered) parameters a rank holds, beyond its state_bytes, at the peak between forward
    and backward.

    fsdp2 / zero3: one block's worth, the block being computed (its parameters are freed again after its forward and
    after its backward). fsdp2_no_reshard: every block and the root module's own parameters (``root_params``:
    embeddings, final norm; torch 2.14's FSDP2 reshards the root after forward like a block, measured), gathered in
    forward and kept until backward, which then needs no second all-gather (one all-gather per step instead of two,
    ~4Ψ more memory in fp32). ddp / zero1 / zero2: 0, they hold the full parameters at rest already. Not counted:
    FSDP2 prefetches the next block's all-gather while one computes (two blocks for that moment). Measured as the
    storages autograd saves for backward, this leaves out the parameters backward does not need (a linear layer's
    bias): a few per cent of a small model. ``bytes_per_param``: 4 fp32, 2 when the gathered copy is bf16.

    Raises:
        ValueError: unknown strategy, or a negative count.
    """
    _check_choice("strategy", strategy, STRATEGIES)
    for name, value in (("block_params", block_params), ("n_blocks", n_blocks), ("bytes_per_param", bytes_per_param),
                        ("root_params", root_params)):
        _check_count(name, value, 0)
    if strategy == "fsdp2_no_reshard":
        return (n_blocks * block_params + root_params) * bytes_per_param
    blocks = {"zero3": 1, "fsdp2": 1}.get(strategy, 0)
    return blocks * block_params * bytes_per_param


def gpt_layer_activation_bytes(batch: int, seq: int, n_embd: int, n_head: int, bytes_per_elem: int = 4,
                               flash: bool = False) -> int:
    """Bytes one block saves for backward (no checkpointing), B = batch, T = seq, C = n_embd, H = n_head, e =
    bytes_per_elem: ``e(20 BTC + 2 BT) + e(3 BHT² + 3 BHT) + BHT`` with the hand-written attention,
    ``e(20 BTC + 2 BT) + 4 BHT`` with flash (the T x T terms replaced by the fp32 logsumexp). Terms:
    :data:`LAYER_BTC_TERMS`. Korthikanti et al. count 34 BTC + 5 H T² B bytes at 2 bytes per element, with dropout
    masks and fused LayerNorms; this GPT has neither (20 e = 40 bytes of BTC, 3 e = 6 of T²)."""
    b, t, c, h, e = batch, seq, n_embd, n_head, bytes_per_elem
    common = e * (LAYER_BTC * b * t * c + LAYER_BT * b * t)
    if flash:
        return common + FLASH_LSE_BYTES * b * h * t
    return common + e * (LAYER_ATTN_TT * b * h * t * t + LAYER_ATTN_BHT * b * h * t) + LAYER_ATTN_BHT_BOOL * b * h * t


def gpt_non_layer_activation_bytes(batch: int, seq: int, n_embd: int, vocab: int, bytes_per_elem: int = 4) -> int:
    """Bytes saved outside the blocks: token and position ids, norm_f, the LM head's input, the loss's fp32
    log-softmax (B T V, the largest term for a big vocabulary) and targets (see the comment at NON_LAYER_BTC)."""
    b, t, e = batch, seq, bytes_per_elem
    ids = INT64 * (2 * b * t + t)  # token ids + targets (B, T) and position ids (T,)
    return ids + e * (NON_LAYER_BTC * b * t * n_embd + b * t) + 4 * b * t * vocab + 4


def gpt_activation_bytes(batch: int, seq: int, n_embd: int, n_head: int, n_layer: int, vocab: int,
                         bytes_per_elem: int = 4, checkpointing: bool = False, flash: bool = False) -> int:
    """Bytes of activations the project's GPT + causal_lm_loss hold between forward and backward, for a micro-batch
    of ``batch`` sequences of ``seq`` tokens (``bytes_per_elem``: 4 fp32, 2 bf16; the loss's log-softmax is fp32
    either way).

    Without checkpointing: ``n_layer * gpt_layer_activation_bytes + gpt_non_layer_activation_bytes``. With per-block
    activation checkpointing (``torch.utils.checkpoint`` per block, Korthikanti et al. section 4; Chen et al. 2016)
    each block keeps only its input, ``e B T C``; backward recomputes one block at a time, which adds one block's
    activations for a moment: :func:`gpt_activation_peak_bytes`. Not counted: transients that die within the
    forward (the logits and their fp32 copy, B T V (e + 4) bytes, live only until the log-softmax is taken).
    """
    for name, value in (("batch", batch), ("seq", seq), ("n_embd", n_embd), ("n_head", n_head), ("n_layer", n_layer),
                        ("vocab", vocab), ("bytes_per_elem", bytes_per_elem)):
        _check_count(name, value, 1)
    held = (bytes_per_elem * batch * seq * n_embd if checkpointing
            else gpt_layer_activation_bytes(batch, seq, n_embd, n_head, bytes_per_elem, flash))
    return n_layer * held + gpt_non_layer_activation_bytes(batch, seq, n_embd, vocab, bytes_per_elem)


def gpt_activation_peak_bytes(batch: int, seq: int, n_embd: int, n_head: int, n_layer: int, vocab: int,
                              bytes_per_elem: int = 4, checkpointing: bool = False, flash: bool = False) -> int:
    """Bytes of saved activations at their peak: with checkpointing the held amount plus the one block being
    recomputed in backward; without, the end of the forward (:func:`gpt_activation_bytes`)."""
    held = gpt_activation_bytes(batch, seq, n_embd, n_head, n_layer, vocab, bytes_per_elem, checkpointing, flash)
    extra = gpt_layer_activation_bytes(batch, seq, n_embd, n_head, bytes_per_elem, flash) if checkpointing else 0
    return held + extra


BLOCK_C2 = 3 + 1 + 4 + 4  # weights of c_attn, attention c_proj, c_fc, MLP c_proj, in C²
BLOCK_C = 3 + 1 + 4 + 1 + 4  # their biases (3C, C, 4C, C) and two LayerNorms (weight + bias, 2C each), in C


def gpt_block_params(n_embd: int, bias: bool = True) -> int:
    """Parameters of one GPT block: 12C² + 13C (see BLOCK_C2, BLOCK_C), or 12C² + 2C without biases (the two
    LayerNorms' weights only)."""
    return BLOCK_C2 * n_embd**2 + (BLOCK_C if bias else 2) * n_embd


def gpt_params(n_layer: int, n_embd: int, vocab: int, block_size: int, bias: bool = True) -> int:
    """Parameters of the project's GPT with tied weights: blocks + token table (V C) + positions (T C) + norm_f."""
    return n_layer * gpt_block_params(n_embd, bias) + (vocab + block_size) * n_embd + (2 if bias else 1) * n_embd


def llama_params(n_layer: int, n_embd: int, n_head: int, n_kv_head: int, d_ff: int, vocab: int, tied: bool) -> int:
    """Parameters of a Llama-style model (SwiGLU, RMSNorm, grouped-query attention, no biases): per layer q and o
    (2C²), k and v (2 C · C n_kv_head / n_head), three MLP matrices (3 C d_ff), two norms (2C); embeddings V C (twice
    when the head is untied) and the final norm C."""
    kv = n_embd * n_kv_head // n_head
    layer = 2 * n_embd**2 + 2 * n_embd * kv + 3 * n_embd * d_ff + 2 * n_embd
    return n_layer * layer + (1 if tied else 2) * vocab * n_embd + n_embd


# Representative shapes for the worked examples: (name, n_params, n_layer, n_embd, n_head, vocab, seq, what it is).
WORKED_MODELS = (
    ("124M", gpt_params(12, 768, 50257, 1024), 12, 768, 12, 50257, 1024, "GPT-2 small"),
    ("1B", llama_params(16, 2048, 32, 8, 8192, 128256, tied=True), 16, 2048, 32, 128256, 2048, "Llama-3.2-1B shape"),
    ("7B", llama_params(32, 4096, 32, 32, 11008, 32000, tied=False), 32, 4096, 32, 32000, 4096, "Llama-2-7B shape"),
)
WORKED_WORLD_SIZES = (1, 8, 64)
WORKED_STRATEGIES = ("ddp", "zero1", "zero2", "zero3")  # zero3 = fsdp2


def worked_examples() -> list[dict]:
    """One row per (model, precision, strategy, world_size): state in GiB per rank, plus the activations of ONE
    sequence (batch 1) at the model's context, in GiB, at 2 bytes per element (4 for the fp32 rows): ``act_gib``,
    ``act_flash_gib``, ``act_ckpt_gib`` (held), ``act_ckpt_peak_gib`` and ``act_ckpt_flash_peak_gib`` (recompute peak). fp32 rows for the 124M only. The 1B and 7B are Llama shapes
    (SwiGLU, RMSNorm, GQA) whose parameters are counted as such, but whose activations use this GPT's formula at
    their (n_layer, n_embd, n_head, vocab, seq): an estimate for the shape, not those models' exact count."""
    rows = []
    for name, n_params, n_layer, n_embd, n_head, vocab, seq, what in WORKED_MODELS:
        for precision in (PRECISIONS if name == "124M" else ("bf16_mixed",)):
            e = 4 if precision == "fp32" else 2
            shape = dict(batch=1, seq=seq, n_embd=n_embd, n_head=n_head, n_layer=n_layer, vocab=vocab,
                         bytes_per_elem=e)
            # with checkpointing the held amount does not depend on the attention, the recompute peak does
            act = {"act_gib": gpt_activation_bytes(**shape) / GIB,
                   "act_flash_gib": gpt_activation_bytes(**shape, flash=True) / GIB,
                   "act_ckpt_gib": gpt_activation_bytes(**shape, checkpointing=True) / GIB,
                   "act_ckpt_peak_gib": gpt_activation_peak_bytes(**shape, checkpointing=True) / GIB,
                   "act_ckpt_flash_peak_gib": gpt_activation_peak_bytes(**shape, checkpointing=True, flash=True) / GIB}
            for strategy in WORKED_STRATEGIES:
                for world_size in WORKED_WORLD_SIZES:
                    s = state_bytes(n_params, world_size, strategy, precision)
                    rows.append({"model": name, "what": what, "n_params": n_params, "precision": precision,
                                 "strategy": strategy, "world_size": world_size, "n_layer": n_layer, "n_embd": n_embd,
                                 "n_head": n_head, "vocab": vocab, "seq": seq, "bytes_per_elem": e,
                                 **{f"{k}_gib": v / GIB for k, v in s.items()}, **act})
    return rows
