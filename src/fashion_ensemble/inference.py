"""Running a trained model: input checks, batched logits in the device's precision, and a member's probabilities.

Used by the ensemble (`predict_proba`) and by training's validation; imports nothing of training, data or metrics.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import UserError
from .probabilities import member_proba

SIZE = 28  # Fashion-MNIST's images: 28×28 greyscale
# Inference batch: on the 2-core CPU the DS-CNN ran at ~3,200 img/s with batches of 64 against ~1,100 with 2,000
# (activations of small batches stay in cache); a GPU wants large batches.
INFER_BATCH = {"cpu": 64, "cuda": 2048}


def check_images(images) -> torch.Tensor:
    """Validate a batch and return float32 (N, 1, 28, 28) in [0, 1] on the CPU."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise UserError(f"expected a numpy array of shape (N, 28, 28), got {type(images).__name__}")
    if images.ndim == 2 and images.shape == (SIZE, SIZE):
        raise UserError("expected a batch (N, 28, 28), got one image (28, 28): pass images[None] for a batch of one")
    if images.ndim != 3 or images.shape[1:] != (SIZE, SIZE):
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


def autocast(device: torch.device):
    """bf16 autocast on CUDA; fp32 on CPU (no AVX-512 BF16 on the reference machine: bf16 measured 4-10× slower)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits (N, classes) in fp32 for images x (N, 1, 28, 28) already on the model's device."""
    model.eval()
    device = x.device
    batch_size = batch_size or INFER_BATCH.get(device.type, 256)
    outs = []
    for i in range(0, len(x), batch_size):
        with autocast(device):
            outs.append(model(x[i : i + batch_size].contiguous(memory_format=torch.channels_last)).float())
    return torch.cat(outs) if outs else torch.empty(0, getattr(model, "num_classes", 10), device=device)


def model_proba(model: torch.nn.Module, x: torch.Tensor, device: torch.device, *, tta_flip: bool = False,
                temperature: float = 1.0) -> np.ndarray:
    """A model's probabilities (N, 10), float64, for checked images x (N, 1, 28, 28) on the CPU."""
    def logits_of(images: torch.Tensor) -> np.ndarray:
        return predict_logits(model, images.to(device)).cpu().numpy().astype(np.float64)

    return member_proba(logits_of, x, tta_flip=tta_flip, temperature=temperature)
