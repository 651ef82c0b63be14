"""``python -m week07_sft.bench --impl ours|trl --base DIR --out FILE.json ...``: time SFT steps on one batch.

Each implementation runs in its own process (so its peak resident memory is its own): the model loaded from
``--base``, the first ``--batch`` training records that fit, one untimed warm-up step, then ``--steps`` timed
optimizer steps (forward, loss, backward, clipping, AdamW) on that same batch, fp32. ``ours`` is
:func:`shared.train.step.train_step` on :class:`shared.tasks.sft.SFTTask`; ``trl`` is ``SFTTrainer.training_step``
(TRL's loss with its extra metrics, backward) plus the same clipping and AdamW step. :func:`run_bench` starts both
and returns their rows for the log's CSV.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _time_ours(base: Path, records, template: str, max_length: int, batch: int, steps: int, lr: float) -> dict:
    import torch

    from shared.data.tokenizer import load_tokenizer
    from shared.tasks.sft import SFTTask, encode_records
    from shared.train.config import OptimConfig
    from shared.train.optim import build_optimizer
    from shared.train.step import train_step
    from week07_sft.runs import load_model

    tok = load_tokenizer(base)
    enc = encode_records(records, tok, template, max_length).examples[:batch]
    task = SFTTask(enc, enc, tok.pad_id if tok.pad_id is not None else tok.eos_id, 0)
    model = load_model(base, torch.device("cpu")).train()
    opt = build_optimizer(model, OptimConfig(lr=lr, weight_decay=0.0, beta2=0.999))
    b = task.batch(0, 0, 1, batch)
    times = []
    for _i in range(steps + 1):
        t0 = time.perf_counter()
        train_step(model, opt, [b], task.loss, grad_clip=1.0)
        times.append(time.perf_counter() - t0)
    return {"times": times[1:], "tokens": int(b["attention_mask"].sum()), "padded": b["input_ids"].numel()}


def _time_trl(base: Path, records, template: str, max_length: int, batch: int, steps: int, lr: float) -> dict:
    import tempfile

    import torch

    from shared.data.tokenizer import load_tokenizer
    from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
    from week07_sft.trl_ref import _hf_model, fitting, sft_config, trl_dataset

    tok = load_tokenizer(base)
    picked = fitting(records, tok, template, max_length)[:batch]
    from trl import SFTTrainer

    model = _hf_model(base).train()
    with tempfile.TemporaryDirectory() as tmp:
        args = sft_config(tmp, OptimConfig(lr=lr, weight_decay=0.0, beta2=0.999), ScheduleConfig(warmup_steps=0),
                          LoopConfig(micro_batch=batch, max_steps=steps + 1, device="cpu"), max_length)
        trainer = SFTTrainer(model=model, args=args, train_dataset=trl_dataset(picked, tok, template),
                             processing_class=tok.hf)
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train; training_step reads it
        b = trainer.data_collator([trainer.train_dataset[i] for i in range(len(picked))])
        times = []
        for _i in range(steps + 1):
            t0 = time.perf_counter()
            trainer.training_step(model, dict(b))
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
    return {"times": times[1:], "tokens": int(b["attention_mask"].sum()), "padded": b["input_ids"].numel()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="week07_sft.bench", description=__doc__.splitlines()[0])
    p.add_argument("--impl", choices=("ours", "trl"), required=True)
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--records", type=Path, required=True, help="JSON list of instruction records")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--template", default="alpaca")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    a = p.parse_args(argv)
    import torch

    from shared.data.instruct import InstructionRecord
    from shared.profiling import peak_memory_gib

    records = [InstructionRecord(**r) for r in json.loads(a.records.read_text())]
    fn = _time_ours if a.impl == "ours" else _time_trl
    r = fn(a.base, records, a.template, a.max_length, a.batch, a.steps, a.lr)
    s = sorted(r["times"])
    med = s[len(s) // 2]
    a.out.write_text(json.dumps({"impl": a.impl, "steps": a.steps, "batch": a.batch, "tokens": r["tokens"],
                                 "padded_tokens": r["padded"], "s_per_step": med, "s_per_step_all": r["times"],
                                 "tokens_per_sec": r["tokens"] / med, "threads": torch.get_num_threads(),
                                 "peak_rss_gib": peak_memory_gib(torch.device("cpu"))}) + "\n")
    return 0


def run_bench(base: Path, records, out_dir: Path, template: str, max_length: int, batch: int, steps: int,
              lr: float) -> list[dict]:
    """Run both implementations, ``ours`` then ``trl``, each in a fresh process; their result rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = out_dir / "bench_records.json"
    rec.write_text(json.dumps([r.to_json() for r in records]))
    rows = []
    for impl in ("ours", "trl"):
        out = out_dir / f"bench-{impl}.json"
        subprocess.run([sys.executable, "-m", "week07_sft.bench", "--impl", impl, "--base", str(base), "--records",
                        str(rec), "--out", str(out), "--template", template, "--max-length", str(max_length),
                        "--batch", str(batch), "--steps", str(steps), "--lr", str(lr)], check=True,
                       env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
        rows.append(json.loads(out.read_text()))
    return rows


if __name__ == "__main__":
    sys.exit(main())
