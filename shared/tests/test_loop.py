"""The one step loop on the debug GPT: it learns; it resumes exactly after an interruption at a random step for three
kinds of task (pre-training, SFT-style masked targets, a policy beside a frozen reference); Ctrl-C stops at a step
boundary; accumulation at an equal global batch equals one big batch; the step-0 eval runs once across a resume; a
divergence names its step and the last good checkpoint; a checkpoint of another model or tokenizer is refused;
2 gloo ranks equal one process at the same global batch."""

import copy
import math
import os
import random
import signal

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from shared.checkpoint import CheckpointError, FileCheckpointer
from shared.models.gpt import GPT, GPTConfig
from shared.tasks.lm import IGNORE_INDEX, LMTask, causal_lm_loss
from shared.testing import DEBUG_GPT, SPAWN_TIMEOUT_S, debug_token_stream, spawn_ranks
from shared.tracking import FileLogger
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
from shared.train.loop import fit
from shared.train.optim import build_optimizer, lr_at
from shared.train.step import NonFiniteLossError
from shared.train.throughput import time_train_steps

DATA = debug_token_stream()
TRAIN, VAL = DATA[:3600], DATA[3600:]
T = DEBUG_GPT["block_size"]
SCHEDULE = ScheduleConfig(warmup_steps=4, min_lr=1e-3)


def _loop(**kw) -> LoopConfig:
    base = {"max_steps": 20, "micro_batch": 8, "eval_every": 5, "log_every": 1, "print_every": 0, "device": "cpu",
            "progress": False}
    return LoopConfig(**{**base, **kw})


def _lm_task(loop: LoopConfig) -> LMTask:
    return LMTask(TRAIN, VAL, T, loop.seed, 2, loop.micro_batch)


class MaskedTask(LMTask):
    """SFT-style targets: the first half of every window is a "prompt" (-100, no loss); only the rest is learned."""

    def batch(self, index, rank, world_size, size):
        b = super().batch(index, rank, world_size, size)
        targets = b["targets"].clone()
        targets[:, : targets.shape[1] // 2] = IGNORE_INDEX
        return {**b, "targets": targets}


class ReferenceTask(LMTask):
    """A policy beside a frozen reference model (the shape of DPO): cross-entropy + beta KL(policy || reference)."""

    def __init__(self, *args, reference: torch.nn.Module, beta: float = 0.5, **kw):
        super().__init__(*args, **kw)
        self.reference, self.beta = reference.eval().requires_grad_(False), beta

    def loss(self, model, batch):
        logits = model(batch["input_ids"])
        with torch.no_grad():
            ref = self.reference(batch["input_ids"])
        log_p, log_q = F.log_softmax(logits.float(), -1), F.log_softmax(ref.float(), -1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
        return causal_lm_loss(logits, batch["targets"]) + self.beta * kl, {"kl": kl.detach()}


class SequentialTask(LMTask):
    """Micro-batch ``index`` of ``size`` is windows ``index * size ...`` in order: k micro-batches of B are exactly
    the examples of one batch of k x B (the LM task draws each micro-batch afresh, so it cannot show this)."""

    def batch(self, index, rank, world_size, size):
        starts = torch.arange(index * size, (index + 1) * size) * 7 % (len(self.train) - T - 1)
        idx = starts[:, None] + torch.arange(T + 1)[None, :]
        chunk = self.train[idx]
        return {"input_ids": chunk[:, :-1], "targets": chunk[:, 1:]}


def _fit(run_dir, loop, make_task=_lm_task, optim=None, expect=None, model_cfg=None):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**(model_cfg or DEBUG_GPT)))
    task = make_task(loop) if make_task is not _reference_task else _reference_task(loop, model)
    optimizer = build_optimizer(model, optim or OptimConfig(lr=1e-2))
    logger = FileLogger(run_dir, "test", 0, tensorboard=False)
    checkpointer = FileCheckpointer(run_dir / "checkpoints", meta=expect)  # what it records, a resume must match
    result = fit(model, task, optimizer, SCHEDULE, loop, checkpointer=checkpointer, logger=logger, expect=expect)
    logger.close()
    rows = pd.read_csv(run_dir / "metrics.csv")
    return model, task, result, rows[rows.phase == "train"]


def _reference_task(loop, policy):
    return ReferenceTask(TRAIN, VAL, T, loop.seed, 2, loop.micro_batch, reference=copy.deepcopy(policy))


TASKS = {"lm": _lm_task, "masked": lambda loop: MaskedTask(TRAIN, VAL, T, loop.seed, 2, loop.micro_batch),
         "reference": _reference_task}


def test_training_starts_near_ln_vocab_and_the_loss_goes_down(tmp_path):
    _, _, result, train = _fit(tmp_path, _loop())
    assert [e["step"] for e in result.evals] == [0, 5, 10, 15, 20]
    assert abs(result.evals[0]["val_loss"] - math.log(8)) < 0.2
    assert result.evals[-1]["val_loss"] < result.evals[0]["val_loss"] - 0.5
    assert len(train) == 20
    assert (train.tokens_per_sec > 0).all()
    assert train.lr.iloc[0] == pytest.approx(lr_at(0, 20, 1e-2, SCHEDULE))
    assert result.finished
    assert result.tokens == 20 * 8 * T
    assert result.checkpoints["best"].is_dir()
    assert result.checkpoints["last"].name == "step-00000020"


def test_the_masked_task_learns_only_from_its_unmasked_targets():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**DEBUG_GPT))
    task = TASKS["masked"](_loop())
    b = task.batch(0, 0, 1, 8)
    loss, _ = task.loss(model, b)
    logits = model(b["input_ids"])
    half = T // 2
    expected = F.cross_entropy(logits[:, half:].flatten(0, 1), b["targets"][:, half:].flatten())
    torch.testing.assert_close(loss, expected)
    assert (b["targets"][:, :half] == IGNORE_INDEX).all()
    assert not torch.allclose(loss, causal_lm_loss(logits, LMTask.batch(task, 0, 0, 1, 8)["targets"]))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_resume_after_an_interruption_at_a_random_step_reproduces_the_run_exactly(tmp_path, name):
    cut = random.Random(name).randint(1, 19)  # a random step, the same on every run of the test
    full_model, full_task, full, m_full = _fit(tmp_path / "full", _loop(), TASKS[name])
    _, _, stopped, _ = _fit(tmp_path / "cut", _loop(stop_at=cut), TASKS[name])
    assert (stopped.step, stopped.finished) == (cut, False)
    model, task, resumed, m_cut = _fit(tmp_path / "cut", _loop(), TASKS[name])
    assert resumed.resumed_from == cut
    assert [e["val_loss"] for e in resumed.evals] == [e["val_loss"] for e in full.evals]
    assert m_cut.loss.tolist() == m_full.loss.tolist()
    for (k, a), b in zip(full_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    if name == "reference":  # the frozen model: untouched, outside the optimizer, and not what is saved
        torch.manual_seed(0)
        initial = GPT(GPTConfig(**DEBUG_GPT)).state_dict()
        for k, v in task.reference.state_dict().items():
            assert torch.equal(v, initial[k]), k
        assert m_full.kl.iloc[-1] > 0  # the policy moved away from it


class _InterruptAt(LMTask):
    def __init__(self, *args, at: int, **kw):
        super().__init__(*args, **kw)
        self.at = at

    def batch(self, index, rank, world_size, size):
        if index == self.at:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of a step
        return super().batch(index, rank, world_size, size)


def test_ctrl_c_finishes_the_step_saves_and_the_run_resumes_exactly(tmp_path):
    at = random.Random(3).randint(1, 18)
    _, _, full, m_full = _fit(tmp_path / "full", _loop())
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "cut", _loop(), lambda loop: _InterruptAt(TRAIN, VAL, T, loop.seed, 2, 8, at=at))
    assert FileCheckpointer(tmp_path / "cut" / "checkpoints").path("last").name == f"step-{at + 1:08d}"
    _, _, resumed, m_cut = _fit(tmp_path / "cut", _loop())
    assert [e["val_loss"] for e in resumed.evals] == [e["val_loss"] for e in full.evals]
    assert m_cut.loss.tolist() == m_full.loss.tolist()


def test_accumulation_k_at_an_equal_global_batch_equals_one_big_batch(tmp_path):
    sgd = OptimConfig(name="sgd", lr=0.5, momentum=0.9)
    seq = lambda loop: SequentialTask(TRAIN, VAL, T, loop.seed, 2, 8)  # noqa: E731
    big, _, r_big, m_big = _fit(tmp_path / "big", _loop(max_steps=10, micro_batch=8), seq, sgd)
    acc, _, r_acc, m_acc = _fit(tmp_path / "acc", _loop(max_steps=10, micro_batch=2, grad_accum_steps=4), seq, sgd)
    assert r_acc.tokens == r_big.tokens
    # fp32: the mean of 4 quarter-batch means vs one mean differs by rounding (~1e-7 relative) per step;
    # 10 SGD steps keep it far below 1e-5, while a wrong accumulation (a missing 1/k) is off by a factor of 4.
    torch.testing.assert_close(torch.tensor(m_acc.loss.tolist()), torch.tensor(m_big.loss.tolist()), rtol=1e-5, atol=0)
    for (k, a), b in zip(big.state_dict().items(), acc.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=k)


class _CrashAt(LMTask):
    def batch(self, index, rank, world_size, size):
        raise RuntimeError("killed after the step-0 checkpoint")


def test_the_step_0_eval_runs_once_even_when_the_run_resumes_from_step_0(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        _fit(tmp_path, _loop(), lambda loop: _CrashAt(TRAIN, VAL, T, loop.seed, 2, 8))
    assert FileCheckpointer(tmp_path / "checkpoints").path("last").name == "step-00000000"
    _, _, result, _ = _fit(tmp_path, _loop())
    assert [e["step"] for e in result.evals] == [0, 5, 10, 15, 20]
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert rows[rows.phase == "val"].step.tolist() == [0, 5, 10, 15, 20]


def test_a_divergent_run_stops_with_its_step_keeps_its_rows_and_names_the_last_good_checkpoint(tmp_path):
    loop = _loop(max_steps=50, eval_every=50, grad_clip=0.0)
    with pytest.raises(NonFiniteLossError, match=r"^step \d+: training loss is .*last good checkpoint is .*step-00000000") as e:
        _fit(tmp_path, loop, optim=OptimConfig(name="sgd", lr=1e8))
    assert 0 < e.value.step < 50
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert rows[rows.phase == "train"].step.max() == e.value.step  # every step before the divergence


def test_resume_refuses_a_checkpoint_of_another_model_or_tokenizer(tmp_path):
    _fit(tmp_path, _loop(stop_at=3), expect={"tokenizer_sha256": "a" * 64})
    with pytest.raises(CheckpointError, match=r"(?s)belongs to another run.*tokenizer_sha256.*aaaa.*bbbb.*resume=false"):
        _fit(tmp_path, _loop(), expect={"tokenizer_sha256": "b" * 64})
    with pytest.raises(CheckpointError, match=r"step-00000003 belongs to another run:\n  model_config: n_embd is 16 in "
                                              r"the checkpoint, 32 in this run\nFix: .*resume=false"):
        _fit(tmp_path, _loop(), expect={"tokenizer_sha256": "a" * 64}, model_cfg={**DEBUG_GPT, "n_embd": 32})
    _, _, result, _ = _fit(tmp_path, _loop(resume=False), model_cfg={**DEBUG_GPT, "n_embd": 32})
    assert (result.resumed_from, result.finished) == (0, True)  # started over; the old checkpoints set aside
    assert len(list(tmp_path.glob("checkpoints.replaced-*"))) == 1


def test_time_train_steps_reports_consistent_throughput_and_trains():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**DEBUG_GPT))
    before = model.lm_head.weight.detach().clone()
    m = time_train_steps(model, _lm_task(_loop()), OptimConfig(), micro_batch=4, steps=3, warmup=1)
    assert m["ms_per_step"] > 0
    assert m["peak_mem_gib"] > 0
    assert m["tokens_per_sec"] == pytest.approx(4 * 8 / (m["ms_per_step"] / 1e3))
    assert not torch.equal(before, model.lm_head.weight)  # the timed steps are real optimizer steps


class _Recording(LMTask):
    """Writes the first micro-batch this rank trained on."""

    def __init__(self, *args, out=None, **kw):
        super().__init__(*args, **kw)
        self.out = out

    def batch(self, index, rank, world_size, size):
        b = super().batch(index, rank, world_size, size)
        if index == 0 and self.out is not None:
            torch.save(b["input_ids"], self.out / f"batch{rank}of{world_size}.pt")
        return b


DDP_STEPS, DDP_SGD = 3, OptimConfig(name="sgd", lr=0.5, momentum=0.0, weight_decay=0.0)


def _ddp_run(out, world, micro):
    from shared.dist import DistConfig, init_distributed
    from shared.parallel import build_parallel

    info = init_distributed(DistConfig(backend="gloo", timeout_s=60), device="cpu")
    parallel = build_parallel("auto", info)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**DEBUG_GPT))
    init = copy.deepcopy(model.state_dict())
    loop = _loop(max_steps=DDP_STEPS, micro_batch=micro, eval_every=DDP_STEPS)
    task = _Recording(TRAIN, VAL, T, loop.seed, 2, 8, out=out)  # the same eval batches in both runs
    result = fit(model, task, build_optimizer(model, DDP_SGD), ScheduleConfig(name="constant", warmup_steps=0), loop,
                 parallel=parallel)
    if parallel.is_main:
        torch.save({"init": init, "final": model.state_dict(), "evals": result.evals}, out / f"state{world}.pt")
    return result


def _ddp_worker(rank, out):
    _ddp_run(out, 2, 4)
    torch.distributed.destroy_process_group()


@pytest.mark.timeout(SPAWN_TIMEOUT_S + 120)  # pytest's own limit (pyproject) must not cut the ranks' first
def test_two_gloo_ranks_equal_one_process_at_the_same_global_batch(tmp_path):
    assert spawn_ranks(_ddp_worker, 2, (tmp_path,)) == [0, 0]
    _ddp_run(tmp_path, 1, 8)  # one process, micro-batch 2 x 4: the same global batch
    single = torch.load(tmp_path / "batch0of1.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"batch{r}of2.pt", weights_only=True) for r in range(2)]
    assert not torch.equal(ranks[0], ranks[1])
    assert torch.equal(torch.cat(ranks), single)  # the ranks' batches are the one-process batch, split
    ddp, one = (torch.load(tmp_path / f"state{w}.pt", weights_only=True) for w in (2, 1))
    # The runs differ only in fp32 reduction order (gloo's all-reduce of two half-batch mean gradients vs one
    # full-batch mean): ~1e-7 relative per gradient element, carried by 3 SGD steps. So the parameters agree to
    # 1e-4 of the distance they moved, and the step-0 losses (before any update) to 1e-6 relative; a real DDP bug
    # (no averaging, the same batch on both ranks, a missed all-reduce) moves them by a sizeable share of the update.
    for k, v in one["final"].items():
        moved = (v - one["init"][k]).abs().max()
        gap = (ddp["final"][k] - v).abs().max()
        assert gap <= 1e-4 * moved + 1e-7, f"{k}: DDP vs one process {gap:.2e}, moved {moved:.2e}"
    assert ddp["evals"][0]["val_loss"] == pytest.approx(one["evals"][0]["val_loss"], rel=1e-6)
    assert ddp["evals"][-1]["val_loss"] == pytest.approx(one["evals"][-1]["val_loss"], rel=1e-5)
