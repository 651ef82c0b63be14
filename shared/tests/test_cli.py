"""The week command line: an explained error prints its message and exits 2; a bug keeps its traceback; Ctrl-C
prints one line and exits 130; a bad config value stops a week before it starts."""

import os
import subprocess
import sys

import pytest

from shared.cli import run_week
from shared.config import ConfigError


def _fails(exc):
    def main():
        raise exc
    return main


def test_an_explained_error_prints_its_fix_without_a_traceback(capsys, monkeypatch):
    monkeypatch.delenv("AIFS_TRACEBACK", raising=False)
    assert run_week(_fails(ConfigError("unknown config key 'train.lrr'. Fix the spelling"))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'train.lrr'")
    assert "Traceback" not in err
    assert run_week(lambda: 0) == 0


def test_a_bug_or_aifs_traceback_keeps_the_traceback(monkeypatch):
    monkeypatch.delenv("AIFS_TRACEBACK", raising=False)
    with pytest.raises(ZeroDivisionError):
        run_week(_fails(ZeroDivisionError("a bug")))
    monkeypatch.setenv("AIFS_TRACEBACK", "1")
    with pytest.raises(ConfigError):
        run_week(_fails(ConfigError("bad key")))


def test_ctrl_c_prints_one_line_and_exits_130(capsys, monkeypatch):
    monkeypatch.delenv("AIFS_TRACEBACK", raising=False)
    assert run_week(_fails(KeyboardInterrupt())) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["interrupted (Ctrl-C): stopped with exit status 130"]
    monkeypatch.setenv("AIFS_TRACEBACK", "1")
    with pytest.raises(KeyboardInterrupt):
        run_week(_fails(KeyboardInterrupt()))


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIFS_TRACEBACK": "", "CI": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, **kw)


@pytest.mark.parametrize(("week", "override", "message"), [
    ("week04_transformer", "optim.lr=-1", "error: optim.lr=-1: must be > 0 (from command line). Fix: set optim.lr"),
    ("week04_transformer", "model.block_size=1000000000", "error: model.block_size=1000000000: must be in [1, 1048576]"),
    ("week04_transformer", "optim.lr=[1", "error: override optim.lr=[1: not a valid value ("),
    ("week01_scaffold", "train.lr=-1", "error: train.lr=-1: must be > 0"),
])
def test_a_week_refuses_a_bad_config_value_before_it_starts(week, override, message, aifs_dirs):
    out = _run("-m", week, "--profile", "smoke", override)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(message), out.stderr
    assert "Traceback" not in out.stderr
    assert not any(aifs_dirs["runs"].iterdir())  # nothing was started


CTRL_C_RUN = """
import os, signal, sys
from shared.checkpoint import FileCheckpointer
from shared.cli import run_week
from shared.models.gpt import GPT, GPTConfig
from shared.tasks.lm import LMTask
from shared.testing import DEBUG_GPT, debug_token_stream
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
from shared.train.loop import fit
from shared.train.optim import build_optimizer

class CtrlCAt(LMTask):
    def batch(self, index, rank, world_size, size):
        if index == 5:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of step 5
        return super().batch(index, rank, world_size, size)

def main():
    data = debug_token_stream()
    model = GPT(GPTConfig(**DEBUG_GPT))
    loop = LoopConfig(max_steps=20, micro_batch=4, eval_every=10, device="cpu", progress=False)
    fit(model, CtrlCAt(data[:3600], data[3600:], 8, 0, 2, 4), build_optimizer(model, OptimConfig()),
        ScheduleConfig(warmup_steps=0), loop, checkpointer=FileCheckpointer(sys.argv[1]))
    return 0

sys.exit(run_week(main))
"""


def test_ctrl_c_in_a_training_run_saves_the_step_and_exits_130_without_a_traceback(tmp_path):
    out = _run("-c", CTRL_C_RUN, str(tmp_path / "ckpt"))
    assert out.returncode == 130, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert "interrupted: saved step 6" in out.stdout + out.stderr  # the step in flight finished and was saved
    assert out.stderr.strip().splitlines()[-1] == "interrupted (Ctrl-C): stopped with exit status 130"
    assert (tmp_path / "ckpt" / "step-00000006").is_dir()
