"""What every member kind shares: the input's normalisation, a faster dropout, and `Classifier`, the shape of a
member (normalise → body, whose last layer is the linear classifier). A member takes images in [0, 1] of shape
(N, C, S, S) — `input_shape` (C, S, S), Fashion-MNIST's (1, 28, 28) unless the data set's geometry differs —,
normalises them with the training set's statistics (stored as buffers, so a saved model is self-contained), and
returns logits (N, num_classes)."""

from __future__ import annotations

import torch
from torch import nn

GREY = (1, 28, 28)  # Fashion-MNIST's input shape (channels, height, width): the default geometry
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
    """nn.Dropout with its mask drawn as uniform ≥ p: torch's CPU bernoulli_ is about twice as slow, and was a fifth
    of the default ANN's training step (docs/performance.md)."""

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
