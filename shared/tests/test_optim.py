import math

import pytest
import torch

from shared.train.config import TrainConfig
from shared.train.optim import build_optimizer, build_scheduler, lr_factor


def test_cosine_matches_torch_cosine_annealing():
    cfg = TrainConfig(lr=0.5, schedule="cosine")
    p = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.SGD([p], lr=0.5)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=100)
    mine = build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5), cfg, 100)
    for _ in range(100):
        assert mine.get_last_lr()[0] == pytest.approx(ref.get_last_lr()[0], rel=1e-9, abs=1e-12)
        ref_opt.step()
        ref.step()
        mine.optimizer.step()
        mine.step()


def test_warmup_then_cosine_values():
    cfg = TrainConfig(schedule="cosine", warmup_steps=10)
    assert lr_factor(0, 110, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 110, cfg) == pytest.approx(1.0)
    assert lr_factor(10, 110, cfg) == pytest.approx(1.0)
    assert lr_factor(60, 110, cfg) == pytest.approx(0.5)
    assert lr_factor(110, 110, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, 110, TrainConfig()) == 1.0


def test_unknown_names_are_errors():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="train.optimizer"):
        build_optimizer(model, TrainConfig(optimizer="lion"))
    with pytest.raises(ValueError, match="train.schedule"):
        build_scheduler(torch.optim.SGD(model.parameters(), lr=1), TrainConfig(schedule="step"), 10)
    assert math.isclose(build_optimizer(model, TrainConfig(optimizer="adamw", lr=3e-4)).param_groups[0]["lr"], 3e-4)


def test_linear_decay_matches_torch_linear_lr_and_warmup_makes_it_one_cycle():
    p = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.SGD([p], lr=0.4)
    ref = torch.optim.lr_scheduler.LinearLR(ref_opt, start_factor=1.0, end_factor=0.0, total_iters=50)
    mine = build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4),
                           TrainConfig(lr=0.4, schedule="linear"), 50)
    for _ in range(50):
        assert mine.get_last_lr()[0] == pytest.approx(ref.get_last_lr()[0], rel=1e-9, abs=1e-12)
        ref_opt.step()
        ref.step()
        mine.optimizer.step()
        mine.step()
    cfg = TrainConfig(schedule="linear", warmup_steps=10)
    assert [lr_factor(s, 110, cfg) for s in (0, 9, 10, 60, 110)] == pytest.approx([0.1, 1.0, 1.0, 0.5, 0.0])


def test_nesterov_reaches_the_optimizer():
    model = torch.nn.Linear(2, 2)
    assert build_optimizer(model, TrainConfig(momentum=0.9, nesterov=True)).param_groups[0]["nesterov"] is True
