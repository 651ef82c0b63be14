"""``python -m week05_lm_pipeline.eval CKPT [--tokenizer T] [--data VAL.bin] [--batch-size B] [--max-tokens N]``

Val loss (nats/token) and perplexity of a week-5 checkpoint (a folder such as
``runs/week05/cpu/gpt-<hash>/checkpoints/best``) on the fixed validation stream: every window of
``block_size + 1`` tokens of ``val.bin`` in order, so two calls give the same number and the batch size does
not change it. The tokenizer and the val file default to the ones recorded in the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

from shared.checkpoint import CheckpointError
from shared.cli import run_week
from shared.data.pack import open_token_file
from shared.device import resolve_device
from shared.models.loading import load_lm_for_eval
from shared.train.perplexity import stream_loss


def evaluate_checkpoint(ckpt: str, tokenizer: str | None = None, data: str | None = None, batch_size: int = 16,
                        max_tokens: int = 0, device: str = "auto") -> dict[str, float]:
    """``{"loss", "perplexity", "tokens"}`` of ``ckpt`` on ``data`` (see the module docstring).

    Raises:
        ValueError: ``batch_size`` < 1 or ``max_tokens`` < 0.
        CheckpointError: the checkpoint is missing, incomplete, not a GPT, records no val file (and none is given),
            or was trained with another tokenizer.
        TokenFileError: the val file is missing, truncated, corrupt, or packed with another tokenizer.
        TooFewTokensError: the val stream (its first ``max_tokens``) is shorter than one window.
        DeviceError: an unknown device, or CUDA asked for where there is none.
    """
    if batch_size < 1 or max_tokens < 0:
        raise ValueError(f"evaluate_checkpoint needs batch_size >= 1 and max_tokens >= 0, got {batch_size}, {max_tokens}")
    lm = load_lm_for_eval(ckpt, tokenizer, resolve_device(device))
    if data is None and not lm.checkpoint.meta.get("val_data"):
        raise CheckpointError(f"{ckpt} records no val file (it was not trained by week 5's pipeline): pass --data "
                              "with a packed val .bin made with the tokenizer it was trained with")
    stream, _ = open_token_file(data or lm.checkpoint.meta["val_data"], lm.tokenizer.sha256)
    return stream_loss(lm.model, stream, lm.model.cfg.block_size, batch_size, max_tokens=max_tokens)


def _at_least(lo: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ({what})") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} is not >= {lo} ({what})")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="week05_lm_pipeline.eval", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="a checkpoint folder, e.g. runs/week05/cpu/gpt-<hash>/checkpoints/best")
    p.add_argument("--tokenizer", help="tokenizer file, .bpe.json or sentencepiece .model (default: the one recorded in the checkpoint)")
    p.add_argument("--data", help="packed val .bin (default: the one recorded in the checkpoint)")
    p.add_argument("--batch-size", type=_at_least(1, "windows per forward pass"), default=16,
                   help="windows per forward pass (>= 1; the result does not depend on it)")
    p.add_argument("--max-tokens", type=_at_least(0, "0 = every token"), default=0,
                   help="evaluate the first N tokens only (0 = all)")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    out = evaluate_checkpoint(a.ckpt, a.tokenizer, a.data, a.batch_size, a.max_tokens, a.device)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_week(main))
