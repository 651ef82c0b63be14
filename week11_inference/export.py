"""The project's GPT outside eager PyTorch: ``torch.export`` to a graph, ONNX from that graph, onnxruntime on the CPU.

``torch.export.export`` (https://pytorch.org/docs/stable/export.html) traces ``input_ids -> logits`` into an
``ExportedProgram``: one ATen graph with the weights as inputs, no Python left. The batch and the sequence length
are symbolic (``torch.export.Dim``, T in [1, block_size]), so one program serves every shape the model accepts; the
model's Python checks (T <= block_size) become range constraints of the program. ``torch.onnx.export(program,
dynamo=True)`` translates that graph with onnxscript (the TorchScript exporter is not used), and
``onnxruntime.InferenceSession`` runs the file on the ``CPUExecutionProvider``. The exported forward is the plain
full-sequence call (no attention mask, no KV cache: those carry Python state); it must equal eager PyTorch to
:attr:`ExportConfig.atol` on the logits, on the example shape and on other batch sizes and lengths.

ONNX does not record the upper bound of a symbolic dimension, so :class:`OnnxLM` checks the input itself: a sequence
longer than block_size is refused with the model's own message instead of an out-of-range gather inside onnxruntime.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.config import at_least
from week11_inference.quantize import interleaved_seconds, torch_threads


@dataclass
class ExportConfig:
    """What is exported, where it is written, and how it is checked and timed."""

    name: str = "gpt"  # file stem: <out_dir>/<name>.onnx
    dynamic: bool = True  # symbolic batch and sequence length (False: fixed to the example's shape)
    max_batch: int = at_least(1, 64)  # upper bound of the symbolic batch
    batch: int = at_least(2, 2, "torch.export specialises a dynamic batch dimension traced at size 1")  # rows of the example (and timed) input
    seq_len: int = at_least(0, 0)  # tokens of the example input (0 = block_size)
    check_shapes: list[tuple[int, int]] = field(default_factory=lambda: [(1, 1), (3, 5)])  # (B, T) also checked
    atol: float = 1e-4  # the most |logits_ort - logits_eager| may differ, fp32
    threads: int = at_least(1, 1)  # intra-op threads of torch and onnxruntime while timing
    warmup: int = at_least(0, 2)  # untimed calls before timing
    repeats: int = at_least(1, 10)  # timed calls; the median is reported
    seed: int = 0  # of the example ids


class LogitsOnly(nn.Module):
    """``input_ids (B, T) -> logits (B, T, V)`` of a GPT: the one signature that is exported."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)


def example_ids(model: nn.Module, cfg: ExportConfig, batch: int | None = None,
                seq_len: int | None = None) -> torch.Tensor:
    """Seeded random ids (batch, seq_len), int64; defaults from ``cfg`` (seq_len 0 = block_size)."""
    t = seq_len or cfg.seq_len or model.cfg.block_size
    g = torch.Generator().manual_seed(cfg.seed + 1000 * t + (batch or cfg.batch))
    return torch.randint(0, model.cfg.vocab_size, (batch or cfg.batch, t), generator=g)


def _dynamic_shapes(model: nn.Module, cfg: ExportConfig) -> dict[str, Any] | None:
    if not cfg.dynamic:
        return None
    from torch.export import Dim

    return {"input_ids": {0: Dim("batch", min=1, max=cfg.max_batch), 1: Dim("seq", min=1, max=model.cfg.block_size)}}


def export_program(model: nn.Module, cfg: ExportConfig | None = None) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``LogitsOnly(model)`` in eval mode on the example input (non-strict tracing).

    Raises:
        ValueError: ``cfg.seq_len`` > block_size.
        torch._dynamo.exc.UserError: the model cannot be traced with the requested dynamic shapes.
    """
    cfg = cfg or ExportConfig()
    if cfg.seq_len > model.cfg.block_size:
        raise ValueError(f"export seq_len={cfg.seq_len}: a sequence of {cfg.seq_len} tokens is longer than "
                         f"model.block_size={model.cfg.block_size}; set seq_len <= block_size (0 = block_size)")
    wrapped = LogitsOnly(model.eval()).eval()
    ids = example_ids(model, cfg)
    with torch.no_grad():
        return torch.export.export(wrapped, (ids,), dynamic_shapes=_dynamic_shapes(model, cfg), strict=False)


def export_onnx(program: torch.export.ExportedProgram, model: nn.Module, out_dir: str | Path,
                cfg: ExportConfig | None = None) -> Path:
    """Write ``<out_dir>/<cfg.name>.onnx`` from an exported program (``torch.onnx.export(..., dynamo=True)``,
    onnxscript), weights inside the one file (so a model must stay under protobuf's 2 GB); atomically: written to
    a temporary file in ``out_dir``, then renamed.
    Inputs ``input_ids`` (int64, (batch, seq)), output ``logits`` (float32, (batch, seq, vocab))."""
    cfg = cfg or ExportConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{cfg.name}.onnx"
    onnx_program = torch.onnx.export(program, (example_ids(model, cfg),), dynamo=True,
                                     dynamic_shapes=_dynamic_shapes(model, cfg), input_names=["input_ids"],
                                     output_names=["logits"], verbose=False)
    tmp = out_dir / f".{path.name}.{os.getpid()}.tmp"  # same folder: the rename is atomic
    try:
        onnx_program.save(str(tmp), external_data=False)  # one file: a model under protobuf's 2 GB limit
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class OnnxLM:
    """An onnxruntime session of an exported GPT on the CPU: ``lm(ids) -> logits`` as a torch tensor.

    Args:
        threads: onnxruntime's intra-op threads (inter-op 1: the graph runs sequentially).
        block_size: the model's context; longer inputs are refused (ONNX keeps no bound on the length).
    """

    def __init__(self, path: str | Path, block_size: int, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.block_size = block_size
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, T) ids -> (B, T, V) fp32 logits.

        Raises:
            ValueError: ids not 2-D, or T > block_size (the GPT's own message).
        """
        ids = np.asarray(input_ids, dtype=np.int64)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {ids.shape}")
        if ids.shape[1] > self.block_size:
            raise ValueError(f"sequence of {ids.shape[1]} tokens is longer than model.block_size={self.block_size}")
        return torch.from_numpy(self.session.run(["logits"], {"input_ids": ids})[0])


def agreement(model: nn.Module, runner: Any, inputs: Sequence[torch.Tensor],
              atol: float = 1e-4) -> list[dict[str, Any]]:
    """Eager logits vs ``runner(ids)`` (an :class:`OnnxLM` or an exported module) on each input:
    ``[{"batch", "seq_len", "max_abs_diff", "ok" (<= atol)}]``."""
    rows = []
    for ids in inputs:
        with torch.no_grad():
            ref = model(ids)
            got = runner(ids)
        diff = (got.float() - ref.float()).abs().max().item()
        rows.append({"batch": ids.shape[0], "seq_len": ids.shape[1], "max_abs_diff": diff, "ok": diff <= atol})
    return rows


def time_backends(runners: dict[str, Any], ids: torch.Tensor, cfg: ExportConfig | None = None) -> list[dict[str, Any]]:
    """Forward tokens per second of each ``name -> callable(ids)`` on the same input, torch and onnxruntime both
    on ``cfg.threads`` intra-op threads (an :class:`OnnxLM` is built with its own count), the backends timed in
    turns: ``[{"backend", "forward_tok_s", "forward_ms", "batch", "seq_len", "threads"}]`` (median of
    ``cfg.repeats``)."""
    cfg = cfg or ExportConfig()
    with torch_threads(cfg.threads), torch.no_grad():
        secs = interleaved_seconds({k: (lambda run=run: run(ids)) for k, run in runners.items()}, cfg.warmup,
                                   cfg.repeats)
    return [{"backend": k, "forward_tok_s": ids.numel() / s, "forward_ms": 1e3 * s, "batch": ids.shape[0],
             "seq_len": ids.shape[1], "threads": cfg.threads} for k, s in secs.items()]


def export_and_check(model: nn.Module, out_dir: str | Path, cfg: ExportConfig | None = None) -> dict[str, Any]:
    """The whole section for one GPT: torch.export, ONNX file, agreement of both with eager, speed of all three.

    Returns:
        ``{"onnx_path", "onnx_bytes", "dynamic", "agreement": [rows of :func:`agreement`, with "backend"
        ("torch.export" or "onnxruntime")], "max_abs_diff" (onnxruntime, over all inputs), "ok" (every row within
        atol), "speed": [rows of :func:`time_backends`: "eager", "torch.export", "onnxruntime"]}``.
    """
    cfg = cfg or ExportConfig()
    model = model.cpu().eval()
    program = export_program(model, cfg)
    path = export_onnx(program, model, out_dir, cfg)
    ort_lm = OnnxLM(path, model.cfg.block_size, cfg.threads)
    exported = program.module()
    inputs = [example_ids(model, cfg)]
    if cfg.dynamic:
        inputs += [example_ids(model, cfg, b, min(t, model.cfg.block_size)) for b, t in cfg.check_shapes]
    rows = []
    for backend, runner in (("torch.export", exported), ("onnxruntime", ort_lm)):
        rows += [{"backend": backend, **r} for r in agreement(model, runner, inputs, cfg.atol)]
    speed = time_backends({"eager": model, "torch.export": exported, "onnxruntime": ort_lm}, inputs[0], cfg)
    worst = max(r["max_abs_diff"] for r in rows if r["backend"] == "onnxruntime")
    return {"onnx_path": str(path), "onnx_bytes": path.stat().st_size, "dynamic": cfg.dynamic, "agreement": rows,
            "max_abs_diff": worst, "ok": all(r["ok"] for r in rows), "speed": speed}
