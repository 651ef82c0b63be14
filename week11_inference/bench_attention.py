"""Attention backends side by side: agreement with an fp64 reference, speed and peak memory vs sequence length.

Backends (causal self-attention, q/k/v of shape (B, H, T, D)):

- ``manual``: the hand-written :func:`shared.nn.attention.scaled_dot_product_attention` (materialises the (T, T)
  scores, the additive causal mask and the softmax: about three (B, H, T, T) tensors at once);
- ``math``, ``efficient``, ``flash``, ``cudnn``: ``F.scaled_dot_product_attention`` inside
  ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH | EFFICIENT_ATTENTION | FLASH_ATTENTION | CUDNN_ATTENTION)``.
  On CPU (torch 2.14) only MATH and FLASH_ATTENTION (PyTorch's own CPU flash kernel: tiled, online softmax, no (T, T)
  tensor) run; EFFICIENT_ATTENTION and CUDNN_ATTENTION raise ``RuntimeError: No viable backend ...`` and their rows
  are SKIP with that message. On a GPU all four can run (FLASH needs sm80+, CUDNN a recent cuDNN).

**Agreement.** Every output is compared with the same inputs upcast to fp64 and attended by a chunked fp64
reference (queries in blocks, so the reference never holds (T, T) at once): ``rel_err = max|out - ref| / max|ref|``.
Tolerances come from the dtype's unit roundoff u (u = 2^-24 ≈ 6e-8 for fp32, 2^-8 ≈ 3.9e-3 for bf16):

- fp32: 1e-5. A kernel's error is a few roundings of the softmax normaliser plus the dot products' accumulation,
  which grows like √n·u for n = D (QKᵀ) and n = T (PV) terms: √8192·6e-8 ≈ 5e-6 at the longest T, so 1e-5 passes
  every correct kernel and fails a wrong mask or scale (those err by O(1)).
- bf16: 1e-2, about 2.5 u: the output is rounded to bf16 once (≤ u relative) and the Flash-style kernels round the
  probabilities P to bf16 before the PV matmul (another ≤ u); accumulation is in fp32. Anything above ~2.5 u is a
  real error, not rounding.

**Peak memory.** On a GPU: ``torch.cuda.max_memory_allocated() - memory_allocated()`` before the call (the caching
allocator's exact byte count, reset before each cell). On CPU there is no allocator statistic, so the call is run
once more under ``torch.profiler.profile(profile_memory=True)`` and the profiler's allocation events (every
allocation and free through c10's CPU allocator, with its size and timestamp) are summed in time order: the peak of
that running sum is the most bytes the call held at once beyond its inputs (its output included). It counts tensor
memory only (not the Python heap or the kernel's stack buffers) and is exact for it; RSS would mix in glibc's
reuse of freed pages. The analytic size of one (B, H, T, T) score matrix is reported beside it (``score_bytes``).
Timing runs are separate from the profiled run (the profiler adds overhead).

**Memory cap.** The score-materialising backends (``manual``, ``math``) are skipped, with the reason, at a T whose
(B, H, T, T) score matrix exceeds ``max_score_bytes``; any backend is skipped at a T whose time, extrapolated ×4
from the previous T (attention is O(T²)), would exceed ``max_cell_s``.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from shared.nn.attention import scaled_dot_product_attention

SDPA_BACKENDS = {"math": SDPBackend.MATH, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
BACKENDS = ("manual", *SDPA_BACKENDS)
MATERIALISING = ("manual", "math")  # backends that hold (B, H, T, T) scores
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOLERANCES = {"float32": 1e-5, "bfloat16": 1e-2, "float16": 2e-3}  # relative to max|ref|; see the module docstring
FIELDS = ("backend", "dtype", "device", "seq_len", "batch", "n_head", "head_dim", "status", "reason", "time_ms",
          "peak_bytes", "score_bytes", "rel_err", "tol", "agree", "threads")


@dataclass
class AttentionBenchConfig:
    """The grid and its caps."""

    seq_lens: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096, 8192)  # T, queries = keys (causal)
    batch: int = 1
    n_head: int = 12  # GPT-2 small
    head_dim: int = 64
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    backends: tuple[str, ...] = BACKENDS
    repeats: int = 3  # timed calls per cell (the median is reported), after one warm-up call
    max_score_bytes: int = 1 << 30  # skip manual/math when one (B, H, T, T) score matrix would exceed this (1 GiB)
    max_cell_s: float = 60.0  # skip a cell whose extrapolated time (warm-up + repeats + profiled run) exceeds this
    ref_chunk: int = 512  # queries per block of the fp64 reference
    device: str = "cpu"
    seed: int = 0
    threads: int = 0  # torch.set_num_threads (0: leave the default)

    def validate(self) -> None:
        """Raises ValueError naming an unknown backend or dtype, or a size < 1."""
        bad = [b for b in self.backends if b not in BACKENDS] + [d for d in self.dtypes if d not in DTYPES]
        if bad:
            raise ValueError(f"unknown backend/dtype {bad}: backends {BACKENDS}, dtypes {tuple(DTYPES)}")
        if min(self.seq_lens, default=0) < 1 or min(self.batch, self.n_head, self.head_dim, self.repeats) < 1:
            raise ValueError("seq_lens, batch, n_head, head_dim and repeats must all be >= 1")


def flash_attn_available() -> tuple[bool, str]:
    """Whether the ``flash-attn`` package (Dao-AILab's FlashAttention kernels) is importable, and why (not)."""
    if importlib.util.find_spec("flash_attn") is not None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return True, f"flash-attn {version('flash-attn')} is installed"
        except PackageNotFoundError:
            return True, "flash_attn is importable (no package metadata)"
    return False, ("flash-attn is not installed: PyPI ships it as a source distribution only (no wheel), whose build "
                   "needs nvcc, the CUDA toolkit and a GPU arch list (an hour or more of compilation), so it is "
                   "not part of this project. SDPA's FLASH_ATTENTION backend gives the same algorithm without it: "
                   "PyTorch bundles FlashAttention-2 kernels for CUDA (sm80+, fp16/bf16) and a tiled CPU "
                   "implementation (fp32/bf16) that never materialises the (T, T) scores")


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Causal attention in fp64, ``chunk`` queries at a time (memory B·H·chunk·T, never (T, T)): the reference."""
    q, k, v = q.double(), k.double(), v.double()
    t, scale = q.shape[-2], 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty_like(q)
    for i in range(0, t, chunk):
        j = min(i + chunk, t)
        s = (q[..., i:j, :] @ k[..., :j, :].transpose(-2, -1)) * scale  # (B, H, j-i, j)
        allowed = torch.arange(j, device=q.device)[None, :] <= torch.arange(i, j, device=q.device)[:, None]
        s = s.masked_fill(~allowed, float("-inf"))
        out[..., i:j, :] = torch.softmax(s, dim=-1) @ v[..., :j, :]
    return out


def attention_fn(backend: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``f(q, k, v) -> causal attention`` through ``backend`` (an SDPA backend runs inside ``sdpa_kernel``)."""
    if backend == "manual":
        return lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=True)
    kernel = SDPA_BACKENDS[backend]

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(kernel):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_peak_bytes(fn: Callable[[], Any]) -> int:
    """Most bytes held at once by tensors allocated during ``fn()`` on the CPU allocator (its result included):
    the peak of the running sum of the profiler's allocation (+) and free (-) events, in time order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")), key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak extra bytes of ``fn()``: CUDA allocator statistics on a GPU, profiler allocation events on CPU."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        _sync(device)
        del out
        return torch.cuda.max_memory_allocated(device) - before
    return cpu_peak_bytes(fn)


def _time_ms(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _base_row(cfg: AttentionBenchConfig, backend: str, dtype: str, t: int, device: torch.device) -> dict[str, Any]:
    elem = torch.finfo(DTYPES[dtype]).bits // 8
    return {"backend": backend, "dtype": dtype, "device": device.type, "seq_len": t, "batch": cfg.batch,
            "n_head": cfg.n_head, "head_dim": cfg.head_dim, "status": "ok", "reason": "", "time_ms": None,
            "peak_bytes": None, "score_bytes": cfg.batch * cfg.n_head * t * t * elem, "rel_err": None,
            "tol": TOLERANCES[dtype], "agree": None, "threads": torch.get_num_threads()}


def bench_attention(cfg: AttentionBenchConfig) -> list[dict[str, Any]]:
    """One row per (dtype, T, backend), fields :data:`FIELDS`; SKIP rows (``status='skip'``) carry their reason."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    rows: list[dict[str, Any]] = []
    for dtype in cfg.dtypes:
        last_s: dict[str, tuple[int, float]] = {}  # backend -> (T, seconds per call) at the last T it ran
        for t in cfg.seq_lens:
            g = torch.Generator(device="cpu").manual_seed(cfg.seed + t)
            shape = (cfg.batch, cfg.n_head, t, cfg.head_dim)
            q, k, v = (torch.randn(shape, generator=g).to(device=device, dtype=DTYPES[dtype]) for _ in range(3))
            ref = None
            for backend in cfg.backends:
                row = _base_row(cfg, backend, dtype, t, device)
                rows.append(row)
                if backend in MATERIALISING and row["score_bytes"] > cfg.max_score_bytes:
                    row.update(status="skip", reason=f"the (B, H, T, T) scores take {row['score_bytes'] / 2**20:.0f} "
                               f"MiB > max_score_bytes={cfg.max_score_bytes / 2**20:.0f} MiB")
                    continue
                if backend in last_s:
                    t0, s0 = last_s[backend]
                    est = s0 * (t / t0) ** 2 * (cfg.repeats + 2)
                    if est > cfg.max_cell_s:
                        row.update(status="skip", reason=f"estimated {est:.0f} s (×(T/{t0})² from T={t0}) > "
                                   f"max_cell_s={cfg.max_cell_s:.0f}")
                        continue
                fn = attention_fn(backend)
                try:
                    _sync(device)
                    t_start = time.perf_counter()
                    out = fn(q, k, v)  # warm-up, and the output compared with the reference
                    _sync(device)
                    first_s = time.perf_counter() - t_start
                except RuntimeError as e:
                    row.update(status="skip", reason=" ".join(str(e).split())[:300])
                    continue
                if ref is None:
                    ref = reference_attention(q, k, v, cfg.ref_chunk)
                err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
                del out
                row.update(rel_err=err, agree=bool(err <= row["tol"]))
                row["time_ms"] = _time_ms(lambda fn=fn, q=q, k=k, v=v: fn(q, k, v), cfg.repeats, device)
                row["peak_bytes"] = peak_bytes(lambda fn=fn, q=q, k=k, v=v: fn(q, k, v), device)
                last_s[backend] = (t, min(first_s, row["time_ms"] / 1e3))
    return rows


def choose_default(rows: Sequence[dict[str, Any]], dtype: str | None = None) -> tuple[str, str]:
    """The backend to use by default, and why, from the measured rows.

    A backend that disagrees with the reference at any T (``agree`` False) is rejected. Among the rest, those that ran
    at the longest T any of them ran are preferred (a backend skipped for memory at long T cannot be the default);
    among those the one with the smallest geometric-mean time over the T they all ran wins.

    Args:
        dtype: consider this dtype's rows only (None: the first dtype in ``rows``).

    Raises:
        ValueError: no backend ran and agreed.
    """
    ok = [r for r in rows if r["status"] == "ok"]
    dtype = dtype or (ok[0]["dtype"] if ok else None)
    ok = [r for r in ok if r["dtype"] == dtype]
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in ok:
        by.setdefault(r["backend"], {})[r["seq_len"]] = r
    rejected = {b: max((r for r in cells.values() if not r["agree"]), key=lambda r: r["rel_err"])
                for b, cells in by.items() if not all(r["agree"] for r in cells.values())}
    cands = {b: cells for b, cells in by.items() if b not in rejected}
    if not cands:
        raise ValueError(f"no backend ran and agreed with the fp64 reference ({dtype}); rejected: {sorted(rejected)}")
    longest = max(max(cells) for cells in cands.values())
    full = {b: cells for b, cells in cands.items() if longest in cells}
    common = sorted(set.intersection(*(set(cells) for cells in full.values())))

    def gmean(b: str) -> float:
        return math.exp(statistics.fmean(math.log(full[b][t]["time_ms"]) for t in common))

    ranked = sorted(full, key=gmean)
    best = ranked[0]
    others = ", ".join(f"{b} {gmean(b):.3g} ms ({gmean(b) / gmean(best):.1f}×)" for b in ranked[1:])
    reason = (f"{best}: fastest backend that agrees with the fp64 reference ({dtype}, rel. err ≤ "
              f"{TOLERANCES[dtype]:g}) and runs up to T={longest}: geometric-mean time {gmean(best):.3g} ms over "
              f"T={common[0]}..{common[-1]}" + (f" vs {others}" if others else ""))
    short = sorted(set(cands) - set(full))
    if short:
        def vs_best(b: str) -> str:
            ts = sorted(set(cands[b]) & set(full[best]))
            ratio = math.exp(statistics.fmean(math.log(cands[b][t]["time_ms"] / full[best][t]["time_ms"]) for t in ts))
            return f"{b} (up to T={max(cands[b])}; {ratio:.1f}× {best}'s time over T={ts[0]}..{ts[-1]})"

        reason += "; not at T=" + str(longest) + ": " + ", ".join(vs_best(b) for b in short)
    if rejected:
        reason += "; rejected (disagree): " + ", ".join(
            f"{b} (rel. err {r['rel_err']:.2g} > {r['tol']:g} at T={r['seq_len']})" for b, r in rejected.items())
    return best, reason


def plot(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Time vs T per backend (log-log) and peak memory vs T, one line style per dtype; SKIP cells leave gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {d: s for d, s in zip(DTYPES, ("-o", "--s", ":^"), strict=True)}
    for (backend, dtype) in sorted({(r["backend"], r["dtype"]) for r in rows}):
        pts = sorted((r["seq_len"], r["time_ms"], r["peak_bytes"]) for r in rows
                     if r["backend"] == backend and r["dtype"] == dtype and r["status"] == "ok")
        if not pts:
            continue
        ts = [p[0] for p in pts]
        ax_t.plot(ts, [p[1] for p in pts], styles[dtype], label=f"{backend} {dtype}")
        ax_m.plot(ts, [max(p[2], 1) / 2**20 for p in pts], styles[dtype], label=f"{backend} {dtype}")
    for ax, ylabel in ((ax_t, "time per call (ms)"), (ax_m, "peak extra memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    dev = rows[0]["device"] if rows else "?"
    fig.suptitle(f"causal attention, B={rows[0]['batch'] if rows else '?'}, H={rows[0]['n_head'] if rows else '?'}, "
                 f"D={rows[0]['head_dim'] if rows else '?'}, {dev}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
