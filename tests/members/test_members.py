import dataclasses

import pytest
import torch

from fashion_ensemble import members
from fashion_ensemble.config import ANNConfig, CNNConfig, MemberConfig, RunConfig
from fashion_ensemble.errors import UserError
from fashion_ensemble.members import build_model
from fashion_ensemble.members.cnn import DSBlock, Residual
from fashion_ensemble.members.layers import Classifier, Dropout, Normalize
from helpers import smoke_config


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


# -- a third kind, added as docs/architecture.md shows: one module's worth of code and one registry line -------------


@dataclasses.dataclass(frozen=True)
class LogRegConfig:
    bias: bool = True  # the example's one hyper-parameter


class LogReg(Classifier):
    """Multinomial logistic regression on the pixels: Flatten → Linear."""

    def __init__(self, cfg: LogRegConfig, num_classes: int = 10, input_shape=(1, 28, 28)):
        super().__init__()
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        self.normalize = Normalize()
        width = input_shape[0] * input_shape[1] * input_shape[2]
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(width, num_classes, bias=cfg.bias))


@pytest.mark.slow
def test_a_third_kind_is_one_module_and_one_registry_line(tmp_path, tiny_data, monkeypatch):
    import fashion_ensemble as fe

    monkeypatch.setitem(members.KINDS, "logreg", members.Kind(LogRegConfig, LogReg))
    cfg = smoke_config()
    cfg = cfg.replace(members={**cfg.members, "lin": MemberConfig("logreg", LogRegConfig(), cfg.members["ann"].train)})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # its config decodes from JSON through the registry
    run = fe.train(cfg, tmp_path / "run", data_dir=tiny_data, device="cpu", progress=False)
    model = fe.load(run)  # and the run folder rebuilds it from config.json alone
    assert isinstance(model.members["lin"].model, LogReg)
    assert fe.RunFolder(run).metrics()["models"]["lin"]["accuracy"] > 0.2  # 10 classes: chance is 0.1


def test_model_sizes_come_from_the_model_built_on_the_meta_device():
    cfg = ANNConfig(hidden=(32, 16))
    built = build_model("ann", cfg, 10, (1, 28, 28))
    assert members.parameter_count("ann", cfg, 10, (1, 28, 28)) == sum(p.numel() for p in built.parameters())
    wide = CNNConfig(stem=8, stages=((8,), (16, 16)))
    assert members.parameter_count("cnn", wide, 10, (3, 64, 64)) == sum(
        p.numel() for p in build_model("cnn", wide, 10, (3, 64, 64)).parameters())
    huge = ANNConfig(hidden=(16_384,) * 2)  # within each field's bounds, but 12.9 + 268 M weights at 3×224×224
    with pytest.raises(UserError, match=r"members.ann at 3×224×224 must have at most 100,000,000 parameters, got "):
        smoke_config(channels=3, image_size=224).replace(
            members={"ann": MemberConfig("ann", huge, smoke_config().members["ann"].train)})
