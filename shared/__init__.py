"""AI from Scratch: the stable library every week imports.

Modules (one concept each; the layers are drawn in ``docs/architecture.md``): ``config`` (typed layered config),
``repro`` (seeds, determinism, environment record), ``data`` (dataset registry, verified fetch, samplers, MNIST,
CIFAR, text corpora, tokenizers, packed LM data), ``nn`` (hand-written transformer pieces: attention, multi-head
attention, norms and MLPs, positions), ``models`` (classifiers, the GPT, the causal-LM interface, the Hugging Face
path, the model registry), ``tasks`` (objectives for the step loop), ``train`` (configs, optimizers, schedules,
the step loop, the pre-training recipe, the classifier Trainer), ``parallel`` (none / DDP strategies),
``checkpoint``, ``tracking`` (metric loggers, the step line), ``report`` (weekly logs), ``results`` (run registry),
``rundir``, ``cli``, ``paths``, ``atomic``, ``device``, ``dist`` (torchrun set-up, failure reporting), ``amp``
(autocast, GradScaler), ``profiling`` (step timers, peak memory, torch.profiler), ``analysis`` (confusion matrix,
error grids), ``flops`` (FLOPs per token, peak FLOP/s, MFU), ``stats`` (a winner over seeds only outside the
seed spread), ``evals`` (greedy batched generation and the instruction-following harness), ``serve`` (the engine: continuous
batching over a paged KV cache; starting, measuring and stopping OpenAI-compatible servers on localhost).

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
    "dcp",
    "device",
    "dist",
    "evals",
    "flops",
    "models",
    "nn",
    "parallel",
    "paths",
    "profiling",
    "repro",
    "report",
    "results",
    "rundir",
    "scaling",
    "serve",
    "stats",
    "tasks",
    "testing",
    "tracking",
    "train",
]
