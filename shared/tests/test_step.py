"""One optimizer step: accumulation equals a big batch, AMP paths run on CPU, NaN is refused."""

import pytest
import torch
import torch.nn.functional as F

from shared.amp import autocast, check_precision, grad_scaler
from shared.models import SmallCNN
from shared.train.step import NonFiniteLossError, train_step

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
    loss_big = train_step(big, opt_big, [(x, y)], F.cross_entropy)
    acc, opt_acc = _model_and_opt()
    micro = list(zip(x.chunk(k), y.chunk(k), strict=True))
    loss_acc = train_step(acc, opt_acc, micro, F.cross_entropy)
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
    loss = train_step(model, opt, [(x, y)], F.cross_entropy, precision="bf16")
    assert torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_fp16_with_grad_scaler_runs_on_cpu_and_skips_an_overflowing_step():
    model, opt = _model_and_opt()
    scaler = grad_scaler(CPU, "fp16")
    assert scaler.is_enabled()
    assert not grad_scaler(CPU, "bf16").is_enabled()
    x, y = _batch(16)
    loss = train_step(model, opt, [(x, y)], F.cross_entropy, precision="fp16", scaler=scaler)
    assert torch.isfinite(loss)
    assert scaler.get_scale() == 65536.0  # no overflow: the scale is kept (growth after 2000 good steps)
    # Force an overflow: a huge scale turns the fp16 gradients to inf, so the step is skipped and the scale halves.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)
    before = [p.clone() for p in model.parameters()]
    train_step(model, opt, [(x, y)], F.cross_entropy, precision="fp16", scaler=scaler)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert scaler.get_scale() == 2.0**119


def test_nan_loss_is_refused_before_the_weights_change():
    model, opt = _model_and_opt()
    x, y = _batch(8)
    x[0, 0, 0, 0] = float("nan")
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="lower the learning rate|Lower the learning rate"):
        train_step(model, opt, [(x, y)], F.cross_entropy)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown train.precision 'fp8'"):
        check_precision("fp8", CPU)
