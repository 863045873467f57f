import pytest
import torch

from fashion_ensemble.config import ANNConfig, CNNConfig
from fashion_ensemble.models import Dropout, DSBlock, build_model


@pytest.mark.parametrize(
    "kind, cfg",
    [
        ("ann", ANNConfig(hidden=(32, 16))),
        ("cnn", CNNConfig(stem=8, stages=((8,), (16, 16)))),
        ("cnn", CNNConfig(stem=8, stages=((8,), (16, 16)), dw_bn=False)),
    ],
)
def test_logits_shape_and_every_parameter_gets_a_gradient(kind, cfg):
    torch.manual_seed(0)
    model = build_model(kind, cfg)
    x = torch.rand(6, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (6, 10)
    torch.nn.functional.cross_entropy(logits, torch.arange(6)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"


def test_ds_block_is_depthwise_then_pointwise():
    block = DSBlock(16, 32)
    convs = [m for m in block if isinstance(m, torch.nn.Conv2d)]
    assert [c.groups for c in convs] == [16, 1]
    assert [c.kernel_size for c in convs] == [(3, 3), (1, 1)]
    assert sum(m.weight.numel() for m in convs) == 9 * 16 + 16 * 32  # against 9·16·32 for a plain 3×3 conv
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in block) == 2


def test_separable_block_without_inner_bn_is_keras_separable_conv():
    block = DSBlock(16, 32, dw_bn=False)
    assert [type(m).__name__ for m in block] == ["Conv2d", "Conv2d", "BatchNorm2d", "ReLU"]
    assert [m.groups for m in block if isinstance(m, torch.nn.Conv2d)] == [16, 1]


def test_normalisation_is_part_of_the_state():
    model = build_model("ann", ANNConfig(hidden=(8,)))
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())


def test_dropout_drops_p_and_rescales_in_training_only():
    torch.manual_seed(0)
    drop = Dropout(0.3)
    x = torch.ones(400, 500, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.01  # 200,000 draws: the share dropped is p ± 0.003 (1σ 0.001)
    assert torch.allclose(y[kept], torch.tensor(1 / 0.7))  # survivors scaled so the expectation stays x
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient passes through the same mask and scale
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
