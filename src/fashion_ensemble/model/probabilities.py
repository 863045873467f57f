"""Class probabilities from a model's logits: softmax, test-time augmentation (TTA: mirror, shifts) and temperature
scaling,
written once for numpy arrays and torch tensors alike (the array API, through `array_api_compat`).

The PyTorch member runs these on numpy float64 (rows sum to 1 within 1e-12); the ONNX graph and `bench` on torch
float32 tensors, which the exporter traces into the graph. One implementation, so the three cannot drift apart.
Nothing here imports torch: a torch tensor brings its own namespace.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from array_api_compat import array_namespace

# log(0) guard when undoing a softmax: far below any probability a softmax of float logits gives, per precision.
FLOOR = {8: 1e-300, 4: 1e-30}  # bytes per float → floor (float32 cannot hold 1e-300)


def softmax(logits):
    """Row-wise softmax of (N, C) logits, in their own dtype (numpy float64 from the PyTorch member)."""
    xp = array_namespace(logits)
    z = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
    return z / xp.sum(z, axis=1, keepdims=True)


def temperature_scale(proba, temperature: float):
    """Probabilities as if their logits were divided by `temperature`: softmax(log p / T). T > 1 softens."""
    xp = array_namespace(proba)
    floor = FLOOR[xp.finfo(proba.dtype).bits // 8]
    return softmax(xp.log(xp.clip(proba, floor, None)) / temperature)


def member_proba(logits_of: Callable, images, *, tta_flip: bool = False, tta_shift: int = 0,
                 temperature: float = 1.0, one_call: bool = False):
    """A member's probabilities (N, C) for `images` (N, ..., H, W): softmax of `logits_of(images)`, averaged over the
    TTA views, then rescaled by `temperature` unless it is 1. The views: the images; with `tta_shift` k > 0 also the
    images moved k pixels down, up, right and left (zero-filled: the background); with `tta_flip` each of those and its
    mirror (flipped along the last axis, the width). 1, 2, 5 or 10 views, equally weighted.

    `logits_of` maps images to logits in the namespace the probabilities should be in (the PyTorch member: torch
    images → numpy float64 logits). `one_call` runs every view as one batch: fewer operator launches in a graph
    (1.1-1.2× the images/s of the ONNX graph at batch 16 with the mirror), but a batch's composition can change a
    convolution's last bits, so the PyTorch member calls once a view."""
    xp = array_namespace(images)
    views = [images]
    if tta_shift:
        views += [shift(images, dy, dx) for dy, dx in ((tta_shift, 0), (-tta_shift, 0), (0, tta_shift),
                                                      (0, -tta_shift))]
    if tta_flip:
        views += [xp.flip(v, axis=-1) for v in views]
    if len(views) == 1:
        proba = softmax(logits_of(images))
    elif one_call:
        n = images.shape[0]
        every = softmax(logits_of(xp.concat(views)))
        proba = sum(every[i * n : (i + 1) * n] for i in range(len(views))) / len(views)
    else:
        proba = sum(softmax(logits_of(v)) for v in views) / len(views)
    return proba if temperature == 1.0 else temperature_scale(proba, temperature)


def tta_views(tta_flip: bool, tta_shift: int) -> int:
    """The views `member_proba` averages, i.e. forward passes an image costs: 1, 2 (mirror), 5 (shifts) or 10."""
    return (5 if tta_shift else 1) * (2 if tta_flip else 1)


def shift(images, dy: int, dx: int):
    """(N, ..., H, W) images moved dy pixels down and dx right (negative: up, left), the vacated edge zero. The zeros
    are sliced from the images' own shape (`zeros_like`), so a traced graph keeps its dynamic batch size."""
    xp = array_namespace(images)
    h, w = images.shape[-2], images.shape[-1]
    out = images
    if dy:
        pad = xp.zeros_like(out[..., : abs(dy), :])
        out = xp.concat([pad, out[..., : h - dy, :]] if dy > 0 else [out[..., -dy:, :], pad], axis=-2)
    if dx:
        pad = xp.zeros_like(out[..., :, : abs(dx)])
        out = xp.concat([pad, out[..., :, : w - dx]] if dx > 0 else [out[..., :, -dx:], pad], axis=-1)
    return out


def fit_temperature(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The temperature in [0.05, 20] that minimises the negative log-likelihood of `proba` (fit on validation)."""
    from scipy.optimize import minimize_scalar  # only fitting needs scipy; using a model does not

    y = np.asarray(y_true)

    def nll(log_t):
        p = temperature_scale(proba, float(np.exp(log_t)))
        return -np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None)).mean()

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))
