"""Run folders: a lock against a second identical run, orphans of killed writes removed, one registry line per
finished run (a re-run reuses it, and its wall time is not overwritten)."""

import json
from dataclasses import dataclass

import pytest

from shared.models.gpt import GPT, GPTConfig
from shared.results import read_runs
from shared.rundir import RunLockedError, finish_run, start_run
from shared.tasks.lm import LMTaskConfig
from shared.testing import DEBUG_GPT, debug_token_stream
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig, run_identity
from shared.train.pretrain import LMSetup, pretrain


@dataclass
class Cfg:
    a: int


@dataclass
class RunCfg:
    loop: LoopConfig


def test_a_second_identical_run_is_refused_while_the_first_runs(tmp_path):
    first = start_run("test", "r", "smoke", Cfg(1), root=tmp_path)
    with pytest.raises(RunLockedError, match=r"is in use by pid \d+ on .* since .*: .*Wait for that run"):
        start_run("test", "r", "smoke", Cfg(1), root=tmp_path)
    other = start_run("test", "r", "smoke", Cfg(2), root=tmp_path)  # another config: another folder, no conflict
    other.close()
    first.close()
    with start_run("test", "r", "smoke", Cfg(1), root=tmp_path) as again:
        assert again.dir == first.dir


def test_orphans_of_killed_atomic_writes_are_removed_when_the_run_opens(tmp_path):
    with start_run("test", "r", "smoke", Cfg(1), root=tmp_path) as run:
        folder = run.dir
    orphan = folder / ".metrics.csv.abc123.tmp"  # what atomic_path leaves when its process is killed
    orphan.write_text("half")
    keep = folder / "notes.tmp"  # not a hidden temp file of ours
    keep.write_text("mine")
    with start_run("test", "r", "smoke", Cfg(1), root=tmp_path):
        assert not orphan.exists()
        assert keep.exists()


def test_finish_run_registers_once(tmp_path, monkeypatch):
    monkeypatch.setenv("AIFS_RUNS_ROOT", str(tmp_path))
    with start_run("test", "r", "smoke", Cfg(1)) as run:
        first = finish_run(run, 0, {"val_loss": 1.0}, 2.0)
    with start_run("test", "r", "smoke", Cfg(1)) as run:
        assert run.finished
        again = finish_run(run, 0, {"val_loss": 9.0}, 99.0)
    assert again == first
    assert len(read_runs(tmp_path / "registry.jsonl")) == 1
    assert json.loads((run.dir / "result.json").read_text())["wall_time_s"] == first["wall_time_s"]


def _setup(**loop):
    base = {"max_steps": 12, "micro_batch": 8, "eval_every": 6, "log_every": 1, "device": "cpu", "progress": False}
    return LMSetup(GPTConfig(**DEBUG_GPT), OptimConfig(lr=1e-2), ScheduleConfig(warmup_steps=2, min_lr=1e-3),
                   LoopConfig(**{**base, **loop}), LMTaskConfig(eval_iters=2))


def test_pretrain_registers_a_finished_run_once_and_reuses_it(aifs_dirs):
    data = debug_token_stream()
    setup = _setup()
    run_cfg = RunCfg(run_identity(setup.loop))
    stopped = pretrain("test", "lm", "smoke", run_cfg, _setup(stop_at=5), data[:3600], data[3600:],
                       tokenizer_sha256="a" * 64)
    assert (stopped.fit.step, stopped.record) == (5, None)  # stopped early: not finished, not registered
    assert read_runs() == []
    done = pretrain("test", "lm", "smoke", run_cfg, setup, data[:3600], data[3600:], tokenizer_sha256="a" * 64)
    assert (done.fit.step, done.fit.resumed_from, done.skipped) == (12, 5, False)
    reused = pretrain("test", "lm", "smoke", run_cfg, setup, data[:3600], data[3600:], tokenizer_sha256="a" * 64)
    assert reused.skipped
    assert reused.record == done.record
    assert [r["run_id"] for r in read_runs()] == [done.run.run_id]  # one line per finished run
    assert reused.fit.evals == done.fit.evals  # the step-0 eval was not repeated


def test_pretrain_refuses_too_little_data_or_a_run_that_cannot_fit_before_opening_a_run(aifs_dirs):
    from dataclasses import replace

    import torch

    from shared.config import ConfigError
    from shared.data.sampling import TooFewTokensError
    from shared.train.pretrain import check_fits, training_bytes

    data = debug_token_stream()
    setup = _setup()
    with pytest.raises(TooFewTokensError, match=r"the validation split has 5 tokens, too few for model.block_size=8"):
        pretrain("test", "lm", "smoke", {"x": 1}, setup, data[:3600], data[:5])
    huge = replace(setup, model=replace(setup.model, block_size=2**20))  # 1M tokens of context
    weights, attention = training_bytes(huge)
    assert attention == 1 * 8 * 2 * 2**40 * 4  # n_layer x micro_batch x n_head x T^2 x fp32: 64 TiB
    assert weights == 16 * sum(p.numel() for p in GPT(huge.model).parameters())  # fp32 weight, grad, 2 AdamW moments
    with pytest.raises(ConfigError) as e:
        check_fits(huge, torch.device("cpu"))
    msg = str(e.value)
    assert "model.block_size=1048576 squared x loop.micro_batch=8 x model.n_head=2 x model.n_layer=1" in msg
    assert "Fix: lower model.block_size or loop.micro_batch" in msg
    assert "model.attn_backend=torch" in msg
    check_fits(replace(huge, model=replace(huge.model, attn_backend="torch")), torch.device("cpu"))  # no T x T
    wide = replace(setup, model=replace(setup.model, block_size=3000),  # fits the data
                   loop=replace(setup.loop, micro_batch=2**20))  # but a million windows a batch: 2**20 x 3000^2 x ...
    with pytest.raises(ConfigError, match=r"this run needs at least .* loop.micro_batch=1048576"):
        pretrain("test", "lm", "smoke", {"x": 2}, wide, data, data)
    assert not (aifs_dirs["runs"] / "test").exists()  # refused before a run folder was made
