"""The pre-flight estimate of a pre-training run: parameters, tokens, FLOPs, time and memory, before it starts.

Printed and logged before every budgeted run, then set beside what the run measured (:func:`compare`), so a learner
sees how far back-of-the-envelope arithmetic gets: FLOPs from the parameter count, time from a few timed steps,
memory from the sizes of weights, optimizer state and activations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from shared.models.gpt import GPT, GPTConfig
from shared.tasks.lm import LMTask
from shared.train.config import LoopConfig, OptimConfig
from shared.train.throughput import time_train_steps

GIB = 2**30


@dataclass(frozen=True)
class Preflight:
    """What a run is expected to cost.

    FLOPs: ``flops = flops_per_token · tokens`` with ``flops_per_token = 6 N' + 12 L H Q T`` (nanoGPT's
    ``estimate_mfu``: N' counts every matmul weight, the LM head included; the second term is the attention scores
    and values, :mod:`shared.flops`), beside Kaplan et al.'s ``C = 6 N D`` (``flops_6nd``: N without embeddings, no
    attention term; https://arxiv.org/abs/2001.08361, section 2.1), the figure scaling laws are fitted in.
    """

    n_params: int  # every parameter, tied ones once
    n_params_non_embedding: int  # N of C = 6ND (token and position embeddings left out)
    tokens: int  # D: training tokens of the run
    flops_per_token: float  # 6 N' + 12 L H Q T
    flops: float  # flops_per_token x tokens
    flops_6nd: float  # 6 x n_params_non_embedding x tokens
    probe_tokens_per_sec: float  # measured on a few training steps of this model and batch (tokens/s)
    seconds: float  # expected training time: tokens / probe_tokens_per_sec (evals not included)
    weights_bytes: int  # fp32 weights + gradients + optimizer state
    activation_bytes: int  # see memory_bytes()
    memory_bytes: int  # weights_bytes + activation_bytes

    def describe(self) -> str:
        """One line for the console and the log."""
        return (f"pre-flight: N {self.n_params:,} ({self.n_params_non_embedding:,} non-embedding), D {self.tokens:,} "
                f"tokens, {self.flops:.3g} FLOPs (6ND {self.flops_6nd:.3g}), ~{self.seconds:,.1f} s at "
                f"{self.probe_tokens_per_sec:,.0f} tokens/s, ~{self.memory_bytes / GIB:.3f} GiB "
                f"({self.weights_bytes / GIB:.3f} weights + grads + optimizer, {self.activation_bytes / GIB:.3f} "
                "activations)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def memory_bytes(model: GPTConfig, optim: OptimConfig, loop: LoopConfig, n_params: int) -> tuple[int, int]:
    """``(weights + gradients + optimizer state, activations)`` in bytes for one rank.

    - Weights, gradients: 4 bytes each per parameter (fp32 master weights, also under bf16 autocast); AdamW keeps two
      fp32 moments (8 bytes), SGD with momentum one (4 bytes).
    - Activations kept for the backward pass, per micro-batch of B sequences of T tokens (Korthikanti et al. 2022,
      https://arxiv.org/abs/2205.05198, eq. 1, no parallelism): each of the L layers keeps
      ``B T C (34 + 5 H T / C)`` bytes of 16-bit activations; the ``5 H T / C`` term is the T x T attention
      probabilities, which SDPA (``attn_backend=torch``) does not keep. Scaled by 2 for fp32 activations. Plus the
      logits and their fp32 softmax for the loss: ``2 B T V`` x 4 bytes.
    """
    state = 4 + 4 + (8 if optim.name == "adamw" else 4)
    b, t, c, h = loop.micro_batch, model.block_size, model.n_embd, model.n_head
    per_layer = b * t * c * (34 + (5 * h * t / c if model.attn_backend == "manual" else 0))
    scale = 1 if loop.precision in ("bf16", "fp16") else 2
    activations = model.n_layer * per_layer * scale + 2 * b * t * model.vocab_size * 4
    return n_params * state, int(activations)


def preflight(model_cfg: GPTConfig, optim: OptimConfig, loop: LoopConfig, tokens: int, probe_stream: Any,
              device: torch.device | str = "cpu", probe_steps: int = 3, probe_warmup: int = 2,
              probe_s: float = 1.0, max_probe_steps: int = 50) -> Preflight:
    """The estimate for training ``model_cfg`` on ``tokens`` tokens with ``optim`` and ``loop``'s batch: FLOPs and
    memory from the sizes, time from timed steps of a fresh copy of the model on ``probe_stream`` (a 1-D token
    array; the run's own weights and RNG are not touched): ``probe_warmup`` untimed steps, ``probe_steps`` timed
    ones, and when those took under ``probe_s`` seconds, as many more (up to ``max_probe_steps``) as fill it, timed
    again (a few milliseconds' steps are too noisy to extrapolate from).

    Raises:
        ValueError: ``tokens`` < 1 or ``probe_steps`` < 1.
    """
    if tokens < 1 or probe_steps < 1:
        raise ValueError(f"preflight needs tokens >= 1 and probe_steps >= 1, got {tokens} and {probe_steps}")
    rng = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        model = GPT(model_cfg).to(device)
        task = LMTask(probe_stream, probe_stream, model_cfg.block_size, 0, 1, loop.micro_batch)

        def timed(steps: int, warmup: int) -> dict[str, float]:
            return time_train_steps(model, task, optim, micro_batch=loop.micro_batch, steps=steps, warmup=warmup,
                                    precision=loop.precision, grad_clip=loop.grad_clip)

        probe = timed(probe_steps, probe_warmup)
        more = min(max_probe_steps, int(probe_s * 1e3 / max(probe["ms_per_step"], 1e-3)))
        if more > probe_steps:
            probe = timed(more, 0)
    finally:
        torch.random.set_rng_state(rng)
    n_all, n_non_emb, per_token = model.num_params(False), model.num_params(), model.flops_per_token()
    weights, activations = memory_bytes(model_cfg, optim, loop, n_all)
    return Preflight(n_all, n_non_emb, tokens, per_token, per_token * tokens, 6.0 * n_non_emb * tokens,
                     probe["tokens_per_sec"], tokens / probe["tokens_per_sec"], weights, activations,
                     weights + activations)


def compare(estimate: Preflight, train_time_s: float, tokens: int, peak_memory_gib: float | None) -> dict[str, Any]:
    """Estimate beside actual: ``{"seconds", "actual_seconds", "time_ratio", "tokens", "actual_tokens",
    "memory_gib", "actual_memory_gib", "memory_ratio"}`` (ratio = actual / estimate; memory ratio None when the
    actual peak is unknown)."""
    est_gib = estimate.memory_bytes / GIB
    return {"seconds": estimate.seconds, "actual_seconds": train_time_s,
            "time_ratio": train_time_s / estimate.seconds if estimate.seconds > 0 else float("inf"),
            "tokens": estimate.tokens, "actual_tokens": tokens, "memory_gib": est_gib,
            "actual_memory_gib": peak_memory_gib,
            "memory_ratio": None if peak_memory_gib is None or est_gib <= 0 else peak_memory_gib / est_gib}
