"""One optimizer step: accumulation equals a big batch, AMP paths run on CPU, NaN is refused."""

import pytest
import torch
import torch.nn.functional as F

from shared.amp import autocast, check_precision, grad_scaler
from shared.models import SmallCNN
from shared.train.step import NonFiniteLossError, train_step, xy_loss

CE = xy_loss(F.cross_entropy)

CPU = torch.device("cpu")


def _batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _model_and_opt(seed=0):
    torch.manual_seed(seed)
    model = SmallCNN(width=4)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("k", [2, 4, 8])
def test_k_micro_batches_accumulate_to_the_gradient_of_one_k_times_larger_batch(k):
    x, y = _batch(32)
    big, opt_big = _model_and_opt()
    loss_big, _ = train_step(big, opt_big, [(x, y)], CE)
    acc, opt_acc = _model_and_opt()
    micro = list(zip(x.chunk(k), y.chunk(k), strict=True))
    loss_acc, _ = train_step(acc, opt_acc, micro, CE)
    torch.testing.assert_close(loss_acc, loss_big, atol=1e-6, rtol=0)
    for name, g in _grads(big).items():
        torch.testing.assert_close(_grads(acc)[name], g, atol=1e-6, rtol=0, msg=name)
    for (name, p), q in zip(big.named_parameters(), acc.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0, msg=name)


def test_bf16_autocast_runs_on_cpu_and_matmuls_run_in_bf16():
    model, opt = _model_and_opt()
    x, y = _batch(16)
    with autocast(CPU, "bf16"):
        assert model(x).dtype == torch.bfloat16
    before = [p.clone() for p in model.parameters()]
    loss, _ = train_step(model, opt, [(x, y)], CE, precision="bf16")
    assert torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_fp16_with_grad_scaler_runs_on_cpu_and_skips_an_overflowing_step():
    model, opt = _model_and_opt()
    scaler = grad_scaler(CPU, "fp16")
    assert scaler.is_enabled()
    assert not grad_scaler(CPU, "bf16").is_enabled()
    x, y = _batch(16)
    loss, _ = train_step(model, opt, [(x, y)], CE, precision="fp16", scaler=scaler)
    assert torch.isfinite(loss)
    assert scaler.get_scale() == 65536.0  # no overflow: the scale is kept (growth after 2000 good steps)
    # Force an overflow: a huge scale turns the fp16 gradients to inf, so the step is skipped and the scale halves.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)
    before = [p.clone() for p in model.parameters()]
    train_step(model, opt, [(x, y)], CE, precision="fp16", scaler=scaler)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert scaler.get_scale() == 2.0**119


def test_nan_loss_is_refused_before_the_weights_change():
    model, opt = _model_and_opt()
    x, y = _batch(8)
    x[0, 0, 0, 0] = float("nan")
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="lower the learning rate|Lower the learning rate"):
        train_step(model, opt, [(x, y)], CE)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_metrics_are_averaged_over_micro_batches_and_frozen_parameters_are_left_alone():
    model, _ = _model_and_opt()
    frozen = model.features[0].weight
    frozen.requires_grad_(False)
    before = frozen.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = _batch(16)

    def loss_fn(m, batch):
        logits = m(batch[0])
        return F.cross_entropy(logits, batch[1]), {"acc": (logits.argmax(1) == batch[1]).float().mean()}

    micro = list(zip(x.chunk(2), y.chunk(2), strict=True))
    with torch.no_grad():
        accs = [(model(a).argmax(1) == b).float().mean() for a, b in micro]
    _, metrics = train_step(model, opt, micro, loss_fn, grad_clip=1.0)
    torch.testing.assert_close(metrics["acc"], (accs[0] + accs[1]) / 2)
    assert torch.equal(frozen, before)
    assert frozen.grad is None


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown train.precision 'fp8'"):
        check_precision("fp8", CPU)


def test_gradient_clipping_caps_the_global_norm_and_reports_it():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.randn(8, 4) * 100, torch.randint(0, 3, (8,))
    stats = {}
    train_step(model, opt, [(x, y)], CE, grad_clip=0.5, stats=stats)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert stats["grad_norm"] > 0.5
    assert norm == pytest.approx(0.5, rel=1e-4)
