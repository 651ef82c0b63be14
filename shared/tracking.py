"""Metric logging: the :class:`MetricLogger` interface (a no-op), the CSV + TensorBoard logger of a run
(:class:`FileLogger`), rank-0 console output and the one fixed-format step line.

Tasks and loops log through the interface and never know where rows go. The CSV is the source of truth for
reports. It is kept in memory and rewritten atomically on :meth:`FileLogger.flush`, so its header can grow as new
metrics appear and a resumed run can drop the rows logged after its checkpoint (they would otherwise appear twice).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import Any

from shared.atomic import atomic_write_text

BASE_FIELDS = ["run_id", "seed", "phase", "step", "epoch"]


def is_rank0() -> bool:
    """True on the process that owns console output (``RANK`` unset or 0)."""
    return int(os.environ.get("RANK", "0")) == 0


def progress_enabled() -> bool:
    """Progress bars only for a person at a terminal: not under CI, not on other ranks."""
    return is_rank0() and not os.environ.get("CI") and sys.stderr.isatty()


def console(msg: str) -> None:
    """Print ``msg`` on rank 0 only (through tqdm, so progress bars are not broken)."""
    if is_rank0():
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stdout)
        sys.stdout.flush()


def format_step(step: int, metrics: dict[str, float], total: int | None = None) -> str:
    """The one fixed-format step line: ``step 100/1200 | loss 0.3120 | lr 1.00e-01 | dt 12.3ms | tok/s 5,314 |
    mfu 36.3%`` (``dt`` in seconds, ``mfu`` as a fraction; other floats to 4 decimals)."""
    parts = [f"step {step}" + (f"/{total}" if total else "")]
    for k, v in metrics.items():
        if k == "lr":
            parts.append(f"lr {v:.2e}")
        elif k == "dt":
            parts.append(f"dt {v * 1e3:.1f}ms")
        elif k == "tokens_per_sec":
            parts.append(f"tok/s {v:,.0f}")
        elif k == "mfu":
            parts.append(f"mfu {v:.1%}")
        elif isinstance(v, float):
            parts.append(f"{k} {v:.4f}" if abs(v) < 1e4 else f"{k} {v:,.0f}")
        else:
            parts.append(f"{k} {v}")
    return " | ".join(parts)


class MetricLogger:
    """Where metric rows go: the interface, and the no-op implementation (rows go nowhere).

    ``log(phase, step, epoch, **metrics)`` records a row (``phase`` is e.g. ``train`` or ``val``; metrics are
    scalars); ``resume(step)`` forgets rows after ``step`` (a resumed run); ``flush`` makes the rows durable;
    ``close`` flushes and releases files.
    """

    def resume(self, step: int) -> None:
        """Keep only rows with ``step <= step``."""

    def log(self, phase: str, step: int, epoch: int = 0, **metrics: float) -> None:
        """Record one row."""

    def flush(self) -> None:
        """Make every row so far durable."""

    def close(self) -> None:
        """Flush and release."""
        self.flush()


class FileLogger(MetricLogger):
    """Logs metrics of one run to ``<run_dir>/metrics.csv`` and ``<run_dir>/tb``.

    Args:
        run_dir: the run directory.
        run_id: identifier written in every row.
        seed: the run's seed, written in every row.
        tensorboard: also write TensorBoard event files (rank 0 only).
    """

    def __init__(self, run_dir: str | Path, run_id: str, seed: int, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.run_id, self.seed = run_id, seed
        self.rows: list[dict[str, Any]] = []
        self.fields = list(BASE_FIELDS)
        self._tb_dir = Path(run_dir) / "tb" if tensorboard and is_rank0() else None
        self._tb = None
        self._tb_pending: list[tuple[str, float, int]] = []  # written at flush: TensorBoard's ~1 s import waits
        self._purge_step: int | None = None

    def resume(self, step: int) -> None:
        """Reload the CSV, keeping only rows with ``step <= step`` (rows after the checkpoint go); TensorBoard
        events after ``step`` are purged at the first flush."""
        if self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or BASE_FIELDS)
                self.rows = [r for r in reader if int(r["step"]) <= step]
        self._purge_step = step + 1

    def log(self, phase: str, step: int, epoch: int = 0, **metrics: float) -> None:
        """Record one row: ``phase`` is e.g. ``train`` or ``val``; metrics are scalars."""
        for k in metrics:
            if k not in self.fields:
                self.fields.append(k)
        self.rows.append({"run_id": self.run_id, "seed": self.seed, "phase": phase, "step": step, "epoch": epoch, **metrics})
        if self._tb_dir is not None:
            self._tb_pending += [(f"{phase}/{k}", v, step) for k, v in metrics.items()]

    def flush(self) -> None:
        """Atomically rewrite the CSV with every row so far; write the pending TensorBoard scalars."""
        if not is_rank0():
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="raise")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())
        if self._tb_pending:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter  # ~1 s import, paid at the first flush

                self._tb = SummaryWriter(str(self._tb_dir), purge_step=self._purge_step)
            for tag, value, step in self._tb_pending:
                self._tb.add_scalar(tag, value, step)
            self._tb_pending = []
            self._tb.flush()

    def close(self) -> None:
        """Flush and close TensorBoard."""
        self.flush()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
