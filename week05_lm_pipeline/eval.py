"""``python -m week05_lm_pipeline.eval CKPT [--tokenizer T] [--data VAL.bin] [--batch-size B] [--max-tokens N]``

Val loss (nats/token) and perplexity of a week-5 checkpoint on the fixed validation stream: every window of
``block_size + 1`` tokens of ``val.bin`` in order, so two calls give the same number and the batch size does
not change it. The tokenizer and the val file default to the ones recorded in the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

from shared.checkpoint import load_checkpoint
from shared.data.pack import open_token_file
from shared.data.tokenizer import BPETokenizer
from shared.train.perplexity import stream_loss
from shared.train.trainer import resolve_device
from week05_lm_pipeline.stages import load_for_eval


def evaluate_checkpoint(ckpt: str, tokenizer: str | None = None, data: str | None = None, batch_size: int = 16,
                        max_tokens: int = 0, device: str = "auto") -> dict[str, float]:
    """``{"loss", "perplexity", "tokens"}`` of ``ckpt`` on ``data`` (see the module docstring).

    Raises:
        CheckpointError: the checkpoint is missing, corrupt, or was trained with another tokenizer.
        TokenFileError: the val file is missing, truncated, or packed with another tokenizer.
    """
    state = load_checkpoint(ckpt)  # read once: its meta names the tokenizer and val file, its weights the model
    meta = state["meta"]
    tok = BPETokenizer.load(tokenizer or meta["tokenizer"])
    model = load_for_eval(ckpt, tok, resolve_device(device), state)
    stream, _ = open_token_file(data or meta["val_data"], tok.sha256)
    return stream_loss(model, stream, model.cfg.block_size, batch_size, max_tokens=max_tokens)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="week05_lm_pipeline.eval", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="a checkpoint, e.g. runs/week05/cpu/gpt-<hash>/checkpoints/best.pt")
    p.add_argument("--tokenizer", help="tokenizer .model (default: the one recorded in the checkpoint)")
    p.add_argument("--data", help="packed val .bin (default: the one recorded in the checkpoint)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=0, help="evaluate the first N tokens only (0 = all)")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    out = evaluate_checkpoint(a.ckpt, a.tokenizer, a.data, a.batch_size, a.max_tokens, a.device)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
