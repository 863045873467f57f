"""Batched augmentation on (N, 1, 28, 28) float tensors, on whatever device the batch lives: no per-sample Python."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fashion_ensemble.config import AugmentConfig


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None,
            mirror: torch.Tensor | None = None) -> torch.Tensor:
    """Horizontal flip (random, or of the images where the (N,) bool `mirror` is true), optional elastic
    distortion, random integer translation, optional random erasing."""
    if cfg.flip:
        x = random_flip(x, generator) if mirror is None else torch.where(mirror.reshape(-1, 1, 1, 1), x.flip(-1), x)
    if cfg.elastic_alpha > 0:
        x = random_elastic(x, cfg.elastic_alpha, cfg.elastic_sigma, generator)
    if cfg.max_shift > 0:
        x = random_translate(x, cfg.max_shift, generator)
    if cfg.erase_prob > 0:
        x = random_erase(x, cfg.erase_prob, cfg.erase_max_frac, generator)
    return x


def _rand(shape, x: torch.Tensor, generator) -> torch.Tensor:
    # Draw on the CPU generator, then move: one seeded stream whatever the device, so runs repeat on CPU and CUDA.
    return torch.rand(shape, generator=generator).to(x.device)


def random_flip(x: torch.Tensor, generator=None) -> torch.Tensor:
    flip = _rand((x.shape[0], 1, 1, 1), x, generator) < 0.5
    return torch.where(flip, x.flip(-1), x)


def alternating_flips(n: int, seed: int, epoch: int) -> torch.Tensor:
    """(n,) bool: which images `cfg.flip_alternate` mirrors in the 1-based augmented `epoch`: a seeded random half in
    odd epochs, the other half in even ones. Its own generator, so the shuffling stream and a resume are unchanged."""
    first = torch.rand(n, generator=torch.Generator().manual_seed(seed + 1)) < 0.5
    return first if epoch % 2 == 1 else ~first


def gaussian_blur_matrix(size: int, sigma: float, device=None) -> torch.Tensor:
    """(size, size) matrix B with B @ v = v blurred by a Gaussian of σ pixels, zero beyond the edges."""
    i = torch.arange(size, dtype=torch.float32, device=device)
    d = i[:, None] - i[None, :]
    r = math.ceil(3 * sigma)
    g = torch.exp(-0.5 * (d / sigma) ** 2) * (d.abs() <= r)
    norm = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2).sum()
    return g / norm


def random_elastic(x: torch.Tensor, alpha: float, sigma: float, generator=None) -> torch.Tensor:
    """Elastic distortion (Simard et al. 2003): each pixel samples from itself moved by a smooth random field.

    The field is uniform in [-1, 1] per pixel and axis, smoothed by a Gaussian of σ pixels, times α pixels; bilinear
    resampling, zero (the background) outside the image.
    """
    n, c, h, w = x.shape
    field = _rand((n, 2, h, w), x, generator) * 2 - 1  # (N, 2, H, W): (dx, dy) per pixel
    # The separable blur as two small matmuls; the whole distortion measured 3 ms per 256 images on 2 Zen 4 cores,
    # a tenth of a step of best's 3 × 1024 MLP.
    field = gaussian_blur_matrix(h, sigma, x.device) @ field @ gaussian_blur_matrix(w, sigma, x.device).T
    # grid_sample's coordinates run from -1 to 1 across the image: one pixel is 2/W along x and 2/H along y.
    scale = torch.tensor([2 * alpha / w, 2 * alpha / h], device=x.device).reshape(1, 2, 1, 1)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=x.device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=x.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=0)  # (2, H, W): (x, y) of each pixel's centre
    grid = (base + field * scale).permute(0, 2, 3, 1)  # (N, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_translate(x: torch.Tensor, max_shift: int, generator=None) -> torch.Tensor:
    """Shift each image by its own (dy, dx) in [-max_shift, max_shift], filling with the background (zero)."""
    n, c, h, w = x.shape
    k = max_shift
    wp = w + 2 * k
    padded = torch.nn.functional.pad(x, (k, k, k, k)).reshape(n, c, -1)  # (N, C, (H+2k)·(W+2k))
    offsets = (_rand((n, 2), x, generator) * (2 * k + 1)).long().clamp_(max=2 * k)  # (N, 2) in [0, 2k]
    window = (torch.arange(h, device=x.device)[:, None] * wp + torch.arange(w, device=x.device)).reshape(1, 1, -1)
    index = window + (offsets[:, 0] * wp + offsets[:, 1]).reshape(n, 1, 1)  # (N, 1, H·W) into the padded image
    # One gather: 4× faster than indexing with four broadcast index tensors (1.0 vs 3.8 ms per 256 images, 1 thread).
    return padded.gather(2, index.expand(n, c, h * w)).reshape(n, c, h, w)


def random_erase(x: torch.Tensor, prob: float, max_frac: float, generator=None) -> torch.Tensor:
    """Blank (to zero, the background) one rectangle of up to max_frac of the area in a `prob` share of images."""
    n, _, h, w = x.shape
    u = _rand((n, 5), x, generator)
    side = (max_frac**0.5) * u[:, :2] * torch.tensor([h, w], device=x.device)  # (N, 2) rectangle height, width
    top = u[:, 2] * (h - side[:, 0])
    left = u[:, 3] * (w - side[:, 1])
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (
        (ys >= top[:, None, None])
        & (ys < (top + side[:, 0])[:, None, None])
        & (xs >= left[:, None, None])
        & (xs < (left + side[:, 1])[:, None, None])
    )  # (N, H, W)
    erase = inside & (u[:, 4] < prob)[:, None, None]
    return x.masked_fill(erase[:, None], 0.0)
