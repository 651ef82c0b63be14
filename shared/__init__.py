"""AI from Scratch: the stable library every week imports.

Modules (one concept each): ``config`` (typed layered config), ``repro`` (seeds, determinism,
environment record), ``data`` (registry, verified fetch, samplers, MNIST), ``models``, ``train``
(Trainer, optimizers, schedules), ``checkpoint``, ``tracking`` (CSV/TensorBoard metrics),
``report`` (weekly logs), ``results`` (run registry), ``rundir``, ``cli``, ``paths``, ``atomic``,
``dist`` (torchrun/DDP set-up, failure reporting), ``amp`` (autocast, GradScaler), ``profiling``
(step timers, peak memory, torch.profiler), ``analysis`` (confusion matrix, error grids), ``nn`` (hand-written transformer pieces: attention,
multi-head attention, norms and MLPs, positions), ``flops`` (FLOPs per token, peak FLOP/s, MFU).

Submodules are imported on use, so ``import shared`` stays cheap. ``__all__`` is frozen by a
test: adding or removing a module is a deliberate API change.
"""

__version__ = "0.1.0"

__all__ = [
    "amp",
    "analysis",
    "atomic",
    "checkpoint",
    "cli",
    "config",
    "data",
    "dist",
    "flops",
    "models",
    "nn",
    "paths",
    "profiling",
    "repro",
    "report",
    "results",
    "rundir",
    "testing",
    "tracking",
    "train",
]
