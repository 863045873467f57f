import pytest
import torch

from fashion_ensemble.config import AugmentConfig
from fashion_ensemble.training.augment import (
    alternating_flips,
    augment,
    gaussian_blur_matrix,
    random_elastic,
    random_erase,
    random_flip,
    random_translate,
)


def batch(n=64, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_flip_gives_each_image_or_its_mirror():
    x = batch()
    y = random_flip(x, torch.Generator().manual_seed(1))
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert same.any() and mirrored.any()


def test_alternating_flips_mirror_each_image_in_every_other_epoch():
    first, second, third = (alternating_flips(1000, seed=3, epoch=e) for e in (1, 2, 3))
    assert (first ^ second).all()  # two epochs see both sides of every image
    assert torch.equal(first, third)
    assert 400 < int(first.sum()) < 600  # a random half, not the first half
    assert torch.equal(first, alternating_flips(1000, seed=3, epoch=1))
    assert not torch.equal(first, alternating_flips(1000, seed=4, epoch=1))
    x = batch(8)
    mirror = torch.tensor([True, False] * 4)
    y = augment(x, AugmentConfig(max_shift=0), mirror=mirror)
    assert torch.equal(y[mirror], x[mirror].flip(-1)) and torch.equal(y[~mirror], x[~mirror])


def test_translate_moves_a_single_pixel_by_at_most_k():
    x = torch.zeros(200, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    y = random_translate(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert (y.flatten(1).sum(1) == 1).all()  # the pixel stays on the canvas, nothing else appears
    pos = y[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 28 - 14, pos % 28 - 14
    assert dy.abs().max() == 2 and dx.abs().max() == 2
    assert len(set(zip(dy.tolist(), dx.tolist()))) == 25  # every shift in [-2, 2]² is drawn


def test_erase_blanks_rectangles_to_background():
    x = torch.ones(100, 1, 28, 28)
    y = random_erase(x, 1.0, 0.25, torch.Generator().manual_seed(0))
    erased = (y == 0).flatten(1).sum(1)
    assert (erased > 0).float().mean() > 0.9
    assert erased.max() <= 0.25 * 28 * 28 + 28  # at most a quarter of the image (plus rounding)
    assert torch.equal(random_erase(x, 0.0, 0.25, torch.Generator()), x)


def test_blur_matrix_is_a_normalised_gaussian_away_from_the_edges():
    b = gaussian_blur_matrix(28, 2.0)
    assert torch.allclose(b.sum(1)[7:21], torch.ones(14), atol=1e-6)  # r = 6 taps each side fit inside
    assert torch.allclose(b, b.T) and b[14, 14] == b.max()
    assert b[14, 14 + 7] == 0  # cut beyond 3σ
    v = torch.zeros(28)
    v[14] = 1.0
    taps = torch.exp(-0.5 * (torch.arange(-6.0, 7.0) / 2.0) ** 2)  # r = ceil(3σ) = 6
    assert torch.allclose((b @ v)[8:21], taps / taps.sum(), atol=1e-6)


def test_elastic_keeps_shape_and_range_and_moves_pixels_by_about_alpha():
    x = batch()
    y = random_elastic(x, 24.0, 4.0, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= x.max() + 1e-6  # bilinear mixes of pixels and zeros
    assert not torch.allclose(y, x, atol=1e-2)
    # A near-zero field is the identity: the sampling grid sits on the pixel centres.
    assert torch.allclose(random_elastic(x, 1e-6, 4.0, torch.Generator().manual_seed(0)), x, atol=1e-5)
    # A vertical bar at column 14 lands within a few pixels of it (α = 24, σ = 4: about 1 pixel on average).
    bar = torch.zeros(200, 1, 28, 28)
    bar[..., 14] = 1.0
    moved = random_elastic(bar, 24.0, 4.0, torch.Generator().manual_seed(1))
    col = (moved[:, 0, 10:18] * torch.arange(28.0)).sum(-1) / moved[:, 0, 10:18].sum(-1)  # (200, 8) centroids
    shift = (col - 14).abs()
    assert 0.3 < shift.mean() < 2.5 and shift.max() < 6


def test_augment_is_repeatable_with_a_seeded_generator():
    x = batch()
    cfg = AugmentConfig(erase_prob=0.5, elastic_alpha=16.0)
    a = augment(x, cfg, torch.Generator().manual_seed(3))
    b = augment(x, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, x)


@pytest.mark.parametrize("cfg", [AugmentConfig(flip=False, max_shift=0, erase_prob=0.0)])
def test_augment_off_is_identity(cfg):
    x = batch()
    assert torch.equal(augment(x, cfg, torch.Generator()), x)
