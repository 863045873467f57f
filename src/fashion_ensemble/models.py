"""The two members: a fully connected ANN and a depthwise-separable CNN. Both take images in [0, 1] of shape
(N, C, S, S) — `input_shape` (C, S, S), Fashion-MNIST's (1, 28, 28) unless the data set's geometry differs —,
normalise them with the training set's statistics (stored as buffers, so a saved model is self-contained), and return
logits (N, num_classes): 10 for Fashion-MNIST, as many as the data set's classes."""

from __future__ import annotations

import torch
from torch import nn

from .config import GREY, ANNConfig, CNNConfig

NUM_CLASSES = 10  # Fashion-MNIST's


class Normalize(nn.Module):
    """(x - mean) / std with the training part's statistics; buffers travel with the weights."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Dropout(nn.Dropout):
    """nn.Dropout with its mask drawn as uniform ≥ p: torch's CPU bernoulli_ is slow (4.0 ms for a 256×1024
    activation against 1.7 ms this way, 2 cores), and it was a fifth of the default ANN's training step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = (torch.rand_like(x, dtype=torch.float32) >= self.p).to(x.dtype).mul_(1 / (1 - self.p))
        return x * keep


class Classifier(nn.Module):
    """What both members share: `normalize`, then `body`, a Sequential whose last layer is the linear classifier."""

    normalize: Normalize
    body: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the classifier reads, (N, D): the ANN's last hidden layer, the CNN's globally pooled last stage
        (ood.py measures them)."""
        return self.body[:-1](self.normalize(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, D) → logits (N, classes): forward(x) == classify(features(x))."""
        return self.body[-1](features)


class ANN(Classifier):
    """Flatten → [Linear → BatchNorm → ReLU → Dropout] per hidden width → Linear."""

    def __init__(self, cfg: ANNConfig, num_classes: int = NUM_CLASSES, input_shape: tuple[int, int, int] = GREY):
        super().__init__()
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        self.normalize = Normalize()
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_shape[0] * input_shape[1] * input_shape[2]
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            layers += [Dropout(cfg.dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.body = nn.Sequential(*layers)


def conv_bn_relu(cin: int, cout: int, kernel: int, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class DSBlock(nn.Sequential):
    """Depthwise 3×3 (one filter per channel: spatial) → pointwise 1×1 (mixes channels), each with BN and ReLU, or
    with `dw_bn=False` BN and ReLU after the pointwise conv only (Keras SeparableConv2D); `out_bn=False` leaves them
    off the end too, for the caller to apply after pooling, and `out_relu=False` leaves off only the last ReLU, for
    the caller to apply after a sum. About 9·cin + cin·cout weights against 9·cin·cout for a plain 3×3 conv."""

    def __init__(self, cin: int, cout: int, dw_bn: bool = True, out_bn: bool = True, out_relu: bool = True):
        depthwise = conv_bn_relu(cin, cin, 3, groups=cin) if dw_bn else [
            nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)]
        pointwise = [nn.Conv2d(cin, cout, 1, bias=False)]
        if out_bn:
            pointwise.append(nn.BatchNorm2d(cout))
        if out_bn and out_relu:
            pointwise.append(nn.ReLU(inplace=True))
        super().__init__(*depthwise, *pointwise)


class Residual(nn.Module):
    """ReLU(x + block(x)) for a block that keeps x's shape and ends without a ReLU (ResNet: the ReLU after the sum)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.block(x))


class DSCNN(Classifier):
    """3×3 stem (on C input channels) → stages of DS blocks with 2×2 max-pool between (28→14→7) → global average
    pool → dropout → Linear. With `pool_first`, a stage's last block is pooled before its BN and ReLU (conv → pool →
    BN → ReLU). With `residual`, each block that keeps its input's width and is not pooled inside is `Residual`."""

    def __init__(self, cfg: CNNConfig, num_classes: int = NUM_CLASSES, input_shape: tuple[int, int, int] = GREY):
        super().__init__()
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        self.normalize = Normalize()
        layers: list[nn.Module] = conv_bn_relu(input_shape[0], cfg.stem, 3)
        width = cfg.stem
        for i, stage in enumerate(cfg.stages):
            pooled = i < len(cfg.stages) - 1  # every stage but the last ends in a 2×2 max-pool
            for j, cout in enumerate(stage):
                pool_here = pooled and j == len(stage) - 1
                if pool_here and cfg.pool_first:
                    layers += [DSBlock(width, cout, cfg.dw_bn, out_bn=False), nn.MaxPool2d(2),
                               nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                else:
                    if cfg.residual and cout == width:
                        layers.append(Residual(DSBlock(width, cout, cfg.dw_bn, out_relu=False)))
                    else:
                        layers.append(DSBlock(width, cout, cfg.dw_bn))
                    if pool_here:
                        layers.append(nn.MaxPool2d(2))
                width = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), Dropout(cfg.dropout), nn.Linear(width, num_classes)]
        self.body = nn.Sequential(*layers)


def build_model(kind: str, cfg: ANNConfig | CNNConfig, num_classes: int = NUM_CLASSES,
                input_shape: tuple[int, int, int] = GREY) -> nn.Module:
    if kind == "ann":
        return ANN(cfg, num_classes, input_shape)
    if kind == "cnn":
        return DSCNN(cfg, num_classes, input_shape)
    raise ValueError(f"unknown member kind {kind!r}; expected 'ann' or 'cnn'")
