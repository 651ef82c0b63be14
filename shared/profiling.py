"""Where the time and memory of a training step go: phase timers, peak memory, torch.profiler traces.

* :class:`StepTimer` splits each step into data wait, forward, backward and optimizer step. On a
  GPU, kernels run asynchronously, so each phase boundary synchronises the device; that costs a
  little throughput, which is why timing is switched on for measurement runs only.
* :func:`peak_memory_gib`: CUDA ``max_memory_allocated`` on a GPU, the process's peak resident set
  (``VmHWM``) on a CPU; :func:`reset_peak_memory` restarts both.
* :func:`profile_steps` records a few steps with ``torch.profiler`` and returns the Chrome trace
  (open it in https://ui.perfetto.dev or TensorBoard) and the top ops by self time.
"""

from __future__ import annotations

import contextlib
import resource
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from shared.device import synchronize

if TYPE_CHECKING:
    import pandas as pd

PHASES = ("data", "forward", "backward", "optimizer")


class StepTimer:
    """Wall-clock time of each phase of each step, in seconds.

    Usage::

        timer.start_step()
        with timer.phase("data"): x, y = next(it)
        with timer.phase("forward"): ...
        timer.end_step()

    Args:
        device: a CUDA device is synchronised at every boundary (so the times are real).
        enabled: when False, every call is a no-op (for the production loop).
    """

    def __init__(self, device: torch.device | str = "cpu", enabled: bool = True) -> None:
        self.device = torch.device(device)
        self.enabled = enabled
        self.steps: list[dict[str, float]] = []
        self._current: dict[str, float] | None = None
        self._t0 = 0.0

    def start_step(self) -> None:
        if not self.enabled:
            return
        synchronize(self.device)
        self._current = dict.fromkeys(PHASES, 0.0)
        self._t0 = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body as ``name`` (one of :data:`PHASES`; repeated phases add up)."""
        if not self.enabled or self._current is None:
            yield
            return
        if name not in PHASES:
            raise ValueError(f"unknown phase '{name}'; use one of {PHASES}")
        synchronize(self.device)
        t = time.perf_counter()
        with torch.profiler.record_function(f"## {name}"):
            yield
        synchronize(self.device)
        self._current[name] += time.perf_counter() - t

    def end_step(self) -> None:
        if not self.enabled or self._current is None:
            return
        synchronize(self.device)
        self._current["step"] = time.perf_counter() - self._t0
        self.steps.append(self._current)
        self._current = None

    def frame(self, skip: int = 0) -> pd.DataFrame:
        """One row per step (seconds), without the first ``skip`` warm-up steps."""
        import pandas as pd  # ~0.5 s: imported by the reports that use it, not by every training process

        return pd.DataFrame(self.steps[skip:], columns=[*PHASES, "step"])

    def summary(self, skip: int = 1) -> dict[str, float]:
        """Mean seconds per phase and per step, plus ``other`` (step time outside the four phases).

        Raises:
            ValueError: fewer than ``skip + 1`` steps were timed.
        """
        df = self.frame(skip)
        if df.empty:
            raise ValueError(f"timed {len(self.steps)} steps; need more than skip={skip}")
        out = {k: float(df[k].mean()) for k in (*PHASES, "step")}
        out["other"] = out["step"] - sum(out[k] for k in PHASES)
        return out


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (0: leave the count as it is), restoring the count it had
    before afterwards, whatever the block set. Timings state their thread count: on a shared 2-core machine one
    thread can beat two (OpenMP barriers wait for a busy core)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _proc_status_bytes(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _vm_hwm_bytes() -> int | None:
    return _proc_status_bytes("VmHWM")


def current_memory_gib(device: torch.device) -> float | None:
    """Memory in use now, in GiB: ``torch.cuda.memory_allocated`` on a GPU, the process's resident set (``VmRSS``)
    on the CPU (None where ``/proc`` is missing). ``peak_memory_gib`` minus this, read just before training, is
    what the training itself added."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**30
    rss = _proc_status_bytes("VmRSS")
    return None if rss is None else rss / 2**30


def reset_peak_memory(device: torch.device) -> None:
    """Restart peak-memory tracking: CUDA peak stats, or the Linux resident-set high-water mark."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # "5" resets VmHWM to the current RSS (man 5 proc, clear_refs)
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory since the last reset, in GiB.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, not the allocator's cache).
    CPU: the process's peak resident set (``VmHWM``; ``ru_maxrss`` where ``/proc`` is missing),
    which includes the interpreter, libraries and the dataset, so compare differences between configs.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    hwm = _vm_hwm_bytes()
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return hwm / 2**30


@dataclass
class ProfileResult:
    """What :func:`profile_steps` recorded."""

    trace_path: Path  # Chrome trace JSON
    top_ops: pd.DataFrame  # op, calls, self time (ms), total time (ms), share of self time


def top_ops(prof: torch.profiler.profile, n: int = 10) -> pd.DataFrame:
    """The ``n`` ops with the most self time (device time on a GPU, CPU time otherwise)."""
    events = [e for e in prof.key_averages() if not e.key.startswith("## ") and not e.key.startswith("ProfilerStep")]
    use_device = any(getattr(e, "self_device_time_total", 0) > 0 for e in events)
    attr = "self_device_time_total" if use_device else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events) or 1.0
    rows = [
        {
            "op": e.key,
            "calls": e.count,
            f"self {'GPU' if use_device else 'CPU'} (ms)": getattr(e, attr) / 1e3,
            "CPU total (ms)": e.cpu_time_total / 1e3,
            "share of self time": getattr(e, attr) / total,
        }
        for e in sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:n]
    ]
    import pandas as pd

    return pd.DataFrame(rows)


def profile_steps(
    step_fn: Callable[[], None], trace_path: str | Path, device: torch.device, warmup: int = 2, active: int = 3
) -> ProfileResult:
    """Run ``step_fn`` ``warmup + active`` times under ``torch.profiler``; trace the last ``active``.

    https://docs.pytorch.org/docs/stable/profiler.html
    """
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    trace_path = Path(trace_path)
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    tables: list[pd.DataFrame] = []

    def on_ready(prof: profile) -> None:  # events are cleared after the cycle: read them here
        prof.export_chrome_trace(str(trace_path))
        tables.append(top_ops(prof))

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Profiler clears events")  # read in on_ready, as it advises
        with profile(activities=activities, schedule=schedule(wait=0, warmup=warmup, active=active),
                     on_trace_ready=on_ready) as prof:
            for _ in range(warmup + active):
                step_fn()
                prof.step()
    return ProfileResult(trace_path, tables[-1])
