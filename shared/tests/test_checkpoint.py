import pytest
import torch
import torch.nn.functional as F

from shared.checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from shared.models import SoftmaxRegression


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


def test_save_load_gives_identical_outputs_and_optimizer_state(tmp_path):
    model, opt, x = _trained()
    path = save_checkpoint(tmp_path / "ck" / "last.pt", model, opt, progress={"step": 3}, meta={"note": "hi"})
    assert (tmp_path / "ck" / "last.meta.json").is_file()
    assert [p.name for p in (tmp_path / "ck").iterdir() if p.name.endswith(".tmp")] == []

    state = load_checkpoint(path)
    fresh = SoftmaxRegression(784, 10)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    load_model_state(fresh, state)
    fresh_opt.load_state_dict(state["optimizer"])
    assert torch.equal(fresh(x), model(x))
    for a, b in zip(opt.state.values(), fresh_opt.state.values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert state["progress"] == {"step": 3}
    assert state["meta"] == {"note": "hi"}


def test_checkpoint_of_another_shape_is_refused_with_the_mismatch(tmp_path):
    model, _, _ = _trained()
    path = save_checkpoint(tmp_path / "a.pt", model)
    other = SoftmaxRegression(784, 5)
    with pytest.raises(CheckpointError) as e:
        load_model_state(other, load_checkpoint(path))
    assert "linear.weight" in str(e.value)
    assert "(10, 784)" in str(e.value)
    assert "(5, 784)" in str(e.value)


def test_checkpoint_of_another_class_is_refused(tmp_path):
    model, _, _ = _trained()
    path = save_checkpoint(tmp_path / "a.pt", model)
    with pytest.raises(CheckpointError, match="SoftmaxRegression"):
        load_model_state(torch.nn.Linear(784, 10), load_checkpoint(path))


def test_missing_or_corrupt_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(bad)
