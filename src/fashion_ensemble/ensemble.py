"""Inference: a member's `predict_proba`, soft voting over members, and voting weights tuned on validation.

`predict_proba(images)` takes (N, 28, 28) uint8 in Fashion-MNIST's convention (garment bright on black) or float in
[0, 1], and returns a float64 numpy array (N, 10) whose rows sum to 1. Nothing here computes metrics or prints.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from .data import CLASSES
from .errors import UserError
from .train import predict_logits


def check_images(images) -> torch.Tensor:
    """Validate a batch and return float32 (N, 1, 28, 28) in [0, 1] on the CPU."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise UserError(f"expected a numpy array of shape (N, 28, 28), got {type(images).__name__}")
    if images.ndim == 2 and images.shape == (28, 28):
        raise UserError("expected a batch (N, 28, 28), got one image (28, 28): pass images[None] for a batch of one")
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise UserError(
            f"expected 28×28 greyscale images as (N, 28, 28), got shape {images.shape}: "
            "use fashion_ensemble.preprocess for photos of other sizes or colour"
        )
    if images.dtype == np.uint8:
        x = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        x = images.astype(np.float32)
        if x.size and (not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0):
            raise UserError(
                f"float images must lie in [0, 1], got values in [{np.nanmin(x):.3g}, {np.nanmax(x):.3g}]"
                " (or non-finite): divide uint8 pixels by 255"
            )
    else:
        raise UserError(f"expected uint8 (0-255) or float (0-1) pixels, got dtype {images.dtype}")
    return torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)


class Member:
    """One trained model with `predict_proba`; `kind` is "ann" or "cnn". With `tta_flip`, the probabilities are the
    mean of the image's and its mirror's. A `temperature` other than 1 rescales those probabilities as
    softmax(log p / T) (fit on validation by the study when the profile calibrates its members)."""

    def __init__(self, kind: str, model: torch.nn.Module, device: torch.device | str = "cpu", tta_flip: bool = False,
                 temperature: float = 1.0):
        if not (np.isfinite(temperature) and temperature > 0):
            raise UserError(f"a member's temperature must be a positive number, got {temperature!r}")
        self.kind = kind
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tta_flip = tta_flip
        self.temperature = float(temperature)
        self.classes = list(CLASSES)

    def predict_proba(self, images) -> np.ndarray:
        return self._proba(check_images(images))

    def _proba(self, x: torch.Tensor) -> np.ndarray:
        """x: checked float (N, 1, 28, 28) on the CPU → probabilities (N, 10), float64."""
        x = x.to(self.device)
        proba = softmax(predict_logits(self.model, x).cpu().numpy())
        if self.tta_flip:
            proba = (proba + softmax(predict_logits(self.model, x.flip(-1)).cpu().numpy())) / 2
        return proba if self.temperature == 1.0 else temperature_scale(proba, self.temperature)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 so that rows sum to 1 within 1e-12."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def temperature_scale(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities as if their logits were divided by `temperature`: softmax(log p / T). T > 1 softens."""
    return softmax(np.log(np.clip(proba, 1e-300, None)) / temperature)


def check_weights(weights, names) -> np.ndarray:
    """One non-negative finite weight per member, not all zero; returned normalised to sum 1."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    if len(w) != len(names):
        raise UserError(f"expected one voting weight per member ({len(names)}: {', '.join(names)}), got {list(w)}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise UserError(f"voting weights must be finite and non-negative, got {list(w)}")
    if w.sum() == 0:
        raise UserError(f"voting weights must not all be zero, got {list(w)}")
    return w / w.sum()


def soft_vote(probas: list[np.ndarray], weights) -> np.ndarray:
    """Weighted average of members' probabilities: (M × (N, 10)) → (N, 10)."""
    w = check_weights(weights, [str(i) for i in range(len(probas))])
    return np.tensordot(w, np.stack(probas), axes=1)


class SoftVotingEnsemble:
    """Members' class probabilities averaged with `weights` (normalised). `.members` maps name → Member."""

    def __init__(self, members: dict[str, Member], weights=None):
        if not members:
            raise UserError("an ensemble needs at least one member")
        self.members = dict(members)
        weights = [1.0] * len(self.members) if weights is None else weights
        self.weights = dict(zip(self.members, check_weights(weights, list(self.members)).tolist()))
        self.classes = list(CLASSES)

    def predict_proba(self, images) -> np.ndarray:
        return self.predict_proba_members(images)[0]

    def predict_proba_members(self, images) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(the ensemble's probabilities (N, 10), {member name: its probabilities (N, 10)})."""
        x = check_images(images)  # validate once, before any member runs
        member_probas = {name: m._proba(x) for name, m in self.members.items()}
        return self.vote(member_probas), member_probas

    def vote(self, member_probas: dict[str, np.ndarray]) -> np.ndarray:
        """The ensemble's probabilities from its members' (name → (N, 10)), as `predict_proba` combines them."""
        return soft_vote([member_probas[name] for name in self.members], list(self.weights.values()))

    def predict(self, images) -> np.ndarray:
        return self.predict_proba(images).argmax(axis=1)


def tune_weights(val_probas: list[np.ndarray], y_val: np.ndarray, step: float = 0.05) -> np.ndarray:
    """Voting weights on a grid over the simplex (resolution `step`) maximising validation accuracy; ties go to the
    lower validation log-loss, then to the more equal weighting. Returns weights summing to 1."""
    m = len(val_probas)
    ticks = round(1 / step)
    best_key, best_w = None, None
    stacked = np.stack(val_probas)  # (M, N, 10)
    for combo in itertools.product(range(ticks + 1), repeat=m - 1):
        if sum(combo) > ticks:
            continue
        w = np.array([*combo, ticks - sum(combo)], dtype=np.float64) / ticks
        p = np.tensordot(w, stacked, axes=1)
        acc = float((p.argmax(1) == y_val).mean())
        nll = float(-np.log(np.clip(p[np.arange(len(y_val)), y_val], 1e-12, None)).mean())
        key = (-acc, round(nll, 6), float(np.abs(w - 1 / m).sum()))
        if best_key is None or key < best_key:
            best_key, best_w = key, w
    return best_w
