import math
import os
import signal

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from shared.data.sampling import batch_loader
from shared.models import ModelConfig, SoftmaxRegression
from shared.rundir import start_run
from shared.tracking import FileLogger
from shared.train.classify import fit_classifier
from shared.train.config import TrainConfig
from shared.train.trainer import NonFiniteLossError, Trainer


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 784, generator=g) * 0.5
    x[torch.arange(n), y * 7] += 3.0  # learnable: one feature per class
    return TensorDataset(x, y)


def _run(name, cfg: TrainConfig, root):
    run = start_run("test", name, "smoke", cfg, root=root)
    out = fit_classifier(run, ModelConfig(), cfg, _data(), _data(64, seed=1), batch_size=32, eval_batch_size=64)
    return out, pd.read_csv(run.dir / "metrics.csv")


def test_one_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = SoftmaxRegression()
    x, y = _data(32).tensors
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = F.cross_entropy(model(x), y)
    assert abs(before.item() - math.log(10)) < 0.3  # an untrained classifier is near chance
    opt.zero_grad()
    before.backward()
    opt.step()
    assert F.cross_entropy(model(x), y).item() < before.item()


def test_training_learns_and_changes_every_parameter(tmp_path):
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in SoftmaxRegression().state_dict().items()}
    out, m = _run("learn", TrainConfig(epochs=3, lr=0.1, device="cpu"), tmp_path)
    train = m[m.phase == "train"]
    assert train.loss.iloc[-5:].mean() < 0.5 * train.loss.iloc[:5].mean()
    assert out.result.best["acc"] > 0.5
    for k, v in out.model.state_dict().items():
        assert not torch.equal(v, init[k]), k


@pytest.mark.parametrize(("device", "extra"), [
    ("cpu", {}),
    ("cpu", {"grad_accum_steps": 2, "precision": "fp16"}),  # resume mid-epoch at a micro-batch offset, scaler state
    pytest.param("cuda", {}, marks=pytest.mark.gpu),
])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, device, extra):
    cfg = TrainConfig(epochs=3, lr=0.1, momentum=0.9, schedule="cosine", device=device, **extra)
    full, m_full = _run("full", cfg, tmp_path / "a")
    # 11 steps stop mid-epoch (8 micro-batches per epoch): the resume must restart inside an epoch.
    part_cfg = TrainConfig(**{**cfg.__dict__, "stop_at": 11})
    part, _ = _run("part", part_cfg, tmp_path / "b")
    assert part.result.interrupted
    assert part.result.step == 11
    resumed_run = start_run("test", "part", "smoke", part_cfg, root=tmp_path / "b")
    resumed_cfg = TrainConfig(**{**cfg.__dict__, "stop_at": 0})
    resumed = fit_classifier(resumed_run, ModelConfig(), resumed_cfg, _data(), _data(64, seed=1), 32, 64)
    m_res = pd.read_csv(resumed_run.dir / "metrics.csv")
    cols = ["phase", "step", "epoch", "loss", "lr", "acc"]
    pd.testing.assert_frame_equal(m_res[cols], m_full[cols], check_exact=True)
    assert resumed.result.best == full.result.best
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])


def test_same_seed_identical_different_seed_different(tmp_path):
    cols = ["step", "loss"]
    _, a = _run("a", TrainConfig(epochs=1, seed=5, device="cpu"), tmp_path / "1")
    _, b = _run("b", TrainConfig(epochs=1, seed=5, device="cpu"), tmp_path / "2")
    _, c = _run("c", TrainConfig(epochs=1, seed=6, device="cpu"), tmp_path / "3")
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    assert not a[cols].equals(c[cols])


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    x, y = _data(64).tensors
    x[5] = float("nan")
    ds = TensorDataset(x, y)
    model = SoftmaxRegression()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, opt, batch_loader(ds, 64, shuffle=True), batch_loader(ds, 64, shuffle=False),
                      TrainConfig(epochs=1, device="cpu"), tmp_path, FileLogger(tmp_path, "r", 0, tensorboard=False))
    with pytest.raises(NonFiniteLossError, match="step 0.*(?i:learning rate)"):
        trainer.fit()


class _CtrlCAt(TensorDataset):
    """Sends Ctrl-C to this process when the ``at``-th batch is fetched (batch_loader fetches whole batches)."""

    def __init__(self, ds: TensorDataset, at: int):
        super().__init__(*ds.tensors)
        self.at, self.calls = at, 0

    def __getitem__(self, index):
        self.calls += 1
        if self.calls == self.at + 1:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(index)


def _trainer(run_dir, train_ds, cfg):
    torch.manual_seed(cfg.seed)
    model = SoftmaxRegression()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    return Trainer(model, opt, batch_loader(train_ds, 32, shuffle=True, seed=cfg.seed),
                   batch_loader(_data(64, seed=1), 64, shuffle=False), cfg, run_dir,
                   FileLogger(run_dir, "r", 0, tensorboard=False))


def test_ctrl_c_finishes_the_step_saves_it_and_the_run_resumes_exactly(tmp_path):
    cfg = TrainConfig(epochs=2, lr=0.1, device="cpu", progress=False)
    full = _trainer(tmp_path / "full", _data(), cfg)
    full.fit()
    cut = _trainer(tmp_path / "cut", _CtrlCAt(_data(), at=5), cfg)
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    assert cut.checkpointer.path("last").name == "step-00000006"  # the step in flight finished and was saved
    resumed = _trainer(tmp_path / "cut", _data(), cfg)
    resumed.fit()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
