"""Optimizers from param groups and the schedule: values at the key steps, torch's own schedulers as references."""

import math

import pytest
import torch

from shared.models.gpt import GPT, GPTConfig
from shared.testing import DEBUG_GPT
from shared.train.config import OptimConfig, ScheduleConfig, TrainConfig
from shared.train.optim import build_optimizer, build_scheduler, lr_at, param_groups


def _factor(step, total, cfg: TrainConfig):
    return lr_at(step, total, 1.0, cfg.schedule_config())


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
    assert _factor(0, 110, cfg) == pytest.approx(0.1)
    assert _factor(9, 110, cfg) == pytest.approx(1.0)
    assert _factor(10, 110, cfg) == pytest.approx(1.0)
    assert _factor(60, 110, cfg) == pytest.approx(0.5)
    assert _factor(110, 110, cfg) == pytest.approx(0.0, abs=1e-12)
    assert _factor(50, 110, TrainConfig()) == 1.0


def test_warmup_cosine_to_min_lr_at_the_key_steps():
    cfg = ScheduleConfig(name="cosine", warmup_steps=4, min_lr=0.1)
    assert lr_at(0, 104, 1.0, cfg) == pytest.approx(0.25)
    assert lr_at(3, 104, 1.0, cfg) == pytest.approx(1.0)  # end of warm-up
    assert lr_at(4, 104, 1.0, cfg) == pytest.approx(1.0)
    assert lr_at(54, 104, 1.0, cfg) == pytest.approx(0.55)  # half-way through the cosine: (lr + min_lr) / 2
    assert lr_at(104, 104, 1.0, cfg) == pytest.approx(0.1)
    assert lr_at(50, 104, 0.3, ScheduleConfig(name="constant", warmup_steps=0)) == pytest.approx(0.3)
    assert lr_at(54, 104, 1.0, ScheduleConfig(name="linear", warmup_steps=4, min_lr=0.1)) == pytest.approx(0.55)


def test_unknown_names_are_errors():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="optim.name 'lion'"):
        build_optimizer(model, TrainConfig(optimizer="lion").optim())
    with pytest.raises(ValueError, match="schedule.name 'step'"):
        build_scheduler(torch.optim.SGD(model.parameters(), lr=1), TrainConfig(schedule="step"), 10)
    with pytest.raises(ValueError, match="param_groups 'some'"):
        param_groups(model, "some", 0.1)
    assert math.isclose(build_optimizer(model, TrainConfig(optimizer="adamw", lr=3e-4).optim()).param_groups[0]["lr"],
                        3e-4)


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
    assert [_factor(s, 110, cfg) for s in (0, 9, 10, 60, 110)] == pytest.approx([0.1, 1.0, 1.0, 0.5, 0.0])


def test_the_classifier_optimizer_is_torch_s_with_one_group():
    model = torch.nn.Linear(2, 2)
    sgd = build_optimizer(model, TrainConfig(momentum=0.9, nesterov=True, weight_decay=1e-3).optim())
    assert (sgd.param_groups[0]["nesterov"], sgd.param_groups[0]["weight_decay"], len(sgd.param_groups)) == (True, 1e-3, 1)
    adamw = build_optimizer(model, TrainConfig(optimizer="adamw", weight_decay=0.01).optim())
    assert adamw.param_groups[0]["betas"] == (0.9, 0.999)  # torch's default, as the classifier weeks always had


def test_decay_matrices_groups_skip_norms_biases_and_embeddings():
    model = GPT(GPTConfig(**DEBUG_GPT))
    decay, no_decay = param_groups(model, "decay_matrices", 0.1)
    names = {id(p): n for n, p in model.named_parameters()}  # the tied weight appears once, as wte.weight
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert {names[id(p)] for p in decay["params"]} == {
        n for n in names.values() if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))}
    assert {"wte.weight", "wpe.weight.weight", "norm_f.weight", "norm_f.bias"} <= {names[id(p)] for p in no_decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_only_trainable_parameters_reach_the_optimizer():
    model = GPT(GPTConfig(**DEBUG_GPT))
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("blocks.0.mlp"))  # e.g. an adapter: the rest is frozen
    opt = build_optimizer(model, OptimConfig())
    seen = {id(p) for g in opt.param_groups for p in g["params"]}
    assert seen == {id(p) for n, p in model.named_parameters() if n.startswith("blocks.0.mlp")}
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_optimizer(model, OptimConfig())
