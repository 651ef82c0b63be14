"""A decoder-only transformer language model (GPT), small enough to read top to bottom.

``input_ids`` (B, T) -> token embedding (B, T, C) [+ learned positions] -> n_layer blocks ->
final norm -> LM head -> ``logits`` (B, T, vocab_size). The model computes logits only: the loss belongs to the
objective (:mod:`shared.objectives`), so the GPT and any Hugging Face causal LM fit the same interface
(:class:`shared.models.causal_lm.CausalLM`). Each block is attention then an MLP, each
wrapped in a residual connection, with the norm before (pre-LN, GPT-2) or after (post-LN, the 2017
Transformer) the sub-layer. The LM head shares its weight with the token embedding (weight tying,
Press & Wolf 2017, https://arxiv.org/abs/1608.05859). Architecture after GPT-2 (Radford et al. 2019)
and nanoGPT (https://github.com/karpathy/nanoGPT/blob/master/model.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from shared.config import at_least, in_range, positive
from shared.flops import gpt_flops_per_token
from shared.nn.attention import BACKENDS, check_backend
from shared.nn.kv_cache import KVCache
from shared.nn.layers import MLPS, NORMS, build_mlp, build_norm
from shared.nn.mha import CausalSelfAttention, check_heads
from shared.nn.positions import POSITIONS, LearnedPositions, RotaryEmbedding

PLACEMENTS = ("pre", "post")
# The longest context a config may ask for (2**20 = 1,048,576 tokens, the longest of today's production models): a
# larger block_size is a typo, and its position table alone (block_size x n_embd floats) would take gigabytes to
# terabytes. Whether a smaller one fits the device is checked before training (shared.train.pretrain.check_fits).
MAX_BLOCK_SIZE = 2**20


@dataclass
class GPTConfig:
    """The model's shape and its architectural switches."""

    vocab_size: int = at_least(1, 65)  # number of token ids (set from the tokenizer)
    block_size: int = in_range(1, MAX_BLOCK_SIZE, 256, why="a longer context is almost surely a typo")  # context length T: the most tokens the model sees at once
    n_layer: int = at_least(1, 6)  # transformer blocks
    n_head: int = at_least(1, 6)  # attention heads per block; must divide n_embd
    n_embd: int = at_least(1, 384)  # model width C (d_model)
    dropout: float = in_range(0, 1, 0.0, hi_open=True)  # after embeddings and on each residual branch
    bias: bool = True  # biases in linear layers and LayerNorm
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    norm_placement: str = "pre"  # "pre" (norm -> sub-layer -> add) or "post" (sub-layer -> add -> norm)
    mlp: str = "gelu"  # "gelu" (4C MLP) or "swiglu"
    d_ff: int = at_least(0, 0)  # MLP hidden width (0 = the default: 4C for gelu, 8C/3 rounded up to a multiple of 64 for swiglu)
    norm_eps: float = positive(1e-5)  # epsilon of every LayerNorm/RMSNorm
    pos: str = "learned"  # "learned" absolute embeddings or "rope"
    rope_base: float = positive(10000.0)  # RoPE's base wavelength
    attn_backend: str = "manual"  # "manual" (hand-written attention) or "torch" (F.scaled_dot_product_attention)
    tie_weights: bool = True  # the LM head reuses the token-embedding matrix

    def validate(self) -> None:
        """Raises ValueError naming the bad field and its allowed values (or, for n_head, the divisors of n_embd)."""
        for name, value, allowed in (("norm_placement", self.norm_placement, PLACEMENTS), ("pos", self.pos, POSITIONS),
                                     ("attn_backend", self.attn_backend, BACKENDS), ("norm", self.norm, NORMS),
                                     ("mlp", self.mlp, MLPS)):
            if value not in allowed:
                raise ValueError(f"unknown model.{name} '{value}'. Choose one of: {', '.join(allowed)}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_ff < 0 or self.norm_eps <= 0:
            raise ValueError(f"model.d_ff must be >= 0 (0 = default) and model.norm_eps > 0, got {self.d_ff}, {self.norm_eps}")
        check_heads(self.n_embd, self.n_head)


class Block(nn.Module):
    """One transformer block, (B, T, C) -> (B, T, C).

    pre-LN:  ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``: the residual stream is never normalised,
    so gradients reach early layers unchanged and training is stable without warm-up tricks
    (Xiong et al. 2020, https://arxiv.org/abs/2002.04745).
    post-LN: ``x = norm1(x + attn(x)); x = norm2(x + mlp(x))``, as in Vaswani et al. 2017.
    """

    def __init__(self, cfg: GPTConfig, rope: RotaryEmbedding | None = None) -> None:
        super().__init__()
        self.pre = cfg.norm_placement == "pre"
        self.norm1 = build_norm(cfg.norm, cfg.n_embd, cfg.bias, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg.n_embd, cfg.n_head, cfg.bias, cfg.dropout, cfg.attn_backend, rope)
        self.norm2 = build_norm(cfg.norm, cfg.n_embd, cfg.bias, cfg.norm_eps)
        self.mlp = build_mlp(cfg.mlp, cfg.n_embd, cfg.bias, cfg.dropout, cfg.d_ff or None)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        if self.pre:
            x = x + self.attn(self.norm1(x), key_mask, positions, cache, layer)
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x, key_mask, positions, cache, layer))
        return self.norm2(x + self.mlp(x))


class GPT(nn.Module):
    """The language model. See the module docstring for the data flow.

    Raises:
        ValueError: a bad config value (see :meth:`GPTConfig.validate`), or n_embd % n_head != 0.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        head_dim = cfg.n_embd // cfg.n_head
        rope = RotaryEmbedding(head_dim, cfg.block_size, cfg.rope_base) if cfg.pos == "rope" else None
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = LearnedPositions(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, rope) for _ in range(cfg.n_layer))
        # post-LN blocks already end in a norm; pre-LN needs one on the residual stream before the head
        self.norm_f = build_norm(cfg.norm, cfg.n_embd, cfg.bias, cfg.norm_eps) if cfg.norm_placement == "pre" else nn.Identity()
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight  # (V, C), one Parameter
        self.apply(self._init_weights)
        # GPT-2: scale the init of the projections that write into the residual stream by 1/sqrt(2 n_layer),
        # so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters counted once (tied weights once). ``non_embedding`` leaves out the token and position
        embeddings (the tied LM head is the token embedding), the N of the 6N FLOPs-per-token estimate."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
            if self.wpe is not None:
                n -= self.wpe.weight.weight.numel()
            if not self.cfg.tie_weights:
                n -= self.lm_head.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token at full context, ``6N' + 12·L·H·Q·T`` (see :mod:`shared.flops`).

        N' counts the matmul weights (every ``nn.Linear``, the LM head included: with tied weights the token-embedding
        matrix is a real (C, V) matmul per token), not the token or position tables (lookups) nor biases and norm
        gains (elementwise): the FLOPs ``torch.utils.flop_counter`` counts for a forward + backward with the
        hand-written attention, exactly (tested). nanoGPT's ``estimate_mfu`` counts every parameter but the position
        table, a few percent more on a tiny model; GPT-2 small is N' = 123.5M either way to within 1%.
        """
        c = self.cfg
        n = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return gpt_flops_per_token(n, c.n_layer, c.n_head, c.n_embd // c.n_head, c.block_size)

    def set_attn_backend(self, backend: str) -> None:
        """Switch every block between the ``manual`` and ``torch`` attention (same weights)."""
        check_backend(backend)
        self.cfg.attn_backend = backend
        for block in self.blocks:
            block.attn.backend = backend

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Logits for every position (the causal-LM interface, :class:`shared.models.causal_lm.CausalLM`).

        Args:
            input_ids: (B, T) token ids, T <= block_size.
            attention_mask: optional (B, T), 1 (or True) on real tokens and 0 on padding, as in Hugging Face:
                no query attends to a padded key. With ``kv_cache`` it covers the cached positions too:
                (B, kv_cache.length + T).
            position_ids: optional (B, T) or (T,) position of each token (default ``0 .. T-1``, after a cache
                ``length .. length + T - 1``); a left-padded batch passes its own. Every position must be
                < block_size.
            kv_cache: the keys and values of the positions before these (:meth:`new_kv_cache`); this call's are
                appended, so a decode step passes only the newest token (:mod:`shared.nn.kv_cache`).

        Returns:
            ``logits`` (B, T, vocab_size).

        Raises:
            ValueError: T > block_size, a position >= block_size, or a full cache.
        """
        t = input_ids.shape[1]
        if t > self.cfg.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than model.block_size={self.cfg.block_size}")
        if kv_cache is not None and position_ids is None:
            position_ids = torch.arange(kv_cache.length, kv_cache.length + t, device=input_ids.device)  # (T,)
        if position_ids is not None and int(position_ids.max()) >= self.cfg.block_size:
            raise ValueError(f"position {int(position_ids.max())} is >= model.block_size={self.cfg.block_size}")
        key_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T_k)
        x = self.wte(input_ids)  # (B, T, C)
        if self.wpe is not None:
            x = x + (self.wpe(t) if position_ids is None else self.wpe.at(position_ids))  # (T, C) or (B, T, C)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, key_mask, position_ids, kv_cache, i)
        if kv_cache is not None:
            kv_cache.advance(t)
        return self.lm_head(self.norm_f(x))  # (B, T, V)

    def new_kv_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty :class:`shared.nn.kv_cache.KVCache` for ``batch`` sequences of at most ``max_len`` positions
        (default and upper bound: block_size), in the model's dtype and on its device.

        Raises:
            ValueError: ``max_len`` > block_size.
        """
        max_len = max_len or self.cfg.block_size
        if max_len > self.cfg.block_size:
            raise ValueError(f"a KV cache of {max_len} positions is longer than model.block_size="
                             f"{self.cfg.block_size}: positions past it have no embedding")
        w = self.wte.weight
        return KVCache(self.cfg.n_layer, batch, self.cfg.n_head, max_len, self.cfg.n_embd // self.cfg.n_head,
                       w.dtype, w.device)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T0) -> (B, T0 + max_new_tokens).

        Each step feeds the last ``block_size`` tokens (no KV cache, so the window can slide past block_size;
        :mod:`shared.models.decode` decodes with one), divides the last position's logits by ``temperature``
        (0 = greedy argmax), keeps the ``top_k`` most likely tokens (None = all) and samples from the softmax
        (:func:`shared.models.decode.sample_next`).

        Raises:
            ValueError: negative temperature or top_k < 1.
        """
        if temperature < 0 or (top_k is not None and top_k < 1):
            raise ValueError(f"generate needs temperature >= 0 and top_k >= 1 (or None); got {temperature}, {top_k}")
        was_training = self.training
        self.eval()
        from shared.models.decode import SamplingConfig, sample_next

        choose = SamplingConfig(temperature=temperature, top_k=top_k or 0)
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.cfg.block_size:])[:, -1, :]  # (B, V)
            nxt = sample_next(logits, choose, generator=generator)[:, None]  # (B, 1)
            idx = torch.cat((idx, nxt), dim=1)
        self.train(was_training)
        return idx
