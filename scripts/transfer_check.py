"""Does `run --init-from` pay? Fine-tuning against training from scratch, with the same budget, on classes the
starting model has never seen, and the shipped model on a garment folder with other class names.

    python scripts/transfer_check.py runs/transfer            # builds its folders under runs/transfer/data

1. A base run on five Fashion-MNIST classes (T-shirt/top, Trouser, Pullover, Dress, Coat; all 6,000 training images
   of each): `run --data base --time-limit 5m`.
2. The other five (Sandal, Shirt, Sneaker, Bag, Ankle boot) with 20, 50 and 100 training images a class (and 10 a
   class in val/, 1,000 a class of the official test part), drawn with seeds 0, 1, 2: each folder trained from
   scratch and from the base (`--init-from`), `--time-limit 1m` both, `--seed` as the folder's.
3. The shipped model as the start for five merged classes (tops, bottoms, dresses, shoes, bags) at 20 a class.

Runs already complete are kept (the script resumes). Prints one table row per task, size and start: the ensemble's
test accuracy per seed, their mean and a 95% t-interval of the mean.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import stats

BASE = "T-shirt/top,Trouser,Pullover,Dress,Coat"
TARGET = "Sandal,Shirt,Sneaker,Bag,Ankle boot"
MERGED = "tops=T-shirt/top+Pullover+Coat+Shirt,bottoms=Trouser,dresses=Dress,shoes=Sandal+Sneaker+Ankle boot,bags=Bag"
SIZES = (20, 50, 100)
SEEDS = (0, 1, 2)


def folder(out: Path, *args: str) -> Path:
    if not (out / "test").is_dir():
        subprocess.run([sys.executable, str(Path(__file__).with_name("small_folder.py")), str(out), *args], check=True)
    return out


def run(out: Path, *args: str) -> float:
    """The ensemble's test accuracy of `fashion-ensemble run ... --out out`, trained unless already complete."""
    if not (out / "metrics.json").is_file():
        subprocess.run(["fashion-ensemble", "run", *args, "--out", str(out), "--quiet"], check=True)
    return json.loads((out / "metrics.json").read_text())["models"]["ensemble"]["accuracy"]


def row(task: str, n: int, start: str, accs: list[float]) -> str:
    mean = float(np.mean(accs))
    half = float(stats.t.ppf(0.975, len(accs) - 1) * np.std(accs, ddof=1) / np.sqrt(len(accs)))
    seeds = " / ".join(f"{a:.4f}" for a in accs)
    return f"| {task} | {n} | {start} | {seeds} | {mean:.4f} ± {half:.4f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--budget", default="1m", help="each target run's --time-limit (default 1m)")
    args = ap.parse_args()
    data = args.out / "data"
    base = args.out / "base"
    run(base, "--data", str(folder(data / "base", "--classes", BASE, "--per-class", "6000",
                                   "--test-per-class", "1000")), "--time-limit", "5m")
    print("| task | images a class | start | test accuracy, seeds 0 / 1 / 2 | mean ± 95% interval |\n"
          "|---|---|---|---|---|", flush=True)
    tasks = [("5 unseen classes", TARGET, n, str(base), "base (5 other classes)") for n in SIZES]
    tasks.append(("tops / bottoms / dresses / shoes / bags", MERGED, 20, "pretrained", "shipped model"))
    for task, classes, n, start, start_name in tasks:
        key = "--merge" if "=" in classes else "--classes"
        results = {"scratch": [], start_name: []}
        for seed in SEEDS:
            name = f"{'merged' if key == '--merge' else 'unseen'}-{n}-s{seed}"
            f = folder(data / name, key, classes, "--per-class", str(n), "--val-per-class", "10",
                       "--test-per-class", "1000", "--seed", str(seed))
            common = ["--data", str(f), "--time-limit", args.budget, "--seed", str(seed)]
            results["scratch"].append(run(args.out / f"scratch-{name}", *common))
            results[start_name].append(run(args.out / f"warm-{name}", *common, "--init-from", start))
        print("\n".join(row(task, n, s, accs) for s, accs in results.items()), flush=True)


if __name__ == "__main__":
    main()
