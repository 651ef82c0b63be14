"""The LM step loop: schedule values, AdamW groups, gradient clipping, loss going down, exact resume, FLOPs."""

import math

import pandas as pd
import pytest
import torch

from shared.flops import gpt_flops_per_token, mfu, peak_flops
from shared.models.gpt import GPT, GPTConfig
from shared.testing import DEBUG_GPT, debug_token_stream
from shared.tracking import MetricLogger
from shared.train.lm import LMTrainConfig, adamw_param_groups, lm_loss, lr_at, time_train_steps, train_lm
from shared.train.step import NonFiniteLossError, train_step

TINY = GPTConfig(**DEBUG_GPT)
_stream = debug_token_stream


def _cfg(**kw):
    base = {"max_steps": 20, "micro_batch": 8, "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 4, "eval_every": 5,
            "eval_iters": 2, "log_every": 1, "device": "cpu", "progress": False}
    return LMTrainConfig(**{**base, **kw})


def _train(run_dir, cfg, data=None):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**vars(TINY)))
    data = _stream() if data is None else data
    logger = MetricLogger(run_dir, "test", 0, tensorboard=False)
    return model, train_lm(model, data[:3600], data[3600:], cfg, TINY.block_size, run_dir, logger)


def test_warmup_cosine_values_at_the_key_steps():
    cfg = _cfg(max_steps=104, warmup_steps=4, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.25)
    assert lr_at(3, cfg) == pytest.approx(1.0)  # end of warm-up
    assert lr_at(4, cfg) == pytest.approx(1.0)
    assert lr_at(54, cfg) == pytest.approx(0.55)  # half-way through the cosine: (lr + min_lr) / 2
    assert lr_at(104, cfg) == pytest.approx(0.1)
    assert lr_at(50, _cfg(schedule="constant", lr=0.3)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="cosine, constant"):
        lr_at(0, _cfg(schedule="step"))


def test_adamw_groups_decay_matrices_but_not_norms_biases_or_embeddings():
    model = GPT(GPTConfig(**vars(TINY)))
    decay, no_decay = adamw_param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}  # the tied weight appears once, as wte.weight
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0
    assert decayed == {n for n in names.values() if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))}
    assert {"wte.weight", "wpe.weight.weight", "norm_f.weight", "norm_f.bias"} <= kept
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_gradient_clipping_caps_the_global_norm_and_reports_it():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.randn(8, 4) * 100, torch.randint(0, 3, (8,))
    stats = {}
    train_step(model, opt, [(x, y)], torch.nn.functional.cross_entropy, grad_clip=0.5, stats=stats)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert stats["grad_norm"] > 0.5
    assert norm == pytest.approx(0.5, rel=1e-4)


def test_training_starts_near_ln_vocab_and_the_loss_goes_down(tmp_path):
    model, result = _train(tmp_path, _cfg())
    evals = result.evals
    assert [e["step"] for e in evals] == [0, 5, 10, 15, 20]
    assert abs(evals[0]["val_loss"] - math.log(8)) < 0.2
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    rows = pd.read_csv(tmp_path / "metrics.csv")
    train_rows = rows[rows.phase == "train"]
    assert len(train_rows) == 20
    assert (train_rows.tokens_per_sec > 0).all()
    assert train_rows.lr.iloc[0] == pytest.approx(lr_at(0, _cfg()))
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    full_model, full = _train(tmp_path / "full", _cfg())
    _train(tmp_path / "cut", _cfg(stop_at=7))  # stops at step 7, between evals
    resumed_model, resumed = _train(tmp_path / "cut", _cfg())
    assert [e["val_loss"] for e in resumed.evals] == [e["val_loss"] for e in full.evals]
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    m_full = pd.read_csv(tmp_path / "full" / "metrics.csv")
    m_cut = pd.read_csv(tmp_path / "cut" / "metrics.csv")
    assert m_full.loss.tolist() == m_cut.loss.tolist()


def test_lm_loss_accepts_logits_or_a_model_output_tuple():
    logits, y = torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))
    ref = torch.nn.functional.cross_entropy(logits.reshape(6, 5), y.reshape(6))
    assert lm_loss(logits, y) == pytest.approx(ref.item())
    assert lm_loss((logits, None), y) == pytest.approx(ref.item())


def test_flops_per_token_and_mfu():
    # nanoGPT's GPT-2 small figures: N = 85M non-embedding, L=12, H=12, Q=64, T=1024
    assert gpt_flops_per_token(85_000_000, 12, 12, 64, 1024) == 6 * 85e6 + 12 * 12 * 12 * 64 * 1024
    assert mfu(1000.0, 1e9, 1e13) == pytest.approx(0.1)
    assert mfu(1000.0, 1e9, None) is None
    assert peak_flops("cpu", "bf16")[0] is None


def test_a_divergent_run_stops_with_its_step_and_keeps_its_metrics(tmp_path):
    cfg = _cfg(optimizer="sgd", lr=1e8, warmup_steps=0, grad_clip=0.0, max_steps=50, eval_every=50)
    with pytest.raises(NonFiniteLossError, match=r"^step \d+: training loss is") as info:
        _train(tmp_path, cfg)
    assert 0 < info.value.step < 50
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert rows[rows.phase == "train"].step.max() == info.value.step  # every step before the divergence
    with pytest.raises(ValueError, match="adamw, sgd"):
        _train(tmp_path / "x", _cfg(optimizer="lion"))


def test_time_train_steps_reports_consistent_throughput_and_trains():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**vars(TINY)))
    before = model.lm_head.weight.detach().clone()
    m = time_train_steps(model, _stream(), _cfg(), batch_size=4, block_size=8, steps=3, warmup=1)
    assert m["ms_per_step"] > 0
    assert m["peak_mem_gib"] > 0
    assert m["tokens_per_sec"] == pytest.approx(4 * 8 / (m["ms_per_step"] / 1e3))
    assert not torch.equal(before, model.lm_head.weight)  # the timed steps are real optimizer steps
