"""Write a small image folder cut from the official Fashion-MNIST files: N images per class of the official train
part as train/<class>/*.png, and M per class of the official test part as test/<class>/*.png, drawn with a seed.
The small-data measurements in docs/budgets.md use it:

    python scripts/small_folder.py /tmp/fm100 --per-class 100
    fashion-ensemble run --data /tmp/fm100 --out runs/fm100

`--flip 0.05` moves that share of the training images, drawn with the seed, into another class's folder (drawn
too) and lists them in OUT/flipped.csv (file, true class), for measuring `labels` (docs/own-images.md);
`--thin Shirt=15` gives that class only 15 training images, for measuring `--balanced`.
"""

from __future__ import annotations

import argparse
import csv
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
    ap.add_argument("--flip", type=float, default=0.0, help="share of training images put in a wrong class folder")
    ap.add_argument("--thin", default=None, metavar="CLASS=N", help="that class gets N training images")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    names = [name.replace("/", "-") for name in CLASSES]
    thin_class, thin_n = args.thin.split("=") if args.thin else (None, 0)
    written = []  # (part, class index, file name)
    for part, (x, y) in load_raw().items():
        for label, name in enumerate(names):
            n = args.per_class if part == "train" else args.test_per_class
            n = int(thin_n) if part == "train" and name == thin_class else n
            (args.out / part / name).mkdir(parents=True, exist_ok=True)
            for i in rng.choice(np.flatnonzero(y == label), n, replace=False):
                Image.fromarray(x[i]).save(args.out / part / name / f"{i:05d}.png")
                written.append((part, label, f"{i:05d}.png"))
    if args.flip:
        train = [w for w in written if w[0] == "train"]
        flipped = []
        for k in rng.choice(len(train), round(args.flip * len(train)), replace=False):
            _, label, file = train[k]
            wrong = int(rng.choice([c for c in range(len(names)) if c != label]))
            (args.out / "train" / names[label] / file).rename(args.out / "train" / names[wrong] / file)
            flipped.append((f"train/{names[wrong]}/{file}", names[label]))
        with open(args.out / "flipped.csv", "w", newline="") as f:
            csv.writer(f).writerows([("file", "true class"), *flipped])


if __name__ == "__main__":
    main()
