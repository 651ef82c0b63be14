"""The CIFAR models: shapes, normalisation choices, BatchNorm train/eval behaviour, initialisation statistics."""

import math

import pytest
import torch
from torch import nn

from shared.models import ModelConfig, build_model
from shared.models.convnet import init_weights, norm2d

CIFAR = {"in_channels": 3, "num_classes": 10}


@pytest.mark.parametrize("name", ["cnn_small", "resnet9"])
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
@pytest.mark.parametrize("batch", [1, 7])
def test_output_shape_for_every_model_norm_and_batch_size(name, norm, batch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, norm=norm, width=8, **CIFAR))
    logits = model(torch.randn(batch, 3, 32, 32))
    assert logits.shape == (batch, 10)
    assert torch.isfinite(logits).all()


def test_norm_choice_builds_the_named_layer():
    assert isinstance(norm2d("batch", 4), nn.BatchNorm2d)
    gn = norm2d("layer", 4)
    assert isinstance(gn, nn.GroupNorm)
    assert gn.num_groups == 1
    assert isinstance(norm2d("none", 4), nn.Identity)
    with pytest.raises(ValueError, match="unknown model.norm 'instance'"):
        norm2d("instance", 4)


def test_batchnorm_eval_uses_running_statistics():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cnn_small", width=8, **CIFAR))
    x = torch.randn(16, 3, 32, 32) * 3 + 1
    model.train()
    for _ in range(3):
        model(x)  # updates the running mean/var
    train_out = model(x)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    running = bn.running_mean.clone()
    model.eval()
    eval_out, eval_again = model(x), model(x)
    assert not torch.allclose(train_out, eval_out, atol=1e-4)  # batch statistics vs running statistics
    assert torch.equal(eval_out, eval_again)  # deterministic
    assert torch.equal(bn.running_mean, running)  # eval does not update the running stats
    one = model(x[:1])
    torch.testing.assert_close(one, eval_out[:1], atol=1e-5, rtol=1e-5)  # eval output independent of the batch


def test_layer_norm_variant_is_independent_of_the_batch_in_train_mode():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cnn_small", norm="layer", width=8, **CIFAR)).train()
    x = torch.randn(6, 3, 32, 32)
    torch.testing.assert_close(model(x[:2]), model(x)[:2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("scheme", "expected_std"), [
    ("kaiming", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    ("xavier", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
])
def test_init_schemes_give_the_textbook_weight_std(scheme, expected_std):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cnn_small", init=scheme, width=32, **CIFAR))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs[1:]:  # the first conv has only 3*9 = 27 inputs per output: too few weights to judge
        fan_in = conv.in_channels * 9
        fan_out = conv.out_channels * 9
        std = conv.weight.std().item()
        assert abs(std / expected_std(fan_in, fan_out) - 1) < 0.10, (conv, std)


def test_default_init_is_left_alone_and_unknown_init_is_refused():
    torch.manual_seed(0)
    a = build_model(ModelConfig(name="cnn_small", width=8, **CIFAR))
    torch.manual_seed(0)
    b = build_model(ModelConfig(name="cnn_small", init="default", width=8, **CIFAR))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(ValueError, match="unknown model.init 'orthogonal'"):
        init_weights(a, "orthogonal")
