"""Write a small image folder cut from the official Fashion-MNIST files: N images per class of the official train
part as train/<class>/*.png, and M per class of the official test part as test/<class>/*.png, drawn with a seed.
The small-data measurements in docs/budgets.md use it:

    python scripts/small_folder.py /tmp/fm100 --per-class 100
    fashion-ensemble run --data /tmp/fm100 --out runs/fm100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from fashion_ensemble.config.classes import CLASSES
from fashion_ensemble.data.idx import load_raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-class", type=int, default=100, help="training images per class (default 100)")
    ap.add_argument("--test-per-class", type=int, default=100, help="test images per class (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    for part, (x, y) in load_raw().items():
        n = args.per_class if part == "train" else args.test_per_class
        for label, name in enumerate(CLASSES):
            folder = args.out / part / name.replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for i in rng.choice(np.flatnonzero(y == label), n, replace=False):
                Image.fromarray(x[i]).save(folder / f"{i:05d}.png")


if __name__ == "__main__":
    main()
