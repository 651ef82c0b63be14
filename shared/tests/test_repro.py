import random

import numpy as np
import pytest
import torch

from shared.repro import environment, rng_state, seed_everything, set_rng_state


def _draw():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trip_restores_every_generator(tmp_path):
    seed_everything(123)
    _draw()
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = _draw()
    _draw()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draw() == expected


def test_same_seed_same_draws():
    seed_everything(7)
    a = _draw()
    seed_everything(7)
    assert _draw() == a
    seed_everything(8)
    assert _draw() != a


def test_environment_record_has_the_fields_the_log_header_needs():
    env = environment()
    for key in ("os", "python", "torch", "cuda", "cudnn", "driver", "gpus", "cpu_count", "git_commit", "git_dirty"):
        assert key in env
    assert env["torch"] == torch.__version__


@pytest.mark.gpu
def test_rng_state_restores_from_tensors_loaded_onto_the_gpu(tmp_path):
    seed_everything(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = _draw()
    set_rng_state(torch.load(tmp_path / "rng.pt", map_location="cuda", weights_only=True))
    assert _draw() == expected


def test_git_dirty_ignores_the_generated_weekly_logs(tmp_path, monkeypatch):
    import subprocess

    from shared import repro

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "docs" / "weekly-logs").mkdir(parents=True)
    (tmp_path / "docs" / "weekly-logs" / "week02.md").write_text("old log\n")
    (tmp_path / "train.py").write_text("lr = 0.1\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(repro, "REPO_ROOT", tmp_path)
    assert repro.environment()["git_dirty"] is False
    (tmp_path / "docs" / "weekly-logs" / "week02.md").write_text("regenerated log\n")
    assert repro.environment()["git_dirty"] is False  # a week rewriting its own log is not a source change
    (tmp_path / "train.py").write_text("lr = 0.2\n")
    assert repro.environment()["git_dirty"] is True


def test_a_copy_without_git_names_its_commit_and_dirtiness_from_the_environment(tmp_path, monkeypatch):
    from shared import repro

    monkeypatch.setattr(repro, "REPO_ROOT", tmp_path)  # no .git here: what tools/gpu_refs.py ships to a GPU
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # git must not find an outer repository
    monkeypatch.delenv("AIFS_GIT_DIRTY", raising=False)
    monkeypatch.setenv("AIFS_GIT_COMMIT", "0123456789abcdef")
    env = repro.environment()
    assert (env["git_commit"], env["git_dirty"]) == ("0123456789abcdef", None)
    for flag, dirty in (("1", True), ("0", False)):
        monkeypatch.setenv("AIFS_GIT_DIRTY", flag)
        assert repro.environment()["git_dirty"] is dirty
