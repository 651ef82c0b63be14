"""Model FLOPs per token, hardware peak FLOP/s, and model FLOPs utilisation (MFU).

MFU = achieved model FLOP/s / peak FLOP/s, where the achieved figure counts only the FLOPs the model
needs (forward + backward), not re-computation or overheads (Chowdhery et al. 2022, PaLM, appendix B,
https://arxiv.org/abs/2204.02311). For a decoder-only transformer, one token costs about
``6 N + 12 · L · H · Q · T`` FLOPs in training: 6 per non-embedding parameter (2 forward + 4 backward,
Kaplan et al. 2020, https://arxiv.org/abs/2001.08361) plus the attention score and value matmuls
(L layers, H heads of size Q, context T), the formula of nanoGPT's ``estimate_mfu``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import time
from pathlib import Path

import torch

from shared.device import synchronize

# Dense (no 2:4 sparsity) tensor-core peaks from the vendor datasheets, FLOP/s.
# https://www.nvidia.com/en-us/data-center/h100/ , /h200/ , /a100/
PEAK_FLOPS = {
    # substring of torch.cuda.get_device_name() -> {precision: FLOP/s}
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},  # SXM (HBM3)
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
}


def gpt_flops_per_token(n_params: int, n_layer: int, n_head: int, head_dim: int, seq_len: int) -> float:
    """Training FLOPs per token, ``6 N + 12 L H Q T`` (see the module docstring).

    Args:
        n_params: N, non-embedding parameters.
        n_layer, n_head, head_dim, seq_len: L, H, Q and T.
    """
    return 6.0 * n_params + 12.0 * n_layer * n_head * head_dim * seq_len


def peak_flops(device: torch.device | str, precision: str) -> tuple[float | None, str]:
    """The peak FLOP/s to measure MFU against, and where the figure comes from.

    A GPU listed in :data:`PEAK_FLOPS` gets its datasheet dense peak for ``precision``. Anything else
    (a CPU, an unlisted GPU) gets ``None``; use :func:`measured_matmul_flops` as a stated stand-in.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None, "no datasheet peak for a CPU"
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_FLOPS.items():
        if key in name:
            return peaks.get(precision), f"{name}: {precision} dense datasheet peak"
    return None, f"{name} is not in shared.flops.PEAK_FLOPS"


def measured_matmul_flops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, n: int = 1024,
                          trials: int = 5, trial_s: float = 0.2) -> float:
    """Achieved FLOP/s of a square ``n x n`` matmul on ``device``, the best of ``trials`` timings of about
    ``trial_s`` seconds each (the best, because other load on the machine only ever slows it down): an
    empirical ceiling for MFU where no datasheet peak applies (a CPU)."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    synchronize(device)
    best = 0.0
    for _ in range(trials):
        reps, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < trial_s or reps < 2:
            a @ b
            synchronize(device)
            reps += 1
        best = max(best, 2.0 * n**3 * reps / elapsed)
    return best


def mfu(tokens_per_sec: float, flops_per_token: float, peak: float | None) -> float | None:
    """``tokens_per_sec * flops_per_token / peak`` in [0, 1]; None without a peak."""
    return None if not peak else tokens_per_sec * flops_per_token / peak


def _cpu_fingerprint() -> str:
    """What the measured CPU peak depends on: the CPU model, torch's version and its thread count."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{platform.node()}|{model}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def cached_cpu_peak(max_age_s: float = 7 * 24 * 3600) -> float:
    """:func:`measured_matmul_flops` on the CPU, measured once per machine and kept for ``max_age_s`` in
    ``<runs root>/.cache/cpu_matmul_peak.json`` (keyed by :func:`_cpu_fingerprint`): the ~1 s measurement would
    otherwise delay every week's first training step."""
    from shared.atomic import atomic_write_text
    from shared.paths import runs_root

    path, key = runs_root() / ".cache" / "cpu_matmul_peak.json", _cpu_fingerprint()
    with contextlib.suppress(OSError, ValueError, KeyError):
        entry = json.loads(path.read_text())[key]
        if time.time() - entry["measured_at"] < max_age_s:
            return float(entry["flops"])
    peak = measured_matmul_flops("cpu")
    cache: dict = {}
    with contextlib.suppress(OSError, ValueError):
        cache = json.loads(path.read_text())
    cache[key] = {"flops": peak, "measured_at": time.time()}
    atomic_write_text(path, json.dumps(cache, indent=2) + "\n")
    return peak


@functools.cache
def mfu_peak(device: torch.device, precision: str) -> tuple[float | None, str]:
    """The denominator of MFU and where it comes from: :func:`peak_flops` on a known GPU; on a CPU the measured
    fp32 matmul throughput (:func:`cached_cpu_peak`), said so. Once per process, so every MFU figure of a run
    shares one denominator."""
    device = torch.device(device)
    peak, source = peak_flops(device, precision)
    if peak is None and device.type == "cpu":
        peak = cached_cpu_peak()
        source = f"CPU: measured fp32 1024x1024 matmul, {peak / 1e9:.1f} GFLOP/s (no datasheet peak)"
    return peak, source
