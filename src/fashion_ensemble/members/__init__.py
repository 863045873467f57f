"""Member kinds: each is one module holding its hyper-parameters (a frozen dataclass checked when built) and its
network (a `layers.Classifier` built as `model(config, num_classes, input_shape)`), registered here by one line.
A run's config names each member's kind; `build_model` builds it, and a config's decoder finds its class here.

Adding a kind (docs/architecture.md works one through): write `members/<kind>.py`, add its line to `KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fashion_ensemble.errors import UserError
from fashion_ensemble.members.ann import ANN, ANNConfig
from fashion_ensemble.members.cnn import DSCNN, CNNConfig
from fashion_ensemble.members.layers import GREY, NUM_CLASSES

MAX_PARAMETERS = 100_000_000  # 400 MB of fp32 weights, 31× the `best` profile's two members together (3.2M)


@dataclass(frozen=True)
class Kind:
    config: type  # the kind's hyper-parameters; may define check_input(name, input_shape) for a geometry's limits
    model: type  # model(config, num_classes, input_shape) → a layers.Classifier


KINDS: dict[str, Kind] = {
    "ann": Kind(ANNConfig, ANN),  # the paper's fully connected member
    "cnn": Kind(CNNConfig, DSCNN),  # the paper's depthwise-separable CNN
}


def kind(name: str) -> Kind:
    if name not in KINDS:
        *others, last = map(repr, KINDS)
        raise UserError(f"config: member kind must be {', '.join(others)} or {last}, got {name!r}")
    return KINDS[name]


def build_model(kind_name: str, cfg, num_classes: int = NUM_CLASSES, input_shape: tuple[int, int, int] = GREY
                ) -> nn.Module:
    return kind(kind_name).model(cfg, num_classes, input_shape)


def parameter_count(kind_name: str, cfg, num_classes: int = NUM_CLASSES,
                    input_shape: tuple[int, int, int] = GREY) -> int:
    """The member's parameters, counted on a model built on the meta device (shapes only: nothing is allocated)."""
    with torch.device("meta"):
        model = build_model(kind_name, cfg, num_classes, input_shape)
    return sum(p.numel() for p in model.parameters())


def check_member(name: str, kind_name: str, cfg, input_shape: tuple[int, int, int]) -> None:
    """Refuse a member that cannot take `input_shape` or would not fit in memory, before anything is allocated."""
    if hasattr(cfg, "check_input"):
        cfg.check_input(name, input_shape)
    size = parameter_count(kind_name, cfg, input_shape=input_shape)
    if size > MAX_PARAMETERS:
        c, h, w = input_shape
        raise UserError(f"config: members.{name} at {c}×{h}×{w} must have at most {MAX_PARAMETERS:,} parameters, "
                        f"got {size:,}; make it narrower or shallower")
