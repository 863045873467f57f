"""Running a trained model: input checks, batched logits in the device's precision, and a member's probabilities.

Used by the ensemble (`predict_proba`) and by training's validation; imports nothing of training, data or metrics.
"""

from __future__ import annotations

import os
import weakref

import numpy as np
import torch

from fashion_ensemble.config import GREY
from fashion_ensemble.errors import UserError
from fashion_ensemble.model.preprocess import preprocess
from fashion_ensemble.model.probabilities import member_proba

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


def as_batch(images, input_shape: tuple[int, int, int] = GREY, pipeline: str = "preprocess"):
    """What `predict_proba` accepts → a batch of model inputs: a batch array or tensor as it is (checked next); a
    path, bytes, binary file, PIL image or one numpy image of another size ((H, W), (H, W, 3|4)), or a list of them,
    through `preprocess` at the model's size and channels; a list of arrays already of the model's shape, stacked."""
    one = array_shape(input_shape)
    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, np.ndarray):
        single = images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (3, 4))  # batches: (N, S, S[, 3])
        if not single or images.shape == one:  # a batch; or one model input, which check_images asks to batch
            return images
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if all(isinstance(item, np.ndarray) and item.shape == one for item in items):
        return np.stack(items) if items else np.zeros((0, *one), np.uint8)
    channels, size, _ = input_shape
    return np.stack([preprocess(item, size=size, channels=channels, pipeline=pipeline, name=_name(item, i))
                     for i, item in enumerate(items)])


def model_inputs(images, input_shape: tuple[int, int, int] = GREY, pipeline: str = "preprocess") -> torch.Tensor:
    """Anything `as_batch` takes → checked float32 (N, C, S, S) in [0, 1] on the CPU (`check_images`)."""
    return check_images(as_batch(images, input_shape, pipeline), input_shape)


def _name(item, i: int) -> str:
    return str(item) if isinstance(item, (str, os.PathLike)) else f"image {i}"


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


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: a CUDA GPU that supports it, or a CPU with AVX-512 BF16 or AMX
    (without them PyTorch emulates bf16 on the CPU: measured 4-10× slower than fp32 on an AVX2-only EPYC)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:  # private helpers of torch.cpu (present since 2.3); a build without them is taken as not native
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def choose_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """("fp32" or "bf16", why) for a configured precision ("auto", "fp32", "bf16") on `device`."""
    if precision != "auto":
        return precision, "forced by the configuration"
    if native_bf16(device):
        where = "this GPU" if device.type == "cuda" else "this CPU (AVX-512 BF16 or AMX)"
        return "bf16", f"auto: {where} has native bf16"
    return "fp32", f"auto: no native bf16 on this {device.type.upper()}"


def autocast(device: torch.device, precision: str | None = None):
    """bf16 autocast when `precision` is "bf16"; fp32 when "fp32". None (inference): bf16 on CUDA, fp32 on a CPU,
    where a loaded model's probabilities stay those of its fp32 weights."""
    bf16 = device.type == "cuda" if precision is None else precision == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def predict_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int | None = None,
                   precision: str | None = None) -> torch.Tensor:
    """Logits (N, classes) in fp32 for images x (N, C, S, S) already on the model's device, computed in `precision`
    (see `autocast`)."""
    return _batched(model, model, x, batch_size, precision)


def predict_features(model: torch.nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """What the model's classifier reads (N, D), fp32, for images x (N, C, S, S) on the model's device."""
    return _batched(model, model.features, x, batch_size)


@torch.inference_mode()
def _batched(model: torch.nn.Module, fn, x: torch.Tensor, batch_size: int | None = None,
             precision: str | None = None) -> torch.Tensor:
    model.eval()
    device = x.device
    batch_size = batch_size or INFER_BATCH.get(device.type, 256)
    outs = []
    for i in range(0, len(x), batch_size):
        with autocast(device, precision):
            outs.append(fn(x[i : i + batch_size].contiguous(memory_format=torch.channels_last)).float())
    if outs:
        return torch.cat(outs)
    width = fn(torch.zeros(1, *x.shape[1:], device=device)).shape[1]  # no images: one blank image gives the width
    return torch.empty(0, width, device=device)


def model_proba(model: torch.nn.Module, x: torch.Tensor, device: torch.device, *, tta_flip: bool = False,
                tta_shift: int = 0, temperature: float = 1.0, keep_features: list | None = None) -> np.ndarray:
    """A model's probabilities (N, classes), float64, for checked images x (N, C, S, S) on the CPU. `keep_features`:
    a list that receives the images' own features (N, D), float64, from the same forward pass (the first view is the
    images themselves): the "I don't know" signal without a second pass."""
    def logits_of(images: torch.Tensor) -> np.ndarray:
        if keep_features is None or keep_features or device.type != "cpu":  # a GPU's logits are bf16: no sharing
            return predict_logits(model, images.to(device)).cpu().numpy().astype(np.float64)
        features = predict_features(model, images.to(device))
        keep_features.append(features.cpu().numpy().astype(np.float64))
        with torch.inference_mode():
            return model.classify(features).float().cpu().numpy().astype(np.float64)

    return member_proba(logits_of, x, tta_flip=tta_flip, tta_shift=tta_shift, temperature=temperature)


def model_features(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    """A model's features (N, D), float64, for checked images x (N, C, S, S) on the CPU (no TTA)."""
    return predict_features(model, x.to(device)).cpu().numpy().astype(np.float64)


def weights_version(model: torch.nn.Module) -> tuple[int, int] | None:
    """What changes when a module's weights do: the sum of its parameters' and buffers' version counters, which
    every in-place change moves (an optimizer step, `load_state_dict`, BatchNorm's running statistics in training),
    and the sum of their ids, which a tensor put in a parameter's place moves. None when a tensor keeps no counter
    (made under inference mode): unknown. The sub-modules are listed once per module (walking them took 0.1 ms)."""
    modules = _SUBMODULES.get(model)
    if modules is None:
        modules = _SUBMODULES[model] = list(model.modules())
    tensors = [t for m in modules for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
    try:
        return sum(t._version for t in tensors), sum(map(id, tensors))
    except RuntimeError:
        return None


_SUBMODULES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module → its sub-modules, for weights_version
