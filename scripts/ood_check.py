#!/usr/bin/env python3
"""How well a run's "I don't know" signal separates garments from things that are not (docs/ood.md).

    python scripts/ood_check.py [RUN_DIR] [--json]      (default: the shipped model)

The share flagged of: the run's test images, correct and wrong predictions apart (false alarms), the correct ones
among 1,000 test images turned into product photos (224×224 JPEGs, dark on white) and read back, and of inputs that
are not garments: uniform noise (as a model input, and as a photo through `preprocess`), blocky noise, flat and
gradient images, noise of other shapes and kinds (wide, tall, tiny, Gaussian, salt and pepper), stripes and
checkerboards, flat colours with a border, scikit-learn's 1,797 digits and random crops of the photos that
scikit-learn (2) and, when installed, scikit-image (about 20) ship, each through `preprocess` as a user's file
would go. Beside the signal, two scores the ensemble already has, at the same 5%-of-validation threshold: its
confidence (1 - max probability) and its members' disagreement (half the L1 distance between their probabilities).
Then uniform noise shape by shape. Fashion-MNIST-geometry runs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits, load_sample_images  # noqa: E402

from fashion_ensemble.data.split import make_split  # noqa: E402
from fashion_ensemble.model import runs  # noqa: E402
from fashion_ensemble.model.preprocess import ImageError, as_photo, preprocess  # noqa: E402

SKIMAGE_PHOTOS = ("astronaut", "camera", "cat", "coffee", "coins", "horse", "moon", "page", "text", "rocket",
                  "hubble_deep_field", "immunohistochemistry", "grass", "gravel", "brick", "clock", "colorwheel",
                  "logo", "retina")
CROPS = 15  # random square crops per photo, 30-100% of its short side
PHOTO_ROUND_TRIPS = 1_000  # test images turned into product photos and back (the false alarms on users' photos)


def through_preprocess(images) -> np.ndarray:
    """Each image as a user's file: through `preprocess`; those it refuses (blank) are left out."""
    out = []
    for image in images:
        try:
            out.append(preprocess(image))
        except ImageError:
            pass
    return np.stack(out)


def photos() -> list[np.ndarray]:
    found = list(load_sample_images().images)
    try:
        import skimage.data
    except ImportError:
        print("scikit-image is not installed: photos from scikit-learn only (pip install scikit-image for more)",
              file=sys.stderr)
        return found
    for name in SKIMAGE_PHOTOS:
        try:
            found.append(getattr(skimage.data, name)())
        except Exception:  # noqa: BLE001 - a few need a download, which this machine cannot make
            pass
    return found


ASPECTS = ((64, 128), (128, 64), (50, 200), (200, 50), (30, 90), (90, 30), (300, 100), (100, 300), (20, 20),
           (1000, 500))  # (height, width) of noise that is not square, or very small or large


def bordered(colour, border, side: int, width: int) -> np.ndarray:
    image = np.full((side, side, 3), border, np.uint8)
    image[width:-width, width:-width] = colour
    return image


def textures(rng: np.random.Generator) -> list[np.ndarray]:
    """Stripes and checkerboards of random period, angle-free, in two random greys."""
    out = []
    for _ in range(100):
        period, (a, b) = int(rng.integers(2, 16)), rng.integers(0, 256, 2)
        yy, xx = np.mgrid[:96, :96]
        pattern = (xx // period) % 2 if rng.random() < 0.5 else ((xx // period) + (yy // period)) % 2
        out.append(np.where(pattern == 1, a, b).astype(np.uint8))
    return out


def not_garments(rng: np.random.Generator) -> dict[str, np.ndarray]:
    crops = []
    for photo in photos():
        h, w = photo.shape[:2]
        for _ in range(CROPS):
            side = int(min(h, w) * rng.uniform(0.3, 1.0))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crops.append(np.ascontiguousarray(photo[y : y + side, x : x + side]))
    return {
        "uniform noise": rng.integers(0, 256, (500, 28, 28), dtype=np.uint8),
        "noise photos": through_preprocess(rng.integers(0, 256, (200, 96, 96, 3), dtype=np.uint8)),
        "blocky noise": through_preprocess(np.kron(rng.integers(0, 256, (200, 8, 8)), np.ones((1, 12, 12)))
                                           .astype(np.uint8)),
        "flat": np.stack([np.full((28, 28), v, np.uint8) for v in range(0, 256, 2)]),
        "gradients": np.stack([np.tile(np.linspace(0, v, 28), (28, 1)).astype(np.uint8) for v in range(20, 256, 4)]),
        "noise, other shapes": through_preprocess([rng.integers(0, 256, (*ASPECTS[i % len(ASPECTS)], 3), dtype=np.uint8)
                                                   for i in range(300)]),
        "gaussian noise": through_preprocess(np.clip(rng.normal(128, 40, (100, 96, 160, 3)), 0, 255)
                                             .astype(np.uint8)),
        "salt and pepper": through_preprocess(np.where(rng.random((100, 96, 96)) < 0.1, 0, 255).astype(np.uint8)),
        "stripes, checkerboards": through_preprocess(textures(rng)),
        "flat with a border": through_preprocess([bordered(rng.integers(0, 256, 3), rng.integers(0, 256, 3),
                                                           int(rng.integers(40, 200)), int(rng.integers(2, 8)))
                                                  for _ in range(100)]),
        "digits": through_preprocess((load_digits().images * 255 / 16).astype(np.uint8)),
        "photo crops": through_preprocess(crops),
    }


def noise_by_shape(ensemble, rng: np.random.Generator, per_shape: int = 30) -> dict[str, dict]:
    """Uniform RGB noise of each shape in ASPECTS through `preprocess`: the share flagged, the median ood_score and
    the ensemble's commonest answer (where the signal stops: noise trimmed and fitted like a garment's silhouette)."""
    rows = {}
    for h, w in ASPECTS:
        images = through_preprocess(rng.integers(0, 256, (per_shape, h, w, 3), dtype=np.uint8))
        proba, _, ood = ensemble.predict_with_ood(images)
        names, counts = np.unique(np.array(ensemble.classes)[proba.argmax(1)], return_counts=True)
        rows[f"{h}×{w}"] = {"flagged": float(ensemble.ood.flags(ood).mean()), "median_score": float(np.median(ood)),
                            "answer": str(names[counts.argmax()])}
    return rows


def scores(ensemble, images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ensemble's probabilities (N, 10) and each candidate score (name → (N,))."""
    p, members, ood = ensemble.predict_with_ood(images)
    first, second = list(members.values())[:2]
    return p, {"ood_score": ood, "confidence": 1 - p.max(1), "disagreement": 0.5 * np.abs(first - second).sum(1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default=None, help="a run folder (default: the shipped model)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ensemble = runs.load(args.run_dir)
    if ensemble.ood is None:
        sys.exit(f"{args.run_dir}: no 'I don't know' signal; add it with `fashion-ensemble ood {args.run_dir}`")
    split = make_split(runs.RunFolder(runs.run_or_pretrained(args.run_dir)).config().data)
    _, val = scores(ensemble, split.val[0])
    thresholds = {k: np.quantile(v, 1 - ensemble.ood.flag_rate) for k, v in val.items()}
    thresholds["ood_score"] = 1 - ensemble.ood.flag_rate  # the signal's own rule (ood.Detector.flags)
    proba, test = scores(ensemble, split.test[0])
    correct = proba.argmax(1) == split.test[1]
    rows = {"test, correct": {k: float((v[correct] > thresholds[k]).mean()) for k, v in test.items()},
            "test, wrong": {k: float((v[~correct] > thresholds[k]).mean()) for k, v in test.items()}}
    sizes = {"test, correct": int(correct.sum()), "test, wrong": int((~correct).sum())}
    # Garments as users' photos: the first 1,000 test images saved as 224×224 JPEGs, dark on white, read back.
    photos = through_preprocess([as_photo(image) for image in split.test[0][:PHOTO_ROUND_TRIPS]])
    proba, photo_scores = scores(ensemble, photos)
    photo_correct = proba.argmax(1) == split.test[1][:PHOTO_ROUND_TRIPS]
    rows["test as photos, correct"] = {k: float((v[photo_correct] > thresholds[k]).mean())
                                       for k, v in photo_scores.items()}
    sizes["test as photos, correct"] = int(photo_correct.sum())
    for name, images in not_garments(np.random.default_rng(0)).items():
        rows[name] = {k: float((v > thresholds[k]).mean()) for k, v in scores(ensemble, images)[1].items()}
        sizes[name] = len(images)
    shapes = noise_by_shape(ensemble, np.random.default_rng(1))
    if args.json:
        print(json.dumps({"flag_rate": ensemble.ood.flag_rate, "images": sizes, "flagged": rows,
                          "noise_by_shape": shapes}, indent=2))
        return 0
    print(f"share flagged, each score's threshold at {ensemble.ood.flag_rate:.0%} of validation images flagged\n")
    print("| inputs | images | ood_score (the signal) | confidence | disagreement |\n|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {sizes[name]:,} | {row['ood_score']:.1%} | {row['confidence']:.1%} | "
              f"{row['disagreement']:.1%} |")
    print("\nuniform RGB noise by shape (height × width, 30 images each), through preprocess\n")
    print("| shape | flagged | median ood_score | commonest answer |\n|---|---|---|---|")
    for shape, row in shapes.items():
        print(f"| {shape} | {row['flagged']:.0%} | {row['median_score']:.3f} | {row['answer']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
