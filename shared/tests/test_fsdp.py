"""FSDP2 (``parallel=fsdp2``) on 2 gloo CPU ranks, through the one step loop: it trains the debug GPT exactly like
DDP (pre-training and SFT-style masked targets), reproducibly, and keeping parameters gathered or recomputing
activations changes no loss; accumulation under ``no_sync`` equals one big batch and
really skips the reduce-scatter; each rank trains on its own slice of the one-process batch; bf16 parameters with an
fp32 gradient reduction are closer to fp32 gradients than with a bf16 reduction; ``shard_bytes`` counts exactly what
each rank holds (1/N of the parameters, gradients and AdamW moments, by torch.chunk's dim-0 split); a rank dying
mid-step ends every rank with an error naming it; bad strategies, dtypes and wrap orders are refused clearly.

The 2-rank work is one launch (the ``fsdp_job`` fixture) whose artefacts the small tests below read: a launch costs
seconds, so it runs once per session even when pytest-xdist spreads these tests over workers (:func:`run_once`).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import pytest
import torch

from shared.config import ConfigError
from shared.dist import DistInfo, DistSetupError
from shared.models.gpt import GPT, GPTConfig
from shared.parallel import FSDPConfig, build_parallel
from shared.tasks.lm import LMTask, causal_lm_loss
from shared.testing import DEBUG_GPT, SPAWN_TIMEOUT_S, debug_token_stream, spawn_ranks
from shared.tests.test_loop import MaskedTask  # SFT-style targets: the first half of a window is -100
from shared.tracking import FileLogger
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
from shared.train.loop import fit
from shared.train.memory import shard_bytes
from shared.train.optim import build_optimizer

DATA = debug_token_stream()
TRAIN, VAL = DATA[:3600], DATA[3600:]
T = DEBUG_GPT["block_size"]
GPT2 = {**DEBUG_GPT, "n_layer": 2}  # two blocks: FSDP2 warns when there are more ranks than blocks
WORLD, MICRO, STEPS = 2, 4, 6  # per-rank micro-batch: the global batch is 8 windows
SCHEDULE = ScheduleConfig(warmup_steps=2, min_lr=1e-3)
ADAMW = OptimConfig(lr=1e-2)
# SGD is scale-sensitive where AdamW is not (m/sqrt(v) hides a gradient off by a constant factor, e.g. a sum over ranks
# instead of a mean, or a missing 1/k in accumulation): the parity runs that must catch such a bug use it.
SGD = OptimConfig(name="sgd", lr=0.5, momentum=0.9)


# -- shared helpers (test_dcp.py imports them) ---------------------------------------------------------------------
def run_once(tmp_path_factory: pytest.TempPathFactory, name: str, produce) -> Path:
    """``produce(folder)`` run once per test session, its folder shared by every pytest-xdist worker (each would
    otherwise run a module-scoped fixture itself): the first worker to take the lock produces, the others wait and
    reuse; a failure is recorded, so the others report it instead of launching again."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, shared by its workers (and unique to the session)
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (folder / "FAILED").is_file():
            pytest.fail(f"{name} failed in another worker: {(folder / 'FAILED').read_text()}")
        if not (folder / "DONE").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                produce(folder)
            except BaseException as e:
                (folder / "FAILED").write_text(repr(e))
                raise
            (folder / "DONE").touch()
    return folder


def traced(rank: int, fn, out: Path, *args) -> None:
    """Run ``fn(rank, out, *args)``; on an exception leave its traceback in ``out/rank<R>.traceback`` (spawned ranks'
    tracebacks go nowhere a test can show) and fail."""
    import traceback

    try:
        fn(rank, out, *args)
    except BaseException:
        (out / f"rank{rank}.traceback").write_text(traceback.format_exc())
        raise


def spawn_job(fn, world: int, out: Path, *args) -> None:
    """``fn(rank, out, *args)`` on ``world`` fresh ranks; fails with the failed ranks' tracebacks."""
    codes = spawn_ranks(traced, world, (fn, out, *args))
    tracebacks = "\n".join(f.read_text() for f in sorted(out.glob("rank*.traceback")))
    assert codes == [0] * world, f"exit codes {codes}\n{tracebacks}"


def loop_cfg(**kw) -> LoopConfig:
    base = {"max_steps": STEPS, "micro_batch": MICRO, "eval_every": STEPS, "log_every": 1, "print_every": 0,
            "device": "cpu", "progress": False}
    return LoopConfig(**{**base, **kw})


class SequentialTask(LMTask):
    """Rank r's n-th window is window ``n x world_size + r`` of a fixed order, n counting micro-batch ``index`` of
    ``size`` from ``index x size``: k micro-batches of B on a rank are exactly that rank's batch of k x B, and the ranks
    never share a window. Records, on every micro-batch but the first of a step, whether the sharded parameters still
    have no ``.grad`` (the gradients of the earlier micro-batches were kept unreduced, as ``no_sync`` promises)."""

    def __init__(self, *args, k=1, **kw):
        super().__init__(*args, **kw)
        self.k, self.calls, self.unreduced = k, 0, []

    def batch(self, index, rank, world_size, size):
        n = torch.arange(index * size, (index + 1) * size)
        starts = (n * world_size + rank) * 7 % (len(self.train) - T - 1)
        chunk = self.train[starts[:, None] + torch.arange(T + 1)[None, :]]
        return {"input_ids": chunk[:, :-1], "targets": chunk[:, 1:]}

    def loss(self, model, batch):
        if self.calls % self.k:
            self.unreduced.append(all(p.grad is None for p in model.parameters()))
        self.calls += 1
        return super().loss(model, batch)


class RecordingTask(LMTask):
    """Saves every micro-batch this rank trains on as ``<out>/<index>_<rank>of<world>.pt``."""

    def __init__(self, *args, out=None, **kw):
        super().__init__(*args, **kw)
        self.out = out

    def batch(self, index, rank, world_size, size):
        b = super().batch(index, rank, world_size, size)
        torch.save(b["input_ids"], self.out / f"{index}_{rank}of{world_size}.pt")
        return b


def lm_task(loop: LoopConfig, cls=LMTask, **kw) -> LMTask:
    return cls(TRAIN, VAL, T, loop.seed, 1, 8, **kw)  # one eval batch of 8 windows, whatever the micro-batch


def fit_run(run_dir: Path, parallel, loop: LoopConfig, task: LMTask, optim: OptimConfig = ADAMW, checkpointer=None,
            model_cfg: dict | None = None):
    """Fit a fresh debug GPT (seed 0) with ``metrics.csv`` in ``run_dir``; returns the model, its optimizer (pointed at
    the sharded parameters under FSDP2) and the FitResult."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**(model_cfg or GPT2)))
    optimizer = build_optimizer(model, optim)
    logger = FileLogger(run_dir, "test", 0, tensorboard=False)
    result = fit(model, task, optimizer, SCHEDULE, loop, checkpointer=checkpointer, logger=logger, parallel=parallel)
    logger.close()
    return model, optimizer, result


def train_losses(run_dir: Path) -> list[float]:
    """The train rows' losses of ``run_dir/metrics.csv``, checking there is one row per step 1, 2, ... (csv, not
    pandas: every spawned rank imports this module, and pandas would add ~0.5 s to each)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        train = [row for row in csv.DictReader(f) if row["phase"] == "train"]
    steps = [int(row["step"]) for row in train]
    assert steps == list(range(1, len(train) + 1)), f"{run_dir}: steps {steps}"
    return [float(row["loss"]) for row in train]


def init_gloo(timeout_s: float = 60):
    from shared.dist import DistConfig, init_distributed

    return init_distributed(DistConfig(backend="gloo", timeout_s=timeout_s), device="cpu")


# -- the 2-rank job ------------------------------------------------------------------------------------------------
BF16_CASES = {"fp32": ("fp32", "fp32"), "bf16_fp32reduce": ("bf16", "fp32"), "bf16_bf16reduce": ("bf16", "bf16")}
MEM_GPT = {**GPT2, "vocab_size": 11}  # 11 rows: dim 0 splits unevenly over 2 ranks (torch.chunk: 6 + 5)


def _grads_batch(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s share of one global batch of 32 windows (with ``world=1``: the whole of it)."""
    return LMTask(TRAIN, VAL, T, 0, 2, 8).batch(0, rank, world, 32 // world)


def _loss(model, batch) -> tuple[torch.Tensor, dict]:
    return causal_lm_loss(model(batch["input_ids"]), batch["targets"]), {}


def _fsdp_worker(rank, out):
    from shared.parallel import FSDP2Parallel

    info = init_gloo()
    ddp, fsdp = build_parallel("ddp", info), build_parallel("fsdp2", info)
    rec = out / "batches"
    rec.mkdir(exist_ok=True)
    loop = loop_cfg()
    fit_run(out / "ddp_lm", ddp, loop, lm_task(loop), SGD)
    fit_run(out / "fsdp_lm", fsdp, loop, lm_task(loop, RecordingTask, out=rec), SGD)
    fit_run(out / "fsdp_lm_again", build_parallel("fsdp2", info), loop, lm_task(loop), SGD)
    saving = FSDPConfig(reshard_after_forward=False, activation_checkpointing=True)
    fit_run(out / "fsdp_lm_options", build_parallel("fsdp2", info, saving), loop, lm_task(loop), SGD)
    fit_run(out / "ddp_masked", ddp, loop, lm_task(loop, MaskedTask))
    fit_run(out / "fsdp_masked", build_parallel("fsdp2", info), loop, lm_task(loop, MaskedTask))
    unreduced = {}
    for name, micro, k in (("fsdp_big", 2 * MICRO, 1), ("fsdp_acc", MICRO, 2)):
        acc = loop_cfg(micro_batch=micro, grad_accum_steps=k)
        task = lm_task(acc, SequentialTask, k=k)
        fit_run(out / name, build_parallel("fsdp2", info), acc, task, SGD)
        unreduced[name] = task.unreduced

    # one backward of the same global batch in three precisions; rank 0 keeps the full (gathered) gradients
    grads = {}
    for case, (param_dtype, reduce_dtype) in BF16_CASES.items():
        torch.manual_seed(0)
        model = GPT(GPTConfig(**GPT2))
        FSDP2Parallel(info, FSDPConfig(param_dtype=param_dtype, reduce_dtype=reduce_dtype)).wrap(model)
        b = _grads_batch(rank, WORLD)
        _loss(model, b)[0].backward()
        grads[case] = {n: p.grad.full_tensor() for n, p in model.named_parameters()}

    # what each rank holds after one AdamW step
    torch.manual_seed(0)
    model = GPT(GPTConfig(**MEM_GPT))
    optimizer = build_optimizer(model, ADAMW)
    FSDP2Parallel(info).wrap(model, optimizer)
    _loss(model, _grads_batch(rank, WORLD))[0].backward()
    optimizer.step()
    held = shard_bytes(model, optimizer)
    steps = [s["step"] for s in optimizer.state.values()]
    memory = {"params": held.params, "grads": held.grads, "optimizer": held.optimizer, "n_params": held.n_params,
              "local_shapes": {n: tuple(p.to_local().shape) for n, p in model.named_parameters()},
              "step_counters": [(type(s).__name__, str(s.dtype), s.numel()) for s in steps]}

    # refusals: more ranks than blocks (a warning), and an optimizer that has state before wrapping (an error)
    caught = {}
    for blocks in (1, 2):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            FSDP2Parallel(info).wrap(GPT(GPTConfig(**{**DEBUG_GPT, "n_layer": blocks})))
        caught[blocks] = [(x.category.__name__, str(x.message)) for x in w if issubclass(x.category, UserWarning)]
    torch.manual_seed(0)
    model = GPT(GPTConfig(**GPT2))
    optimizer = build_optimizer(model, ADAMW)
    _loss(model, _grads_batch(rank, WORLD))[0].backward()
    optimizer.step()
    try:
        FSDP2Parallel(info).wrap(model, optimizer)
        stateful = None
    except RuntimeError as e:
        stateful = str(e)
    torch.save({"unreduced": unreduced, "grads": grads if rank == 0 else None, "memory": memory,
                "warnings": caught, "stateful_error": stateful}, out / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def fsdp_job(tmp_path_factory):
    out = run_once(tmp_path_factory, "fsdp_job", lambda out: spawn_job(_fsdp_worker, WORLD, out))
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


SPAWNS = pytest.mark.timeout(SPAWN_TIMEOUT_S + 120)  # pytest's own limit (pyproject) must not cut the ranks' first


# -- 1. parity with DDP, reproducibility, accumulation ---------------------------------------------------------------
@SPAWNS
@pytest.mark.parametrize("task", ["lm", "masked"])
def test_fsdp2_trains_exactly_like_ddp_step_by_step(fsdp_job, task):
    out, _ = fsdp_job
    ddp, fsdp = train_losses(out / f"ddp_{task}"), train_losses(out / f"fsdp_{task}")
    assert len(fsdp) == STEPS
    # Both average the same two per-rank gradients in fp32: DDP all-reduces them, FSDP2 reduce-scatters them (a sum of
    # 2 terms, then / 2: the same rounding), and FSDP2 computes on the all-gathered copy of the very weights DDP holds.
    # Bitwise-equal in practice; 1e-5 leaves room for a reordered fp32 sum (~1e-7 relative per step over 6 steps),
    # while a sync bug (a shard updated from one rank's gradient, a sum instead of a mean under SGD) moves the loss by
    # >1e-3 from the second step on.
    torch.testing.assert_close(torch.tensor(fsdp), torch.tensor(ddp), rtol=0, atol=1e-5)
    assert fsdp[-1] < fsdp[0] - 0.1  # it trained: a run that never stepped would also "match" at step 1


@SPAWNS
def test_a_rerun_of_the_same_fsdp2_config_gives_identical_losses(fsdp_job):
    out, _ = fsdp_job
    assert train_losses(out / "fsdp_lm_again") == train_losses(out / "fsdp_lm")


@SPAWNS
def test_keeping_parameters_gathered_and_recomputing_activations_do_not_change_the_losses(fsdp_job):
    out, _ = fsdp_job
    # reshard_after_forward=False only skips the backward all-gather (the gathered copy is the same bits), and
    # activation checkpointing recomputes each block's forward from its saved input with the same kernels: the
    # arithmetic is unchanged, so the losses are too, bit for bit
    assert train_losses(out / "fsdp_lm_options") == train_losses(out / "fsdp_lm")


@SPAWNS
def test_fsdp2_accumulation_under_no_sync_equals_one_big_batch(fsdp_job):
    out, ranks = fsdp_job
    big, acc = train_losses(out / "fsdp_big"), train_losses(out / "fsdp_acc")
    # The same 16 windows per step (2 ranks x 2 micro-batches of 4, or 2 ranks x 1 of 8): the mean of two half-batch
    # means vs one mean, and locally summed unreduced gradients vs one reduce-scatter, differ by fp32 rounding only
    # (~1e-7 relative per step); 6 SGD steps keep that far below 1e-5, while a missing 1/k doubles the update.
    torch.testing.assert_close(torch.tensor(acc), torch.tensor(big), rtol=1e-5, atol=0)
    for r, rank in enumerate(ranks):
        # before the last micro-batch of each step no sharded parameter had a .grad: the first micro-batch's gradients
        # waited unreduced (set_requires_gradient_sync(False)) instead of being reduce-scattered at once
        assert rank["unreduced"]["fsdp_acc"] == [True] * STEPS, f"rank {r}: {rank['unreduced']['fsdp_acc']}"
        assert rank["unreduced"]["fsdp_big"] == []


# -- 6. per-rank data shards -----------------------------------------------------------------------------------------
@SPAWNS
def test_each_rank_trains_on_its_own_slice_of_the_one_process_batch(fsdp_job):
    out, _ = fsdp_job
    task = LMTask(TRAIN, VAL, T, loop_cfg().seed, 2, 8)
    for index in range(STEPS):
        ranks = [torch.load(out / "batches" / f"{index}_{r}of{WORLD}.pt", weights_only=True) for r in range(WORLD)]
        assert not torch.equal(ranks[0], ranks[1]), f"step {index}: both ranks trained on the same batch"
        single = task.batch(index, 0, 1, WORLD * MICRO)["input_ids"]
        assert torch.equal(torch.cat(ranks), single), f"step {index}: the ranks' batches are not the one-process batch"
    assert not (out / "batches" / f"{STEPS}_0of{WORLD}.pt").exists()  # one micro-batch per step, STEPS steps


# -- 4. bf16 parameters: fp32 vs bf16 gradient reduction --------------------------------------------------------------
def _relative_error(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    num = sum(((grads[k].double() - ref[k].double()) ** 2).sum() for k in ref)
    return float(torch.sqrt(num / sum((v.double() ** 2).sum() for v in ref.values())))


@SPAWNS
def test_bf16_params_reduce_gradients_more_accurately_in_fp32_than_in_bf16(fsdp_job):
    _, ranks = fsdp_job
    grads = ranks[0]["grads"]
    torch.manual_seed(0)
    model = GPT(GPTConfig(**GPT2))  # the fp32 reference: one process, the whole batch (the ranks' halves, joined)
    batch = _grads_batch(0, 1)
    _loss(model, batch)[0].backward()
    ref = {n: p.grad for n, p in model.named_parameters()}
    assert grads["fp32"].keys() == ref.keys()
    err = {case: _relative_error(g, ref) for case, g in grads.items()}
    numbers = ", ".join(f"{c}: {e:.3e}" for c, e in err.items())
    # fp32 FSDP2 only reorders fp32 sums (relative error ~1e-7); bf16 compute alone costs ~2^-9 = 2e-3 of relative
    # precision per rounding, and reducing in bf16 adds one more rounding of every summed gradient element on top.
    assert err["fp32"] < 1e-5, numbers
    assert err["bf16_fp32reduce"] < err["bf16_bf16reduce"], numbers
    assert err["bf16_bf16reduce"] < 0.1, numbers  # still the same gradient, only rounded
    differ = sum(int((grads["bf16_fp32reduce"][k] != grads["bf16_bf16reduce"][k]).sum()) for k in ref)
    total = sum(v.numel() for v in ref.values())
    assert differ > 0, f"bf16 reduction changed none of {total} gradient elements ({numbers})"
    print(f"relative gradient error vs fp32 one process: {numbers}; bf16 reduce changed {differ}/{total} elements")


# -- 9. shard_bytes ----------------------------------------------------------------------------------------------
def _one_adamw_step(cfg: dict) -> tuple[GPT, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**cfg))
    optimizer = build_optimizer(model, ADAMW)
    _loss(model, _grads_batch(0, 1))[0].backward()
    optimizer.step()
    return model, optimizer


def test_shard_bytes_of_a_plain_model_after_one_adamw_step_is_the_hand_count():
    model, optimizer = _one_adamw_step(MEM_GPT)
    params = list(model.parameters())  # the tied LM head / token embedding once
    numel = sum(p.numel() for p in params)
    # torch's AdamW keeps, per parameter, exp_avg and exp_avg_sq (fp32, the parameter's shape: 8 bytes per element)
    # and a 0-dim fp32 step counter (4 bytes; not capturable/fused, so not on the device either)
    steps = [s["step"] for s in optimizer.state.values()]
    assert len(steps) == len(params)
    assert all(s.dim() == 0 and s.dtype == torch.float32 for s in steps)
    held = shard_bytes(model, optimizer)
    assert held.n_params == numel == model.num_params(non_embedding=False)
    assert (held.params, held.grads, held.optimizer) == (4 * numel, 4 * numel, 8 * numel + 4 * len(params))
    assert held.total == 16 * numel + 4 * len(params)
    optimizer.zero_grad(set_to_none=True)
    assert shard_bytes(model, optimizer).grads == 0
    assert shard_bytes(model).optimizer == 0


def _chunk_rows(dim0: int, rank: int, world: int) -> int:
    """Rows of dim 0 that FSDP2 gives ``rank``: chunk ``rank`` of ``torch.chunk`` (ceil(dim0/world) rows each, the
    last ones shorter or absent)."""
    chunks = torch.chunk(torch.empty(dim0), world)
    return len(chunks[rank]) if rank < len(chunks) else 0


@SPAWNS
def test_fsdp2_ranks_hold_exactly_their_torch_chunk_share_and_nothing_is_lost(fsdp_job):
    _, ranks = fsdp_job
    model, optimizer = _one_adamw_step(MEM_GPT)
    single = shard_bytes(model, optimizer)
    n_tensors = len(list(model.parameters()))
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    for r, rank in enumerate(ranks):
        mem = rank["memory"]
        local = {n: (_chunk_rows(s[0], r, WORLD), *s[1:]) for n, s in shapes.items()}
        assert mem["local_shapes"] == local, f"rank {r}"
        numel = sum(math.prod(s) for s in local.values())
        assert mem["n_params"] == single.n_params  # the global count, whatever the rank
        # AdamW's moments are DTensors sharded like their parameter; the step counters are plain 0-dim fp32 tensors
        # that every rank keeps whole (replicated, 4 bytes per parameter tensor)
        assert mem["step_counters"] == [("Tensor", "torch.float32", 1)] * n_tensors, f"rank {r}"
        assert (mem["params"], mem["grads"], mem["optimizer"]) == (4 * numel, 4 * numel, 8 * numel + 4 * n_tensors)
    # sharding loses nothing: the shards add up to the one-process bytes (the replicated step counters N times)
    for field in ("params", "grads"):
        assert sum(rank["memory"][field] for rank in ranks) == getattr(single, field), field
    assert sum(rank["memory"]["optimizer"] for rank in ranks) == single.optimizer + (WORLD - 1) * 4 * n_tensors
    # and each rank holds about half: the 11-row embedding splits 6 + 5, so rank 0 holds 16 elements more
    assert ranks[0]["memory"]["params"] - ranks[1]["memory"]["params"] == 4 * MEM_GPT["n_embd"]


# -- 8. refusals -------------------------------------------------------------------------------------------------
@SPAWNS
def test_fsdp2_warns_with_more_ranks_than_blocks_and_refuses_an_optimizer_with_state(fsdp_job):
    _, ranks = fsdp_job
    for r, rank in enumerate(ranks):
        (one,), two = rank["warnings"][1], rank["warnings"][2]
        assert one[0] == "UserWarning", f"rank {r}: {one}"
        assert "on 2 ranks but GPT has 1 blocks" in one[1], f"rank {r}: {one}"
        assert "Use fewer ranks or parallel=ddp" in one[1], f"rank {r}: {one}"
        assert two == [], f"rank {r}: 2 ranks, 2 blocks must not warn: {two}"
        assert "optimizer has state before fully_shard" in (rank["stateful_error"] or ""), f"rank {r}"


def test_unknown_strategy_and_dtype_are_refused_naming_the_choices():
    info = DistInfo(0, 0, 1, None, torch.device("cpu"))
    with pytest.raises(DistSetupError, match=r"unknown parallel strategy 'zero9'\. Choose one of: auto, none, ddp, fsdp2"):
        build_parallel("zero9", info)
    with pytest.raises(ConfigError, match=r"fsdp\.param_dtype='fp16'.*fp32, bf16"):
        FSDPConfig(param_dtype="fp16").validate()
    with pytest.raises(ConfigError, match=r"fsdp\.reduce_dtype='float64'"):
        FSDPConfig(reduce_dtype="float64").validate()
    with pytest.raises(DistSetupError, match=r"parallel=fsdp2 needs a process group"):
        build_parallel("fsdp2", info)
    FSDPConfig(param_dtype="bf16", reduce_dtype="fp32").validate()  # the supported pair passes


# -- 7. a rank dying mid-step ------------------------------------------------------------------------------------
DEATH_TIMEOUT_S = 15  # the process group's collective timeout in the dying-rank test


class _DieAt(LMTask):
    """Rank 1's loss raises at optimizer step 2 (micro-batch index 2: one micro-batch per step)."""

    def batch(self, index, rank, world_size, size):
        self.index, self.rank = index, rank
        return super().batch(index, rank, world_size, size)

    def loss(self, model, batch):
        if self.rank == 1 and self.index == 2:
            raise RuntimeError("injected failure on rank 1")
        return super().loss(model, batch)


def _dying_worker(rank, out):
    import sys

    from shared.dist import failure_guard

    if rank == 0:  # everything rank 0 prints, Python's and torch's C++ alike, goes to a file the test reads
        log = os.open(out / "rank0.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(log, 1)
        os.dup2(log, 2)
        with contextlib.suppress(AttributeError):
            sys.stdout.reconfigure(line_buffering=True)
            sys.stderr.reconfigure(line_buffering=True)
    info = init_gloo(timeout_s=DEATH_TIMEOUT_S)
    with failure_guard(out / "failures", wait_s=10):
        loop = loop_cfg()
        fit_run(out / "run", build_parallel("fsdp2", info), loop, lm_task(loop, _DieAt))


@pytest.mark.timeout(SPAWN_TIMEOUT_S + 120)
def test_a_rank_dying_mid_step_ends_every_rank_with_an_error_naming_it(tmp_path):
    t0 = time.monotonic()
    codes = spawn_ranks(_dying_worker, WORLD, (tmp_path,))  # the default limit: only a hang fails it here
    elapsed = time.monotonic() - t0
    assert codes[0] != 0, codes
    assert codes[1] != 0, codes
    errors = tmp_path / "failures"
    assert "RuntimeError: injected failure on rank 1" in (errors / "rank1.error").read_text()
    log0 = (tmp_path / "rank0.log").read_text()
    assert "rank 0 stopped" in log0, log0
    assert "rank 1 failed" in log0, log0
    assert "RuntimeError: injected failure on rank 1" in log0, log0
    # rank 0 noticed within the collective timeout of rank 1's death (in practice at once: the peer's socket closes),
    # not after the spawn limit: its error file is written at its failure, before it waits for its peers' files
    gap = (errors / "rank0.error").stat().st_mtime - (errors / "rank1.error").stat().st_mtime
    assert gap < DEATH_TIMEOUT_S + 5, f"rank 0 failed {gap:.1f} s after rank 1"
    assert elapsed < SPAWN_TIMEOUT_S / 2, f"{elapsed:.0f} s"
    assert not (tmp_path / "run" / "checkpoints").exists()  # no checkpointer: nothing half-written either
