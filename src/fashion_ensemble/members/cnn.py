"""The paper's convolutional member: its hyper-parameters (`CNNConfig`) and its network (`DSCNN`), stages of
depthwise-separable blocks (`DSBlock`) with max-pooling between them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fashion_ensemble.errors import check
from fashion_ensemble.members.layers import GREY, NUM_CLASSES, Classifier, Dropout, Normalize

# Far above any useful CNN here (`best`'s is at most 288 wide, 7 blocks), refused before it allocates.
MAX_WIDTH, MAX_BLOCKS, MAX_STAGES = 4_096, 32, 5  # 5 stages: 28 → 14 → 7 → 3 → 1 pixels


@dataclass(frozen=True)
class CNNConfig:
    stem: int = 32  # channels of the plain 3×3 stem conv (a depthwise conv on 1 channel would be pointless)
    stages: tuple[tuple[int, ...], ...] = ((32,), (64, 64), (128, 128))  # DS-block widths per stage; max-pool between
    dropout: float = 0.2  # before the classifier, after global average pooling
    dw_bn: bool = True  # BN + ReLU after each depthwise conv too (MobileNet); False: none between depthwise and
    # pointwise (Keras SeparableConv2D, Xception): fewer memory-bound passes, faster steps
    pool_first: bool = False  # a stage's last block max-pooled before its BN + ReLU, which then run on a quarter of
    # the pixels: the same function when BN's scale is positive, but its statistics are the pooled maps'
    residual: bool = False  # x + block(x) where a block keeps its width and resolution (ResNet's identity shortcut),
    # the ReLU after the sum; no weights added

    def __post_init__(self):
        widths = [self.stem, *(w for stage in self.stages for w in stage)]
        check(all(1 <= w <= MAX_WIDTH for w in widths) and 0 < len(widths) - 1 <= MAX_BLOCKS
              and all(self.stages), "model.stem and model.stages", (self.stem, self.stages),
              f"widths 1..{MAX_WIDTH}, 1 to {MAX_BLOCKS} blocks, no empty stage")
        check(len(self.stages) <= MAX_STAGES, "model.stages", self.stages,
              f"at most {MAX_STAGES} stages (a 2×2 max-pool between two halves the image each time)")
        check(0 <= self.dropout < 1, "model.dropout", self.dropout, "a probability in [0, 1)")

    def check_input(self, name: str, input_shape: tuple[int, int, int]) -> None:
        """Refuse images too small for the stages: each max-pool halves them."""
        pools = len(self.stages) - 1
        check(2**pools <= input_shape[1], f"members.{name}.model.stages", self.stages,
              f"at most {1 + int(math.log2(input_shape[1]))} stages for {input_shape[1]}-pixel images "
              f"({pools} halvings leave less than a pixel)")


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
