"""Checkpoint folders: safetensors round trip with tied weights, keep_last_k and best, a save killed half-way,
truncated files, another model's or tokenizer's checkpoint, dangling pointers, starting over."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from shared.checkpoint import CheckpointError, FileCheckpointer, load_model, read_checkpoint
from shared.models import SoftmaxRegression
from shared.models.gpt import GPT, GPTConfig
from shared.paths import REPO_ROOT
from shared.testing import DEBUG_GPT


def _gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**DEBUG_GPT))


def _trained(seed=0):
    torch.manual_seed(seed)
    model = SoftmaxRegression(784, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 784), torch.randint(0, 10, (16,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt, x


def test_save_load_gives_identical_outputs_optimizer_state_and_progress(tmp_path):
    model, opt, x = _trained()
    ck = FileCheckpointer(tmp_path / "ck", meta={"note": "hi"})
    path = ck.save(3, model, opt, state={"extra": torch.arange(3)}, progress={"step": 3, "evals": [{"loss": 0.5}]})
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors", "train_state.pt"]
    fresh = SoftmaxRegression(784, 10)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    loaded = FileCheckpointer(tmp_path / "ck").load(fresh, fresh_opt)
    assert torch.equal(fresh(x), model(x))
    for a, b in zip(opt.state.values(), fresh_opt.state.values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert loaded.step == 3
    assert loaded.progress == {"step": 3, "evals": [{"loss": 0.5}]}
    assert loaded.meta["note"] == "hi"
    assert torch.equal(loaded.state["extra"], torch.arange(3))


def test_tied_weights_are_stored_once_and_come_back_tied(tmp_path):
    from safetensors import safe_open

    model = _gpt()
    path = FileCheckpointer(tmp_path).save(0, model)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "wte.weight" in keys
    assert "lm_head.weight" not in keys
    assert read_checkpoint(path).meta["tied"] == {"lm_head.weight": "wte.weight"}
    fresh = _gpt(seed=1)
    load_model(fresh, path)
    assert fresh.lm_head.weight is fresh.wte.weight
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert read_checkpoint(path).meta["model_config"]["n_embd"] == DEBUG_GPT["n_embd"]


def test_keep_last_k_keeps_the_newest_and_the_best(tmp_path):
    model, opt, _ = _trained()
    ck = FileCheckpointer(tmp_path, keep_last_k=2)
    for step in range(1, 6):
        ck.save(step, model, opt, best=step == 2)
    assert [p.name for p in ck.steps()] == ["step-00000002", "step-00000004", "step-00000005"]
    assert (ck.path("last").name, ck.path("best").name) == ("step-00000005", "step-00000002")
    assert os.readlink(tmp_path / "last") == "step-00000005"  # relative: the run folder can move


KILLED_SAVE = """
import os, signal, sys, torch
import safetensors.torch as st
from shared.checkpoint import FileCheckpointer
from shared.models import SoftmaxRegression
torch.manual_seed(0)
model = SoftmaxRegression(784, 10)
ck = FileCheckpointer(sys.argv[1])
ck.save(1, model)
real = st.save_file
def half_then_die(tensors, path, metadata=None):
    real(tensors, path, metadata=metadata)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    os.kill(os.getpid(), signal.SIGKILL)  # no finally, no cleanup: like a kill -9 or a power cut
st.save_file = half_then_die
with torch.no_grad():
    model.linear.weight.add_(1.0)
ck.save(2, model)
"""


def test_a_save_killed_half_way_leaves_the_previous_checkpoint_loadable_and_the_orphan_is_removed(tmp_path):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_SAVE), str(tmp_path)], cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    orphans = list(tmp_path.glob(".tmp-step-00000002-*"))
    assert len(orphans) == 1  # the half-written folder, never renamed into place
    ck = FileCheckpointer(tmp_path)  # opening the folder removes it
    assert not list(tmp_path.glob(".tmp-*"))
    assert [p.name for p in ck.steps()] == ["step-00000001"]
    torch.manual_seed(0)
    expected = SoftmaxRegression(784, 10)
    fresh = SoftmaxRegression(784, 10)
    assert ck.load(fresh).step == 1
    assert torch.equal(fresh.linear.weight, expected.linear.weight)  # weights and meta of the same save


def test_a_truncated_checkpoint_is_refused_naming_the_file_and_the_intact_one(tmp_path):
    model, opt, _ = _trained()
    ck = FileCheckpointer(tmp_path, keep_last_k=3)
    for step in (1, 2):
        ck.save(step, model, opt)
    weights = tmp_path / "step-00000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"(?s)model.safetensors is 100 bytes, its meta.json says .* bytes.*"
                                              r"ln -sfn step-00000001 .*/last.*loop.resume=false"):
        ck.load(SoftmaxRegression(784, 10))
    os.remove(tmp_path / "last")
    os.symlink("step-00000009", tmp_path / "last")
    with pytest.raises(CheckpointError, match="points at step-00000009, which does not exist"):
        ck.load(SoftmaxRegression(784, 10))


def test_another_model_s_checkpoint_is_refused_with_the_mismatch(tmp_path):
    model, _, _ = _trained()
    ck = FileCheckpointer(tmp_path)
    ck.save(1, model)
    with pytest.raises(CheckpointError) as e:
        ck.load(SoftmaxRegression(784, 5))
    assert "linear.weight" in str(e.value)
    assert "(10, 784)" in str(e.value)
    assert "(5, 784)" in str(e.value)
    with pytest.raises(CheckpointError, match="model_class: the checkpoint has 'SoftmaxRegression', this run has 'GPT'"):
        ck.load(_gpt())


def test_another_tokenizer_s_checkpoint_is_refused(tmp_path):
    FileCheckpointer(tmp_path, meta={"tokenizer_sha256": "a" * 64}).save(1, _gpt())
    with pytest.raises(CheckpointError, match="tokenizer_sha256: the checkpoint has 'aaaa.*', this run has 'bbbb"):
        FileCheckpointer(tmp_path).load(_gpt(), expect={"tokenizer_sha256": "b" * 64})
    assert FileCheckpointer(tmp_path).load(_gpt(), expect={"tokenizer_sha256": "a" * 64}).step == 1


def test_missing_or_foreign_folders_are_clear_errors(tmp_path):
    assert FileCheckpointer(tmp_path / "none").load(_gpt()) is None  # nothing to resume: a fresh run
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path / "bad")


def test_starting_over_sets_the_old_checkpoints_aside(tmp_path):
    model, _, _ = _trained()
    ck = FileCheckpointer(tmp_path / "checkpoints")
    ck.save(1, model)
    ck.reset()
    assert not (tmp_path / "checkpoints").exists()
    aside = list(tmp_path.glob("checkpoints.replaced-*"))
    assert len(aside) == 1
    assert read_checkpoint(aside[0] / "step-00000001").step == 1
