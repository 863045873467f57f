import dataclasses

import pytest
import torch

from fashion_ensemble.config import ANNConfig, CNNConfig
from fashion_ensemble.members import build_model
from fashion_ensemble.members.cnn import DSBlock, Residual
from fashion_ensemble.members.layers import Dropout, Normalize


@pytest.mark.parametrize(
    "kind, cfg",
    [
        ("ann", ANNConfig(hidden=(32, 16))),
        ("cnn", CNNConfig(stem=8, stages=((8,), (16, 16)))),
        ("cnn", CNNConfig(stem=8, stages=((8,), (16, 16)), dw_bn=False)),
        ("cnn", CNNConfig(stem=8, stages=((8,), (16, 16), (16,)), dw_bn=False, pool_first=True)),
        ("cnn", CNNConfig(stem=8, stages=((8, 8), (16, 16), (16, 16)), dw_bn=False, pool_first=True, residual=True)),
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


def test_pool_first_is_the_same_function_when_batchnorm_scales_up():
    # max-pool commutes with ReLU and with a per-channel affine map of positive scale: in eval mode, with the same
    # weights, pooling before BN + ReLU gives what pooling after them gives; only the layer order differs.
    torch.manual_seed(0)
    cfg = CNNConfig(stem=8, stages=((8, 8), (16,), (16,)), dw_bn=False)
    after = build_model("cnn", cfg)
    for m in after.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    before = build_model("cnn", dataclasses.replace(cfg, pool_first=True))
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in before.modules()) == 2
    order = [type(m).__name__ for m in before.body if not isinstance(m, DSBlock)]
    assert order[:7] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    kinds = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear, Normalize)
    source = [m for m in after.modules() if isinstance(m, kinds)]  # each kind in the same order in both models
    target = [m for m in before.modules() if isinstance(m, kinds)]
    def by_kind(m):
        return kinds.index(type(m))

    for s, t in zip(sorted(source, key=by_kind), sorted(target, key=by_kind), strict=True):
        t.load_state_dict(s.state_dict())
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(before.eval()(x), after.eval()(x), atol=1e-5)


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


def test_residual_wraps_only_the_blocks_that_keep_their_shape():
    # stem 8 → (8, 8) pooled → (16, 16): the first 8 → 8 block keeps its shape; the second is pooled inside
    # (pool_first); 8 → 16 widens; the last 16 → 16 keeps it.
    cfg = CNNConfig(stem=8, stages=((8, 8), (16, 16)), dw_bn=False, pool_first=True, residual=True)
    model = build_model("cnn", cfg)
    wrapped = [m for m in model.body if isinstance(m, Residual)]
    assert len(wrapped) == 2
    torch.manual_seed(0)
    x = torch.randn(3, 8, 14, 14)
    block = wrapped[0].eval()
    assert torch.allclose(block(x), torch.relu(x + block.block(x)))  # ReLU after the sum, not inside the branch
    assert not isinstance(block.block[-1], torch.nn.ReLU)
    plain = build_model("cnn", dataclasses.replace(cfg, residual=False))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
