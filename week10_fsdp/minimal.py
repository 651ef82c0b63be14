"""FSDP2 in one page: ``torchrun --standalone --nproc-per-node 2 week10_fsdp/minimal.py``.

The same stack of Linear layers is trained one step with AdamW under DDP and under FSDP2 (``fully_shard`` per
layer, then the root); each rank counts the bytes it holds for parameters, gradients and AdamW's two moments. DDP
holds all of them on every rank (16 bytes per parameter in fp32); FSDP2 holds 1/N of each. Prints one JSON line per
strategy from rank 0. Needs nothing but torch (gloo on CPU, nccl on GPUs).
"""

import json
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel


def local_bytes(t):
    if t is None:
        return 0
    t = t.to_local() if hasattr(t, "to_local") else t  # a DTensor: only this rank's shard
    return t.numel() * t.element_size()


def held(model, opt):
    params = list(model.parameters())
    state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    return {"params": sum(local_bytes(p) for p in params), "grads": sum(local_bytes(p.grad) for p in params),
            "optimizer": sum(local_bytes(v) for v in state)}


def one_step(strategy, device, width=512, depth=8):
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    if strategy == "ddp":
        model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    else:
        for layer in model:
            fully_shard(layer)  # one all-gather per layer: only one layer is ever whole
        fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)  # after fully_shard: it must see the sharded parameters
    x = torch.randn(16, width, device=device)
    model(x).square().mean().backward()
    opt.step()  # the gradients stay until zero_grad: count them with the optimizer state
    return {"strategy": strategy, "n_params": n_params, **held(model, opt)}


def main():
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if backend == "nccl" else torch.device("cpu")
    for strategy in ("ddp", "fsdp2"):
        row = one_step(strategy, device)
        total = row["params"] + row["grads"] + row["optimizer"]
        row.update(world_size=world, total=total, bytes_per_param=total / row["n_params"])
        if rank == 0:
            print(json.dumps(row), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
