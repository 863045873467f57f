"""Running a trained model: input checks, batched logits in the device's precision, and a member's probabilities.

Used by the ensemble (`predict_proba`) and by training's validation; imports nothing of training, data or metrics.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import GREY
from .errors import UserError
from .probabilities import member_proba

# Inference batch: on the 2-core CPU the DS-CNN ran at ~3,200 img/s with batches of 64 against ~1,100 with 2,000
# (activations of small batches stay in cache); a GPU wants large batches.
INFER_BATCH = {"cpu": 64, "cuda": 2048}


def array_shape(input_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """One image's numpy shape for a model input (C, S, S): (S, S) greyscale, (S, S, C) colour (PIL/OpenCV order)."""
    c, h, w = input_shape
    return (h, w) if c == 1 else (h, w, c)


def describe_shape(input_shape: tuple[int, int, int]) -> str:
    """"28×28 greyscale" or "32×32 RGB"."""
    c, h, w = input_shape
    return f"{h}×{w} {'greyscale' if c == 1 else 'RGB'}"


def to_nchw(x: np.ndarray | torch.Tensor):
    """Images (N, S, S) or (N, S, S, C) → (N, C, S, S), for numpy arrays and tensors alike (a view, not a copy)."""
    if x.ndim == 3:
        return x[:, None]
    return x.transpose(0, 3, 1, 2) if isinstance(x, np.ndarray) else x.permute(0, 3, 1, 2)


def check_images(images, input_shape: tuple[int, int, int] = GREY) -> torch.Tensor:
    """Validate a batch of images (N, S, S) greyscale or (N, S, S, 3) RGB, uint8 or float in [0, 1], and return
    float32 (N, C, S, S) in [0, 1] on the CPU."""
    one = array_shape(input_shape)
    batch = f"(N, {', '.join(map(str, one))})"
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise UserError(f"expected a numpy array of shape {batch}, got {type(images).__name__}: "
                        "fashion_ensemble.preprocess turns an image file, bytes or a PIL image into one")
    if images.shape == one:
        raise UserError(f"expected a batch {batch}, got one image {images.shape}: pass images[None] for a batch of one")
    if images.shape[1:] != one:
        raise UserError(
            f"expected {describe_shape(input_shape)} images as {batch}, got shape {images.shape}: "
            "use fashion_ensemble.preprocess for photos of other sizes or colour"
        )
    if images.dtype == np.uint8:
        x = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        x = images.astype(np.float32)
        finite = np.isfinite(x).all()
        if x.size and (not finite or x.min() < 0.0 or x.max() > 1.0):
            seen = "non-finite values" if not finite else f"values in [{x.min():.3g}, {x.max():.3g}]"
            raise UserError(f"float images must lie in [0, 1], got {seen}: divide uint8 pixels by 255")
    else:
        raise UserError(f"expected uint8 (0-255) or float (0-1) pixels, got dtype {images.dtype}")
    return torch.from_numpy(np.ascontiguousarray(to_nchw(x)))


def autocast(device: torch.device):
    """bf16 autocast on CUDA; fp32 on CPU (no AVX-512 BF16 on the reference machine: bf16 measured 4-10× slower)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits (N, classes) in fp32 for images x (N, C, S, S) already on the model's device."""
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
    """A model's probabilities (N, classes), float64, for checked images x (N, C, S, S) on the CPU."""
    def logits_of(images: torch.Tensor) -> np.ndarray:
        return predict_logits(model, images.to(device)).cpu().numpy().astype(np.float64)

    return member_proba(logits_of, x, tta_flip=tta_flip, temperature=temperature)
