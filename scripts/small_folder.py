"""Write a small image folder cut from the official Fashion-MNIST files: N images per class of the official train
part as train/<class>/*.png, and M per class of the official test part as test/<class>/*.png, drawn with a seed.
The small-data measurements in docs/budgets.md use it:

    python scripts/small_folder.py /tmp/fm100 --per-class 100
    fashion-ensemble run --data /tmp/fm100 --out runs/fm100

`--flip 0.05` moves that share of the training images, drawn with the seed, into another class's folder (drawn
too) and lists them in OUT/flipped.csv (file, true class), for measuring `labels` (docs/own-images.md);
`--thin Shirt=15` gives that class only 15 training images, for measuring `--balanced`.

For transfer (docs/own-images.md): `--classes Sandal,Shirt,Sneaker,Bag,"Ankle boot"` keeps those classes only;
`--merge "tops=T-shirt/top+Pullover+Coat+Shirt,shoes=Sandal+Sneaker+Ankle boot"` makes one class of several (drawn
from all of them, N a merged class in all); `--val-per-class 10` writes a val/ part of that many a class, drawn from
the official train part apart from train/ (a folder of 20 a class cannot spare a tenth of them for validation).
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
    ap.add_argument("--classes", default=None, help="comma-separated Fashion-MNIST class names to keep (default all)")
    ap.add_argument("--merge", default=None, metavar="NEW=A+B,...", help="classes made of several")
    ap.add_argument("--val-per-class", type=int, default=0, help="validation images per class in val/ (default none)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    groups = class_groups(args.classes, args.merge)  # folder name → the Fashion-MNIST labels it holds
    names = list(groups)
    thin_class, thin_n = args.thin.split("=") if args.thin else (None, 0)
    written = []  # (part, class index, file name)
    raw = load_raw()
    for part, (x, y) in [("train", raw["train"]), ("val", raw["train"]), ("test", raw["test"])]:
        for label, name in enumerate(names):
            n = {"train": args.per_class, "val": args.val_per_class, "test": args.test_per_class}[part]
            n = int(thin_n) if part == "train" and name == thin_class else n
            if part == "val" and n == 0:  # no val/ asked for: draws as before it existed
                continue
            taken = {int(f[:-4]) for p, lab, f in written if lab == label and p == "train"} if part == "val" else set()
            pool = [i for i in np.flatnonzero(np.isin(y, groups[name])) if i not in taken]
            (args.out / part / name).mkdir(parents=True, exist_ok=True)
            for i in rng.choice(pool, n, replace=False):
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


def class_groups(classes: str | None, merge: str | None) -> dict[str, list[int]]:
    """{folder name: [Fashion-MNIST labels]}: every class alone, or those `classes` names, or the `merge` groups."""
    index = {name: i for i, name in enumerate(CLASSES)}

    def labels(names: str) -> list[int]:
        unknown = [n for n in names if n not in index]
        if unknown:
            raise SystemExit(f"unknown Fashion-MNIST classes {unknown}; they are: {', '.join(CLASSES)}")
        return [index[n] for n in names]

    if merge:
        return {new: labels(old.split("+")) for new, old in (g.split("=", 1) for g in merge.split(","))}
    chosen = CLASSES if classes is None else classes.split(",")
    return {name.replace("/", "-"): labels([name]) for name in chosen}


if __name__ == "__main__":
    main()
