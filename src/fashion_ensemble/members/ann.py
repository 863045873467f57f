"""The paper's fully connected member: its hyper-parameters (`ANNConfig`) and its network (`ANN`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fashion_ensemble.errors import check
from fashion_ensemble.members.layers import GREY, NUM_CLASSES, Classifier, Dropout, Normalize

MAX_WIDTH, MAX_LAYERS = 16_384, 16  # far above any useful ANN here (`best`'s is 3 × 1024), refused before it allocates


@dataclass(frozen=True)
class ANNConfig:
    hidden: tuple[int, ...] = (1024, 512)  # fully connected widths; 784→1024→512→10 is ~1.3M parameters
    dropout: float = 0.3  # after each hidden block

    def __post_init__(self):
        check(len(self.hidden) <= MAX_LAYERS and all(1 <= w <= MAX_WIDTH for w in self.hidden),
              "model.hidden", self.hidden, f"at most {MAX_LAYERS} widths, each 1..{MAX_WIDTH}")
        check(0 <= self.dropout < 1, "model.dropout", self.dropout, "a probability in [0, 1)")


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
