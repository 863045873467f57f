import pytest
import torch

from fashion_ensemble.augment import augment, random_erase, random_flip, random_translate
from fashion_ensemble.config import AugmentConfig


def batch(n=64, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_flip_gives_each_image_or_its_mirror():
    x = batch()
    y = random_flip(x, torch.Generator().manual_seed(1))
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert same.any() and mirrored.any()


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


def test_augment_is_repeatable_with_a_seeded_generator():
    x = batch()
    cfg = AugmentConfig(erase_prob=0.5)
    a = augment(x, cfg, torch.Generator().manual_seed(3))
    b = augment(x, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, x)


@pytest.mark.parametrize("cfg", [AugmentConfig(flip=False, max_shift=0, erase_prob=0.0)])
def test_augment_off_is_identity(cfg):
    x = batch()
    assert torch.equal(augment(x, cfg, torch.Generator()), x)
