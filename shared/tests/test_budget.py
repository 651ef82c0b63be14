"""Token and wall-clock budgets: the loop stops at the budget, the schedule's decay ends there, resume keeps counting.

The time-budget tests run on a fake clock that advances exactly 1 s per training batch, so "stopped within one step
of the budget" is checked exactly rather than against a loaded machine's timings."""

import pytest

from shared.testing import SPAWN_TIMEOUT_S, spawn_ranks
from shared.tests.test_loop import SCHEDULE, T, _fit, _lm_task, _loop
from shared.train.config import LoopConfig, OptimConfig
from shared.train.optim import lr_at

TOKENS_PER_STEP = 8 * T  # _loop(): micro_batch 8, one rank, no accumulation


class FakeClock:
    """``time.perf_counter`` that only moves when a training batch is drawn (1 s each)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr("shared.train.loop.time.perf_counter", c)
    return c


def _ticking_task(clock):
    def make(loop):
        task = _lm_task(loop)
        draw = task.batch

        def batch(index, rank, world_size, size):
            clock.now += 1.0
            return draw(index, rank, world_size, size)

        task.batch = batch
        return task
    return make


def test_a_token_budget_stops_before_the_step_that_would_pass_it(tmp_path):
    budget = 13 * TOKENS_PER_STEP + TOKENS_PER_STEP // 2  # 13.5 steps
    _, _, result, rows = _fit(tmp_path, _loop(max_tokens=budget, max_steps=1000))
    assert (result.step, result.tokens, result.stopped_by, result.finished) == (13, 13 * TOKENS_PER_STEP,
                                                                                "max_tokens", True)
    assert budget - TOKENS_PER_STEP < result.tokens <= budget
    assert len(rows) == 13


def test_a_token_budget_of_whole_steps_gives_the_step_schedule(tmp_path):
    """20 steps' tokens decay like max_steps=20: the same lr at every step (to float rounding: the budget share is a
    ratio of token counts, the step schedule a ratio of steps)."""
    _, _, by_steps, steps_rows = _fit(tmp_path / "steps", _loop())
    _, _, by_tokens, token_rows = _fit(tmp_path / "tokens", _loop(max_tokens=20 * TOKENS_PER_STEP, max_steps=3))
    assert (by_tokens.step, by_tokens.stopped_by, by_steps.stopped_by) == (20, "max_tokens", "max_steps")
    assert token_rows.lr.tolist() == pytest.approx(steps_rows.lr.tolist(), rel=1e-12)
    assert token_rows.lr.tolist() == pytest.approx([lr_at(s, 20, 1e-2, SCHEDULE) for s in range(20)], rel=1e-12)
    assert token_rows.loss.tolist() == pytest.approx(steps_rows.loss.tolist(), rel=1e-5)


def test_a_token_budget_resumes_exactly(tmp_path):
    loop = {"max_tokens": 17 * TOKENS_PER_STEP}
    full_model, _, full, full_rows = _fit(tmp_path / "full", _loop(**loop))
    _, _, cut, _ = _fit(tmp_path / "cut", _loop(**loop, stop_at=6))
    assert (cut.step, cut.finished, cut.stopped_by) == (6, False, "stop_at")
    model, _, resumed, rows = _fit(tmp_path / "cut", _loop(**loop))
    assert (resumed.resumed_from, resumed.step, resumed.tokens) == (6, 17, full.tokens)
    assert rows.loss.tolist() == full_rows.loss.tolist()
    assert rows.lr.tolist() == full_rows.lr.tolist()


def test_a_time_budget_stops_at_the_first_step_that_reaches_it(tmp_path, clock):
    _, _, result, rows = _fit(tmp_path, _loop(max_seconds=7.5, max_steps=3), _ticking_task(clock))
    assert (result.step, result.stopped_by, result.finished) == (8, "max_seconds", True)
    assert result.train_time_s == pytest.approx(8.0)  # 7 s < 7.5 s after step 7: one more step, then stop
    assert result.train_time_s - result.last_step_s < 7.5 <= result.train_time_s  # passed by less than one step
    assert len(rows) == 8


def test_a_time_budget_decays_to_the_budget_and_resume_keeps_counting_seconds(tmp_path, clock):
    make = _ticking_task(clock)
    _, _, full, full_rows = _fit(tmp_path / "full", _loop(max_seconds=8.0), make)
    assert full.step == 8
    # 1 s per step: the share of the budget is step / 8, so the decay is the 8-step schedule's
    assert full_rows.lr.tolist() == pytest.approx([lr_at(s, 8, 1e-2, SCHEDULE) for s in range(8)], rel=1e-12)
    _, _, cut, _ = _fit(tmp_path / "cut", _loop(max_seconds=8.0, stop_at=3), make)
    assert (cut.step, cut.train_time_s) == (3, pytest.approx(3.0))
    _, _, resumed, rows = _fit(tmp_path / "cut", _loop(max_seconds=8.0), make)
    assert (resumed.resumed_from, resumed.step, resumed.train_time_s) == (3, 8, pytest.approx(8.0))
    assert rows.loss.tolist() == full_rows.loss.tolist()


def test_a_budget_smaller_than_one_step_or_two_budgets_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"loop.max_tokens=50 is smaller than one step \(64 tokens"):
        _fit(tmp_path / "a", _loop(max_tokens=50))
    with pytest.raises(ValueError, match="both set: a run has one budget"):
        _fit(tmp_path / "b", _loop(max_tokens=10_000, max_seconds=5.0))
    assert LoopConfig(max_seconds=3.0).budget == "max_seconds"


def _time_budget_worker(rank, out):
    import time as _time

    import torch

    from shared.dist import DistConfig, init_distributed
    from shared.models.gpt import GPT, GPTConfig
    from shared.parallel import build_parallel
    from shared.testing import DEBUG_GPT
    from shared.train.loop import fit
    from shared.train.optim import build_optimizer

    info = init_distributed(DistConfig(backend="gloo", timeout_s=60), device="cpu")
    parallel = build_parallel("auto", info)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**DEBUG_GPT))
    loop = _loop(max_seconds=1.0, micro_batch=4, eval_every=10_000)
    task = _lm_task(loop)
    draw = task.batch

    def slow_batch(index, r, world, size):  # rank 1's clock runs ahead: its local time would stop it first
        if rank == 1:
            _time.sleep(0.004)
        return draw(index, r, world, size)

    task.batch = slow_batch
    result = fit(model, task, build_optimizer(model, OptimConfig(lr=1e-2)), SCHEDULE, loop, parallel=parallel)
    torch.save({"step": result.step, "stopped_by": result.stopped_by, "weights": model.state_dict()},
               out / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.timeout(SPAWN_TIMEOUT_S + 120)
def test_ranks_agree_on_when_a_time_budget_ends(tmp_path):
    """Two gloo ranks whose clocks differ stop at the same step with identical weights (the mean time decides;
    each rank deciding on its own clock would hang one rank in an all-reduce the other never joins)."""
    import torch

    assert spawn_ranks(_time_budget_worker, 2, (tmp_path,)) == [0, 0]
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a["step"] == b["step"] > 0
    assert a["stopped_by"] == b["stopped_by"] == "max_seconds"
    for k, v in a["weights"].items():
        assert torch.equal(v, b["weights"][k]), k
