"""``torchrun --nproc-per-node N -m week10_fsdp.reshard --ckpt DIR --out X.json [--profile P]``: load a DCP
checkpoint of the week's FSDP2 LM run into an FSDP2 model on N ranks (a world size the run was not saved with: DCP
reshards) and score it on the run's own eval batches. Rank 0 writes ``{"world_size", "val_loss", "train_loss",
"step"}``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from shared.dcp import DCPCheckpointer
from shared.dist import DistConfig, init_distributed, shutdown
from shared.models.gpt import GPT, GPTConfig
from shared.tasks.lm import LMTask
from week10_fsdp import config
from week10_fsdp.data import lm_data
from week10_fsdp.runs import EVAL_ITERS, strategy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="week10_fsdp.reshard", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--eval-batch", type=int, required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = config.load(args.profile, args.overrides)
    info = init_distributed(DistConfig(cfg.dist.backend, cfg.dist.timeout_s), cfg.loop.device)
    try:
        data = lm_data(cfg, info)
        meta = json.loads((args.ckpt / "meta.json").read_text())
        model = GPT(GPTConfig(**meta["model_config"])).to(info.device)
        strategy(cfg, info, "fsdp2").wrap(model)
        ck = DCPCheckpointer(args.ckpt.parent).load(model, None, str(args.ckpt))
        task = LMTask(data.train, data.val, model.cfg.block_size, cfg.loop.seed, EVAL_ITERS, args.eval_batch)
        model.eval()
        with torch.no_grad():
            scores = task.evaluate(model)
        if info.is_main:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"world_size": info.world_size, "step": ck.step,
                                            "saved_world_size": ck.meta.get("world_size"), **scores}) + "\n")
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
