"""``torchrun --nproc-per-node N -m week10_fsdp.probe --out X.json [--vocab V] [--profile P] [--bench] [k=v ...]``.

One process group of N ranks measures, for DDP, FSDP2 and FSDP2 without resharding after forward (~ZeRO-2), what
each rank holds for one real AdamW step of the week's GPT: parameters, gradients and optimizer state counted from
the local shards (:func:`shared.train.memory.shard_bytes`), the activations autograd saves (saved-tensor hooks,
:func:`shared.train.memory.measure_step_memory`) with and without per-block activation checkpointing, and, on a
GPU, ``torch.cuda.max_memory_allocated``. ``--bench`` also times training steps (tokens/s) for DDP, FSDP2 and FSDP2
+ activation checkpointing, and measures the gradient error of bf16 parameters with fp32 vs bf16 reduction. Rank 0 writes every rank's numbers to ``--out`` (JSON). The week launches it at 1, 2
and 4 ranks (``make week10`` runs at one world size; the probe is how the same code measures the others).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from shared.device import synchronize
from shared.dist import DistConfig, all_gather_objects, init_distributed, shutdown
from shared.models.gpt import GPT, GPTConfig
from shared.parallel import FSDPConfig, build_parallel, fsdp_from_accelerate
from shared.repro import seed_everything
from shared.tasks.lm import causal_lm_loss
from shared.train.memory import measure_step_memory, shard_bytes
from shared.train.optim import build_optimizer
from week10_fsdp import config

STRATEGIES = {"ddp": None, "fsdp2": {"reshard_after_forward": True},
              "fsdp2_no_reshard": {"reshard_after_forward": False}}


def _parallel(cfg: config.Week10Config, info, name: str, **fsdp):
    if name == "ddp":
        return build_parallel("ddp", info)
    return build_parallel("fsdp2", info, replace(cfg.fsdp, **{**(STRATEGIES.get(name) or {}), **fsdp}))


def _model(cfg: config.Week10Config, vocab: int, device: torch.device) -> tuple[GPT, GPTConfig]:
    seed_everything(cfg.loop.seed)
    shape = GPTConfig(vocab_size=vocab, **asdict(cfg.lm))
    return GPT(shape).to(device), shape


def _batch(cfg: config.Week10Config, vocab: int, micro: int, rank: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + rank)  # each rank its own sequences, as in training
    return torch.randint(0, vocab, (micro, cfg.lm.block_size + 1), generator=g).to(device)


def measure(cfg: config.Week10Config, info, name: str, vocab: int) -> dict:
    """One strategy's per-rank bytes (see the module docstring); the activations once more with checkpointing."""
    device = info.device
    x = _batch(cfg, vocab, cfg.memory.micro_batch, info.rank, device)
    out: dict = {"strategy": name, "world_size": info.world_size, "rank": info.rank}
    for ckpt in (False, True):
        if ckpt and name == "ddp":
            continue
        model, shape = _model(cfg, vocab, device)
        opt = build_optimizer(model, cfg.optim)
        wrapped = _parallel(cfg, info, name, activation_checkpointing=ckpt).wrap(model, opt)
        step = measure_step_memory(model, opt, lambda m=wrapped: causal_lm_loss(m(x[:, :-1]), x[:, 1:]))
        out["activations_ckpt" if ckpt else "activations"] = step.activations
        if ckpt:
            continue
        out["peak_allocated"] = step.peak_allocated
        causal_lm_loss(wrapped(x[:, :-1]), x[:, 1:]).backward()  # a second step: gradients, then the optimizer
        grads = shard_bytes(model).grads
        opt.step()
        held = shard_bytes(model, opt)
        out.update(params=held.params, grads=grads, optimizer=held.optimizer, n_params=held.n_params,
                   batch=cfg.memory.micro_batch, seq=cfg.lm.block_size, n_layer=shape.n_layer, n_embd=shape.n_embd,
                   n_head=shape.n_head, vocab_size=vocab)
    out["activations_ckpt"] = out.get("activations_ckpt")
    return out


def bench(cfg: config.Week10Config, info, name: str, vocab: int) -> dict:
    """Tokens/s of ``bench.steps`` timed AdamW steps (after ``bench.warmup``) under ``name`` (fsdp2_ac: FSDP2 with
    activation checkpointing), summed over ranks."""
    device = info.device
    model, _ = _model(cfg, vocab, device)
    opt = build_optimizer(model, cfg.optim)
    ac = name == "fsdp2_ac"
    wrapped = _parallel(cfg, info, "fsdp2" if ac else name, activation_checkpointing=ac).wrap(model, opt)
    x = _batch(cfg, vocab, cfg.bench.micro_batch, info.rank, device)
    for i in range(cfg.bench.warmup + cfg.bench.steps):
        if i == cfg.bench.warmup:
            synchronize(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        causal_lm_loss(wrapped(x[:, :-1]), x[:, 1:]).backward()
        opt.step()
    synchronize(device)
    dt = time.perf_counter() - t0
    tokens = cfg.bench.steps * x[:, :-1].numel() * info.world_size
    return {"strategy": name, "world_size": info.world_size, "tokens_per_sec": tokens / dt,
            "ms_per_step": 1e3 * dt / cfg.bench.steps}


def reduction_error(cfg: config.Week10Config, info, vocab: int) -> dict:
    """One backward of the same batch under FSDP2 in fp32 (the reference), with bf16 parameters and fp32 gradient
    reduction, and with bf16 parameters and bf16 reduction: each variant's gradient error relative to the reference,
    ``||g - g_ref|| / ||g_ref||`` over every parameter (the reduce dtype's share of the error is the difference)."""
    device = info.device
    x = _batch(cfg, vocab, cfg.memory.micro_batch, info.rank, device)
    grads = {}
    for name, param, reduce in (("fp32", "fp32", "fp32"), ("bf16 params, fp32 reduce", "bf16", "fp32"),
                                ("bf16 params, bf16 reduce", "bf16", "bf16")):
        model, _ = _model(cfg, vocab, device)
        wrapped = build_parallel("fsdp2", info, replace(cfg.fsdp, param_dtype=param, reduce_dtype=reduce)).wrap(model)
        causal_lm_loss(wrapped(x[:, :-1]), x[:, 1:]).backward()
        grads[name] = torch.cat([p.grad.full_tensor().float().flatten() for p in model.parameters()])
    ref = grads.pop("fp32")
    return {"world_size": info.world_size, **{k: float((g - ref).norm() / ref.norm()) for k, g in grads.items()},
            "elements_changed_by_bf16_reduce": int((grads["bf16 params, bf16 reduce"]
                                                    != grads["bf16 params, fp32 reduce"]).sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="week10_fsdp.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--bench", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = config.load(args.profile, args.overrides)
    info = init_distributed(DistConfig(cfg.dist.backend, cfg.dist.timeout_s), cfg.loop.device)
    try:
        accel = fsdp_from_accelerate()
        names = ["fsdp2"] if accel is not None else list(STRATEGIES)
        if accel is not None:
            # the sharding options accelerate's config file asked for; the dtypes stay the week's
            cfg.fsdp = replace(accel, param_dtype=cfg.fsdp.param_dtype, reduce_dtype=cfg.fsdp.reduce_dtype)
        rows = [measure(cfg, info, n, args.vocab) for n in names]
        speed = [bench(cfg, info, n, args.vocab) for n in ("ddp", "fsdp2", "fsdp2_ac")] if args.bench else []
        reduction = reduction_error(cfg, info, args.vocab) if args.bench and info.world_size > 1 else None
        every = all_gather_objects(rows)
        if info.is_main:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            launcher = "accelerate" if accel is not None else "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "-"
            fsdp = asdict(cfg.fsdp) if accel is not None else asdict(FSDPConfig())
            args.out.write_text(json.dumps({"world_size": info.world_size, "launcher": launcher, "fsdp": fsdp,
                                            "device": str(info.device), "rows": [r for rank in every for r in rank],
                                            "bench": speed, "reduction": reduction}, indent=2) + "\n")
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
